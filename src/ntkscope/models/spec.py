"""Recognize a network whose infinite-width limit ntkscope knows: an NTK-parameterized
`ntkscope.models.mlp` with a built-in activation (docs/conventions.md, "Networks")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ntkscope.models.layers import ActivationLayer, Dense, Parameterization


@dataclass(frozen=True)
class MLPSpec:
    """What `ntkscope.infinite_kernels` needs to describe an MLP at infinite width.

    Attributes:
        depth: number of hidden layers L.
        activation: built-in activation name.
        sigma_w, sigma_b: σ_w and σ_b shared by every layer.
    """

    depth: int
    activation: str
    sigma_w: float
    sigma_b: float


def mlp_spec(model: nn.Module) -> MLPSpec | None:
    """The `MLPSpec` of ``model`` if it is an NTK-parameterized ntkscope MLP, else None.

    Accepted: ``nn.Sequential`` alternating `Dense` and `ActivationLayer`, starting and
    ending with `Dense`, every `Dense` in NTK parameterization with one (σ_w, σ_b), a bias
    wherever σ_b > 0, and one built-in activation.
    """
    if not isinstance(model, nn.Sequential) or len(model) % 2 == 0:
        return None
    dense, acts = list(model)[::2], list(model)[1::2]
    if not all(isinstance(m, Dense) for m in dense) or not all(
        isinstance(m, ActivationLayer) for m in acts
    ):
        return None
    scales = {(m.sigma_w, m.sigma_b) for m in dense}
    names = {m.activation.builtin for m in acts}
    if (
        len(scales) != 1
        or any(m.parameterization is not Parameterization.NTK for m in dense)
        or any(m.sigma_b > 0 and m.bias is None for m in dense)
        or len(names) > 1
        or None in names
    ):
        return None
    (sigma_w, sigma_b), activation = scales.pop(), (names.pop() if names else "identity")
    return MLPSpec(len(acts), str(activation), sigma_w, sigma_b)
