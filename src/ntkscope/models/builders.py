"""Builders for the networks of the NTK literature: fully connected and Myrtle-style CNNs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from enum import StrEnum

import torch
from torch import nn

from ntkscope._checks import choice, nonnegative_int, nonnegative_real, positive_int
from ntkscope.models.activations import Activation, Elementwise, resolve_activation
from ntkscope.models.layers import ActivationLayer, Conv, Dense, Parameterization


class Readout(StrEnum):
    """How a CNN's last feature map (C, H, W) reaches its dense readout."""

    GAP = "gap"
    """Global average pooling over positions, then ``Dense(C, d_out)``."""
    FLATTEN = "flatten"
    """Flatten, then ``Dense(C·H·W, d_out)``: every position keeps its own weights."""


def resolve_pools(pool_after: Sequence[int] | None, depth: int) -> frozenset[int]:
    """Blocks followed by a 2×2 average pooling; None: every block but the last."""
    if pool_after is not None and not isinstance(pool_after, Iterable):
        raise TypeError(
            f"pool_after: expected a list of block indices such as [{pool_after!r}], "
            f"got {type(pool_after).__name__}"
        )
    pools = frozenset(range(depth - 1) if pool_after is None else pool_after)
    if not pools <= set(range(depth)):
        raise ValueError(
            f"pool_after: expected block indices in 0..{depth - 1}, got {sorted(pools)}"
        )
    return pools


