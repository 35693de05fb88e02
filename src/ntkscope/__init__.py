"""ntkscope: can NTK theory be trusted for this network?"""

from ntkscope import models
from ntkscope.kernels import Method, Mode, empirical_ntk

__version__ = "0.1.0"

__all__ = [
    # kernels
    "Method",
    "Mode",
    "empirical_ntk",
    # sub-packages
    "models",
]
