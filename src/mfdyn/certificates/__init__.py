"""Delta-parameterized certificates ``I(delta; z)`` for GD on the rank-1 problems (MATH.md §1).

The paper's certificate formula is not available: this package is the machinery into which any
certificate family plugs (formulas, callables, templates), with *derived* families. Nothing here is
the paper's formula.
"""

from .certificate import Certificate, Kernel
from .families import QuadraticTemplate, contraction_region, default_template, imbalance_certificate
from .formula import coordinate_names
from .region import CertifiedRegion, certified_region, empirical_basin, grid_points
from .search import BranchResult, SearchResult, search, search_branch
from .verify import Region, VerificationReport, verify

__all__ = [
    "Certificate", "Kernel", "Region", "VerificationReport", "verify", "certified_region", "CertifiedRegion",
    "empirical_basin", "grid_points", "imbalance_certificate", "contraction_region", "QuadraticTemplate",
    "default_template", "search", "search_branch", "SearchResult", "BranchResult", "coordinate_names",
]
