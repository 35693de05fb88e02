"""ntkscope: can NTK theory be trusted for this network?"""

from ntkscope import (
    data,
    diagnosis,
    dynamics,
    kernel_store,
    kernels,
    metrics,
    models,
    store,
    studies,
)
from ntkscope.diagnosis import Diagnosis, Verdict, diagnose
from ntkscope.dynamics import (
    KernelRecorder,
    KernelRidge,
    LinearizedRecorder,
    LossRecorder,
    ParameterRecorder,
    PredictionRecorder,
    Recorder,
    Trajectory,
    kernel_regression,
    linearize,
    predict_mse,
    train,
)
from ntkscope.kernels import (
    Method,
    Mode,
    OrderChaos,
    Phase,
    empirical_ntk,
    infinite_cnn_kernels,
    infinite_kernels,
    infinite_width,
    monte_carlo_kernels,
    order_chaos,
)

__version__ = "0.1.0"

__all__ = [
    # kernels
    "Method",
    "Mode",
    "empirical_ntk",
    "infinite_cnn_kernels",
    "infinite_kernels",
    "infinite_width",
    "monte_carlo_kernels",
    # dynamics
    "kernel_regression",
    "KernelRidge",
    "linearize",
    "predict_mse",
    # diagnosis
    "Diagnosis",
    "Verdict",
    "diagnose",
    # training with recorders
    "train",
    "Trajectory",
    "Recorder",
    "KernelRecorder",
    "LinearizedRecorder",
    "LossRecorder",
    "ParameterRecorder",
    "PredictionRecorder",
    # order and chaos
    "OrderChaos",
    "Phase",
    "order_chaos",
    # sub-packages
    "data",
    "diagnosis",
    "dynamics",
    "kernel_store",
    "kernels",
    "metrics",
    "models",
    "store",
    "studies",
]
