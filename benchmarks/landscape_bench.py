"""Landscape census performance: enumeration cost per class vs random-start search; counting at d = 50.

Writes ``benchmarks/results/landscape.json`` and ``benchmarks/results/landscape.md``.
Run: ``.venv/bin/python benchmarks/landscape_bench.py``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from mfdyn import DeepFactorization
from mfdyn.landscape import count_critical_points, critical_points, thresholds
from mfdyn.landscape.classify import NotInCensusError, class_key
from mfdyn.landscape.kernels import split
from mfdyn.landscape.search import random_starts, solve_gradient
from mfdyn.landscape.spectrum import spectrum
from mfdyn.landscape import target_with_singular_values

OUT = Path(__file__).parent / "results"


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    rows = []
    # 1. critical_points on an 8x8 instance with L = 4 (target: under one second)
    L = 4
    th = thresholds(L, 1.0)
    Y8 = target_with_singular_values(np.linspace(2.6, 1.05, 8) * th.y_star, (8, 8))
    p8 = DeepFactorization(Y8, L, weight_decay=1.0)
    t, pts = best_of(lambda: critical_points(p8))
    rows.append({"case": "critical_points, 8x8, L=4", "classes": len(pts), "seconds": t, "us per class": 1e6 * t / len(pts)})
    t, first = best_of(lambda: critical_points(p8, limit=10))
    rows.append({"case": "critical_points limit=10, 8x8, L=4", "classes": len(first), "seconds": t,
                 "us per class": 1e6 * t / len(first)})
    # 2. count_critical_points on a 50x50 instance (target: instant)
    Y50 = target_with_singular_values(np.linspace(3.0, 0.5, 50) * th.y_star, (50, 50), 1)
    p50 = DeepFactorization(Y50, L, weight_decay=1.0)
    t, count = best_of(lambda: count_critical_points(p50))
    rows.append({"case": "count_critical_points, 50x50, L=4", "classes": str(count), "seconds": t, "us per class": None})
    t, first = best_of(lambda: critical_points(p50, limit=100))
    rows.append({"case": "critical_points limit=100, 50x50, L=4", "classes": len(first), "seconds": t,
                 "us per class": 1e6 * t / len(first)})
    # 3. enumeration vs random-start search (experiment 1's method) on the same instance: classes per second
    L3 = 3
    p3 = DeepFactorization(target_with_singular_values(np.array([2.2, 1.7, 1.2]) * thresholds(L3, 1.0).y_star, (3, 3), 2), L3, weight_decay=1.0)
    spec = spectrum(p3)
    t_enum, census = best_of(lambda: critical_points(p3))
    t_search, res = best_of(lambda: solve_gradient(spec, random_starts(spec, 1000, 0)), repeats=1)
    found = set()
    for x in res.points[res.converged]:
        try:
            found.add(class_key(spec, split(x, spec.widths)))
        except NotInCensusError:
            pass
    rows.append({"case": "enumeration, 3x3, L=3", "classes": len(census), "seconds": t_enum,
                 "us per class": 1e6 * t_enum / len(census), "classes per second": len(census) / t_enum})
    rows.append({"case": "random-start LM search (1000 starts), 3x3, L=3", "classes": len(found), "seconds": t_search,
                 "us per class": 1e6 * t_search / max(1, len(found)), "classes per second": len(found) / t_search})
    t_ver, _ = best_of(lambda: critical_points(p3, verify=True), repeats=1)
    rows.append({"case": "enumeration + numerical verification, 3x3, L=3", "classes": len(census), "seconds": t_ver,
                 "us per class": 1e6 * t_ver / len(census), "classes per second": len(census) / t_ver})
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "processor": platform.processor(), "python": platform.python_version()}
    (OUT / "landscape.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = ["| case | classes | seconds | us per class | classes per second |", "|---|---|---|---|---|"]
    for r in rows:
        cps = r.get("classes per second")
        upc = r.get("us per class")
        lines.append(f"| {r['case']} | {r['classes']} | {r['seconds']:.4g} | {'-' if upc is None else f'{upc:.3g}'} | "
                     f"{'-' if cps is None else f'{cps:.3g}'} |")
    (OUT / "landscape.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
