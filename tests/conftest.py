import os

os.environ.setdefault("MPLBACKEND", "Agg")

from hypothesis import settings  # noqa: E402

import mfdyn  # noqa: E402,F401  (enables float64)

settings.register_profile("mfdyn", max_examples=12, deadline=None, derandomize=True)
settings.load_profile("mfdyn")
