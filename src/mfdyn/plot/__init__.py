"""Figures (matplotlib, Agg backend): one module per kind of data."""

import matplotlib

matplotlib.use("Agg")
from .trajectory import plot_trajectory  # noqa: E402,F401
from .sweep import bifurcation, heatmap, other_dimensions, phase_diagram  # noqa: E402,F401
