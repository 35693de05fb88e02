"""ntkscope: can NTK theory be trusted for this network?"""

from ntkscope import data, dynamics, kernels, models, store, studies
from ntkscope.dynamics import kernel_regression, linearize, predict_mse
from ntkscope.kernels import (
    Method,
    Mode,
    OrderChaos,
    Phase,
    empirical_ntk,
    infinite_kernels,
    order_chaos,
)

__version__ = "0.1.0"

__all__ = [
    # kernels
    "Method",
    "Mode",
    "empirical_ntk",
    "infinite_kernels",
    # dynamics
    "kernel_regression",
    "linearize",
    "predict_mse",
    # order and chaos
    "OrderChaos",
    "Phase",
    "order_chaos",
    # sub-packages
    "data",
    "dynamics",
    "kernels",
    "models",
    "store",
    "studies",
]
