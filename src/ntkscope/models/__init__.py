"""Networks in NTK and standard parameterization (CONVENTIONS.md)."""

from ntkscope.models.activations import Activation, ActivationName, resolve_activation
from ntkscope.models.builders import cnn, mlp
from ntkscope.models.layers import ActivationLayer, Conv, Dense, Parameterization

__all__ = [
    # builders
    "cnn",
    "mlp",
    # layers
    "ActivationLayer",
    "Conv",
    "Dense",
    "Parameterization",
    # activations
    "Activation",
    "ActivationName",
    "resolve_activation",
]
