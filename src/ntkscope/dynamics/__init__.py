"""Training dynamics: the linearized network and closed-form MSE predictions."""

from ntkscope.dynamics.linearize import LinearizedModel, linearize
from ntkscope.dynamics.mse import MSEPrediction, kernel_regression, predict_mse

__all__ = ["LinearizedModel", "MSEPrediction", "kernel_regression", "linearize", "predict_mse"]
