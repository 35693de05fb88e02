"""Training dynamics: the training loop, the monitor of any loop and their recorders, the
linearized network, closed-form MSE predictions, and Gauss–Newton steps through the eNTK."""

from ntkscope.dynamics.checkpoints import (
    KernelRegressionRecorder,
    checkpoint_steps,
    regression_scores,
)
from ntkscope.dynamics.gauss_newton import (
    GaussNewton,
    GaussNewtonStep,
    gauss_newton_step,
    predict_gauss_newton,
)
from ntkscope.dynamics.jacobian import JacobianRecorder, jacobian_change
from ntkscope.dynamics.linearize import LinearizedModel, linearize
from ntkscope.dynamics.monitor import Monitor
from ntkscope.dynamics.mse import MSEPrediction, kernel_regression, predict_mse, stability_limit
from ntkscope.dynamics.recorders import (
    KernelRecorder,
    LinearizedRecorder,
    LossRecorder,
    ParameterRecorder,
    PredictionRecorder,
)
from ntkscope.dynamics.ridge import KernelRidge, select_ridge
from ntkscope.dynamics.train import Loss, Optimizer, Recorder, TrainState, Trajectory, train

__all__ = [
    # training, in ntkscope's loop or any other
    "Loss",
    "Monitor",
    "Optimizer",
    "Trajectory",
    "TrainState",
    "train",
    # recorders
    "KernelRecorder",
    "KernelRegressionRecorder",
    "checkpoint_steps",
    "LinearizedRecorder",
    "LossRecorder",
    "JacobianRecorder",
    "ParameterRecorder",
    "PredictionRecorder",
    "Recorder",
    # linearized network and MSE predictions
    "KernelRidge",
    "regression_scores",
    "select_ridge",
    "LinearizedModel",
    "MSEPrediction",
    "kernel_regression",
    "linearize",
    "predict_mse",
    "stability_limit",
    # Gauss–Newton and the Jacobian
    "GaussNewton",
    "GaussNewtonStep",
    "gauss_newton_step",
    "jacobian_change",
    "predict_gauss_newton",
]
