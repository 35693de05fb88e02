"""Networks in NTK and standard parameterization (docs/conventions.md)."""

from ntkscope.models.activations import Activation, ActivationName, resolve_activation
from ntkscope.models.builders import Readout, cnn, mlp
from ntkscope.models.layers import ActivationLayer, Conv, Dense, Parameterization
from ntkscope.models.scaling import OutputScaled, output_scaled
from ntkscope.models.spec import MLPSpec, mlp_spec

__all__ = [
    # builders
    "cnn",
    "mlp",
    "output_scaled",
    "OutputScaled",
    "Readout",
    # infinite-width description
    "MLPSpec",
    "mlp_spec",
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