def pooled_size(image_size: int | Sequence[int], pools: int, argument: str) -> tuple[int, int]:
    """(H, W) after ``pools`` 2×2 poolings of an image of ``image_size`` (int: square)."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2:
        raise ValueError(f"{argument}: expected (H, W) or an int, got {image_size!r}")
    height, width = (positive_int(n, argument) for n in size)
    if height % 2**pools or width % 2**pools:
        raise ValueError(
            f"{argument}: height and width must be divisible by 2^{pools} = {2**pools} "
            f"(one 2×2 pooling per block in pool_after), got {height}×{width}"
        )
    return height // 2**pools, width // 2**pools


def _widths(width: int | Sequence[int], depth: int) -> list[int]:
    depth = nonnegative_int(depth, "depth")
    if isinstance(width, int) and not isinstance(width, bool):
        widths = [width] * depth
    elif isinstance(width, Sequence) and not isinstance(width, str):
        widths = list(width)
        if len(widths) != depth:
            raise ValueError(f"width: got {len(widths)} per-layer widths for depth={depth}")
    else:
        raise TypeError(f"width: expected an int or a list of ints, got {type(width).__name__}")
    return [positive_int(w, "width") for w in widths]


def _check_sigmas(sigma_w: float, sigma_b: float) -> tuple[float, float]:
    return nonnegative_real(sigma_w, "sigma_w"), nonnegative_real(sigma_b, "sigma_b")


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(int(seed))


def mlp(
    d_in: int,
    width: int | Sequence[int],
    depth: int,
    d_out: int,
    *,
    activation: str | Elementwise | Activation = "relu",
    parameterization: str | Parameterization = "ntk",
    sigma_w: float = math.sqrt(2.0),
    sigma_b: float = 0.0,
    bias: bool | None = None,
    seed: int | None = None,
) -> nn.Sequential:
    """Fully connected network ``d_in -> width × depth -> d_out`` (docs/conventions.md, "Networks").

    ``h¹ = σ_w/√n₀ W¹x + σ_b b¹``, ``h^{l+1} = σ_w/√n_l W^{l+1} φ(h^l) + σ_b b^{l+1}``,
    ``f = h^{L+1}`` in NTK parameterization; standard parameterization moves the scales into
    the initialization. ``depth`` is the number of hidden layers L (0 gives a linear model).

    Args:
        d_in: input features n₀.
        width: hidden width, or a list of L per-layer widths.
        depth: number of hidden layers L >= 0.
        d_out: number of outputs O.
        activation: a built-in name (relu, erf, tanh, sigmoid, gelu, identity) or a callable.
        parameterization: "ntk" or "standard".
        sigma_w, sigma_b: σ_w and σ_b of every layer.
        bias: trainable biases. Default: only when they matter, i.e. σ_b > 0 in NTK
            parameterization (a zero multiplier makes their gradient zero), always in
            standard parameterization (zero-initialized when σ_b = 0, still trainable).
        seed: seed of the initialization (None: torch's global generator).

    Returns:
        ``nn.Sequential`` of `Dense` and `ActivationLayer` modules, inputs (N, d_in),
        outputs (N, d_out).
    """
    widths = [positive_int(d_in, "d_in"), *_widths(width, depth), positive_int(d_out, "d_out")]
    kind = choice(Parameterization, parameterization, "parameterization")
    sigma_w, sigma_b = _check_sigmas(sigma_w, sigma_b)
    act = resolve_activation(activation)
    use_bias = (kind is Parameterization.STANDARD or sigma_b > 0) if bias is None else bias
    generator = _generator(seed)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        if i > 0:
            layers.append(ActivationLayer(act))
        layers.append(
            Dense(
                n_in,
                n_out,
                parameterization=kind,
                sigma_w=sigma_w,
                sigma_b=sigma_b,
                bias=use_bias,
                generator=generator,
            )
        )
    return nn.Sequential(*layers)


def cnn(
    in_channels: int,
    width: int,
    depth: int,
    d_out: int,
    *,
    activation: str | Elementwise | Activation = "relu",
    parameterization: str | Parameterization = "ntk",
    sigma_w: float = math.sqrt(2.0),
    sigma_b: float = 0.0,
    bias: bool | None = None,
    pool_after: Sequence[int] | None = None,
    kernel_size: int = 3,
    readout: str | Readout = Readout.GAP,
    image_size: int | Sequence[int] | None = None,
    seed: int | None = None,
) -> nn.Sequential:
    """Myrtle-style CNN (Shankar et al. 2020): conv blocks, average pooling, linear readout.

    ``depth`` blocks of [k×k `Conv` with same padding, φ]; a 2×2 average pooling after each
    block whose index (0-based) is in ``pool_after`` (default: every block but the last);
    then the readout: global average pooling and a `Dense` ``width -> d_out`` ("gap"), or
    flatten and a `Dense` ``width·H'·W' -> d_out`` ("flatten", H'×W' the final map, which
    needs ``image_size``). Infinite-width counterpart (`ntkscope.infinite_cnn_kernels`):
    neural-tangents' ``stax.Conv(padding="SAME")``, ``AvgPool``, ``GlobalAvgPool`` or
    ``Flatten``, ``Dense`` with the same σ_w, σ_b.

    Inputs (N, in_channels, H, W) with H, W divisible by 2^(number of pools); outputs (N, d_out).
    ``image_size``: (H, W) or H for square images, required by the flatten readout only.
    Other arguments as in `mlp`.
    """
    in_channels = positive_int(in_channels, "in_channels")
    width, d_out = positive_int(width, "width"), positive_int(d_out, "d_out")
    depth = positive_int(depth, "depth")
    kind = choice(Parameterization, parameterization, "parameterization")
    sigma_w, sigma_b = _check_sigmas(sigma_w, sigma_b)
    act = resolve_activation(activation)
    use_bias = (kind is Parameterization.STANDARD or sigma_b > 0) if bias is None else bias
    pools = resolve_pools(pool_after, depth)
    readout = choice(Readout, readout, "readout")
    features = width
    if readout is Readout.FLATTEN:
        if image_size is None:
            raise ValueError("image_size: required by readout='flatten' (the readout's fan-in)")
        features *= math.prod(pooled_size(image_size, len(pools), "image_size"))
    generator = _generator(seed)
    common = dict(
        parameterization=kind, sigma_w=sigma_w, sigma_b=sigma_b, bias=use_bias, generator=generator
    )
    layers: list[nn.Module] = []
    for block in range(depth):
        c_in = in_channels if block == 0 else width
        layers += [Conv(c_in, width, kernel_size, **common), ActivationLayer(act)]
        if block in pools:
            layers.append(nn.AvgPool2d(2))
    if readout is Readout.GAP:
        layers.append(nn.AdaptiveAvgPool2d(1))
    layers += [nn.Flatten(), Dense(features, d_out, **common)]
    return nn.Sequential(*layers)
