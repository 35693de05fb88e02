"""Empirical and infinite-width neural tangent kernels."""

from ntkscope.kernels.dual import Dual, dual, dual_diagonal, for_activation
from ntkscope.kernels.empirical import (
    Method,
    Mode,
    PreparedNTK,
    empirical_ntk,
    resolve_method,
)
from ntkscope.kernels.gp import GaussianProcess, GPHyperparameters, GPPrediction
from ntkscope.kernels.infinite import infinite_kernels
from ntkscope.kernels.infinite_cnn import infinite_cnn_kernels
from ntkscope.kernels.infinite_width import KernelFn, ProgramError, infinite_width
from ntkscope.kernels.monte_carlo import MonteCarloKernels, monte_carlo_kernels
from ntkscope.kernels.order_chaos import OrderChaos, Phase, order_chaos

__all__ = [
    # empirical
    "Method",
    "Mode",
    "empirical_ntk",
    "PreparedNTK",
    "resolve_method",
    # infinite width
    "Dual",
    "dual",
    "dual_diagonal",
    "for_activation",
    "infinite_cnn_kernels",
    "infinite_kernels",
    "infinite_width",
    "KernelFn",
    "ProgramError",
    "monte_carlo_kernels",
    "MonteCarloKernels",
    # Gaussian-process posterior
    "GPHyperparameters",
    "GPPrediction",
    "GaussianProcess",
    # order and chaos
    "OrderChaos",
    "Phase",
    "order_chaos",
]
