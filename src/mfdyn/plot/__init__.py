"""Figures (matplotlib, Agg backend): one module per kind of data."""

import matplotlib

matplotlib.use("Agg")
