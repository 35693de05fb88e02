"""ntkscope: can NTK theory be trusted for this network?"""

from ntkscope import (
    data,
    diagnosis,
    dynamics,
    kernels,
    log,
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
    Monitor,
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
    # training with recorders, in ntkscope's loop or any other
    "train",
    "Monitor",
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
    "log",
    "metrics",
    "models",
    "store",
    "studies",
]


def __getattr__(name: str):
    """`ntkscope.kernel_store` is imported on first use: it brings zarr and the Dask runner,
    which would otherwise add about a second to every ``import ntkscope``."""
    if name == "kernel_store":
        import importlib

        return importlib.import_module("ntkscope.kernel_store")
    raise AttributeError(f"module 'ntkscope' has no attribute {name!r}")
