"""Empirical and infinite-width neural tangent kernels."""

from ntkscope.kernels.empirical import Method, Mode, empirical_ntk, resolve_method

__all__ = ["Method", "Mode", "empirical_ntk", "resolve_method"]
