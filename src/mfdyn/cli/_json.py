"""The command line's JSON output: one strict JSON object (no ``NaN`` or ``Infinity``) per command."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def to_jsonable(x: Any) -> Any:
    """Arrays and pytrees -> nested lists; NumPy scalars -> Python numbers; complex -> ``[re, im]``;
    non-finite floats -> ``None`` (null)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (str, bool)) or x is None:
        return x
    arr = np.asarray(x)
    if arr.ndim:
        return [to_jsonable(v) for v in arr]
    if np.iscomplexobj(arr):
        return [to_jsonable(arr.real), to_jsonable(arr.imag)]
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        return arr.item()
    if not np.issubdtype(arr.dtype, np.number):
        return str(x)
    value = float(arr)
    return value if math.isfinite(value) else None


def print_json(obj: Any) -> None:
    """``obj`` as one line of strict JSON on stdout (:func:`to_jsonable`)."""
    print(json.dumps(to_jsonable(obj), allow_nan=False))
