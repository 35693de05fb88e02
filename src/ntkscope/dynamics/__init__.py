"""Training dynamics: closed-form MSE predictions of linearized and infinite networks."""

from ntkscope.dynamics.mse import MSEPrediction, kernel_regression, predict_mse

__all__ = ["MSEPrediction", "kernel_regression", "predict_mse"]
