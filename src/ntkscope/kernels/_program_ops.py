"""One small `Kernel -> Kernel` function per operation of a network, at infinite width.

Notation: K, T the NNGP and NTK of an operation's input (per feature: the mean over the
width axis of h_i(x) h_i(x')), Σ, Θ those of its output, p, p' positions of x and x'.
Sources: Lee et al. 2018 and Jacot et al. 2018 (dense), Novak et al. 2019 and Arora et al.
2019 (convolution, pooling), neural-tangents' ``stax`` for the layer vocabulary and the
standard parameterization (Sohl-Dickstein et al. 2020, "On the infinite width limit of
neural networks with a standard parameterization").

Weight layer h = a · W x + β · b, W with entries of variance v_w, fan-in n, b of variance
v_b (a = σ_w/√n, v_w = 1 in NTK parameterization; a = 1, v_w = σ_w²/n in standard):

    Σ = a² v_w n · K + β² v_b,     Θ = a² n · K + β² + a² v_w n · T

(the β² term only for a trainable bias, a² n K only for trainable weights): the gradient
with respect to W_ij contributes a² x_j x'_j, summed over the n inputs, and the chain rule
through x contributes Σ_j a² W_ij² T_j. In NTK parameterization this is Σ = σ_w² K + σ_b²,
Θ = Σ + σ_w² T (docs/conventions.md); in standard parameterization Θ = n K + 1 + σ_w² T grows
with the actual fan-in n, the leading order of E[Θ̂] at the model's widths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ntkscope.kernels._program_kernel import Context, Kernel, ProgramError, Term
from ntkscope.kernels.dual import Dual

_ODD = frozenset({"erf", "tanh", "identity", "sin", "sign"})
"""Built-in odd activations: they keep zero-mean features zero-mean."""


@dataclass(frozen=True)
class Affine:
    """h = a · W x + β · b as the kernels see it (see the module docstring).

    weight_var: a² v_w n (σ_w²); bias_var: β² v_b (σ_b², 0 without a bias);
    weight_grad: a² n (0 when W is frozen); bias_grad: β² (0 without a trainable bias).
    """

    weight_var: float
    bias_var: float
    weight_grad: float
    bias_grad: float

    def apply(self, k: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ, Θ) from a weight-summed K and T (already summed over offsets, for a conv)."""
        nngp = k.mul(self.weight_var).add_(self.bias_var)
        ntk = t.mul(self.weight_var).add_(k, alpha=self.weight_grad).add_(self.bias_grad)
        return nngp, ntk


def _fresh(kernel: Kernel, name: str) -> dict[str, object]:
    """The fields of a weight layer's output: one fresh zero-mean term."""
    return {
        "zero_mean": True,
        "terms": frozenset({Term("layer", name)}),
        "ancestors": kernel.ancestors | {name},
        "mixed": False,
    }


def diagonal_mean(t: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    """mean_p t[..., p, p]: what a dense layer sees of channels × positions flattened."""
    n = math.prod(kernel.position_shape())
    return t.reshape(*t.shape[: kernel.batch], n, n).diagonal(dim1=-2, dim2=-1).mean(-1)


def dense(kernel: Kernel, affine: Affine, name: str) -> Kernel:
    """A dense layer over the last axis: Σ = σ_w² K + σ_b², Θ (module docstring).

    Positions keep their pairs (weights are shared across them); after a flatten, the
    layer sums over channels and positions: K is replaced by mean_p K[p, p].
    """
    k, t = kernel.nngp, kernel.ntk
    if kernel.flat and kernel.positions:
        k, t = diagonal_mean(k, kernel), diagonal_mean(t, kernel)
        nngp, ntk = affine.apply(k, t)
        return kernel.with_kernels(nngp, ntk, ndim=1, channel=0, flat=False, **_fresh(kernel, name))
    if kernel.channel != kernel.ndim - 1:
        raise ProgramError(
            f"{name}: a dense layer acts on the last axis, but the width axis of its input "
            f"is axis {kernel.channel + 1} of {kernel.ndim + 1}"
        )
    nngp, ntk = affine.apply(k, t)
    return kernel.with_kernels(nngp, ntk, flat=False, **_fresh(kernel, name))


@dataclass(frozen=True)
class Window:
    """One spatial axis of a convolution: size k, stride, dilation, padding (left, right)."""

    size: int
    stride: int = 1
    dilation: int = 1
    padding: tuple[int, int] = (0, 0)

    def out_length(self, n: int) -> int:
        return (n + sum(self.padding) - self.dilation * (self.size - 1) - 1) // self.stride + 1


def _offset_sum(t: torch.Tensor, axes: tuple[int, int], w: Window) -> torch.Tensor:
    """Σ_δ t[s·i + d·δ − P, s·j + d·δ − P]: both axes move by the same offset; 0 outside."""
    pad = [0, 0] * t.dim()
    for axis in axes:  # F.pad lists (left, right) from the last axis backwards
        pad[2 * (t.dim() - 1 - axis)], pad[2 * (t.dim() - 1 - axis) + 1] = w.padding
    t = torch.nn.functional.pad(t, pad)
    n_out = w.out_length(t.shape[axes[0]] - sum(w.padding))
    out = 0
    for delta in range(w.size):
        start = w.dilation * delta
        index = [slice(None)] * t.dim()
        for axis in axes:
            index[axis] = slice(start, start + w.stride * (n_out - 1) + 1, w.stride)
        out = out + t[tuple(index)]
    return out


def conv(kernel: Kernel, affine: Affine, windows: Sequence[Window], name: str) -> Kernel:
    """Convolution over the position axes, channels on axis 0 (Novak et al. 2019):

    Σ[p, p'] = σ_w² / ∏k · Σ_δ K[s·p + d·δ − P, s·p' + d·δ − P] + σ_b²  (0 outside),
    Θ likewise with the summed K and T in the module docstring's formula (weights at one
    offset see x at p + δ and x' at p' + δ, so the offset sums run jointly over both).
    """
    if kernel.flat or kernel.channel != 0 or kernel.positions != len(windows):
        raise ProgramError(
            f"{name}: a {len(windows)}-d convolution needs inputs (N, C, {len(windows)} "
            f"positions), got a tensor of {kernel.ndim + 1} axes with channels on axis "
            f"{kernel.channel + 1}"
        )
    k, t = kernel.nngp, kernel.ntk
    for position, window in enumerate(windows):
        k, t = (_offset_sum(a, kernel.axes(position), window) for a in (k, t))
    size = math.prod(w.size for w in windows)
    nngp, ntk = affine.apply(k / size, t / size)
    return kernel.with_kernels(nngp, ntk, **_fresh(kernel, name))


def activation(kernel: Kernel, act: Dual, ctx: Context, name: str) -> Kernel:
    """Σ = E[φ(u) φ(v)], Θ = T · E[φ'(u) φ'(v)], (u, v) ~ N(0, [[K(x,x), K], [K, K(x',x')]])."""
    if kernel.mixed:
        raise ProgramError(
            f"{name}: the activation {act.name} acts on a concatenation of features with "
            "different kernels; only a weight layer (Linear, Conv), pooling, flatten, a norm "
            "or a sum may follow torch.cat here; use ntkscope.monte_carlo_kernels"
        )
    if not kernel.zero_mean:
        raise ProgramError(
            f"{name}: the activation {act.name} acts on features whose mean is not zero "
            "(e.g. after a norm layer's bias); its dual needs zero-mean Gaussian inputs"
        )
    e_ff, e_dd = act(*ctx.variances(kernel), kernel.nngp)
    return kernel.with_kernels(
        e_ff,
        e_dd.mul_(kernel.ntk),
        zero_mean=act.name in _ODD,
        terms=frozenset({Term("nonlinear", name)}),
    )


@dataclass(frozen=True)
class Norm:
    """LayerNorm or RMSNorm over the width axis: eps, and the mean squares of γ and β.

    gain_var: mean(γ²) (1 without affine); bias_var: mean(β²); gain_grad, bias_grad: 1
    when γ, β are trainable, else 0.
    """

    eps: float
    centered: bool
    gain_var: float = 1.0
    bias_var: float = 0.0
    gain_grad: float = 0.0
    bias_grad: float = 0.0


def norm(kernel: Kernel, spec: Norm, ctx: Context, name: str) -> Kernel:
    """y = (h − mean_i h_i) / √(var_i h + ε) · γ + β over an infinitely wide feature axis.

    As the width grows, mean_i h_i → E[h_i] = 0 for zero-mean features and var_i h →
    K(x, x)[p, p] = q(x)[p] (law of large numbers), so y_i → h_i / √(q(x) + ε): the
    normalization divides by a deterministic per-input scale,

        K_y = K / √((q(x) + ε)(q(x') + ε)),   T_y = T / √(...)  (the same factor),

    the O(1/n) terms of ∂y_i/∂h_j (−1/n − y_i y_j/n) dropping out. The affine part adds
    Σ = mean(γ²) K_y + mean(β²) and Θ = mean(γ²) T_y + K_y [γ trainable] + 1 [β trainable].
    RMSNorm is the same without centering, LayerNorm's centering needs zero-mean features.
    """
    if kernel.flat or kernel.channel != kernel.ndim - 1:
        raise ProgramError(f"{name}: a norm layer must normalize the width axis (the last one)")
    if spec.centered and not kernel.zero_mean:
        raise ProgramError(
            f"{name}: LayerNorm of features whose mean is not zero (e.g. right after a "
            "ReLU) is not supported; RMSNorm is, or use ntkscope.monte_carlo_kernels"
        )
    v1, v2 = ctx.variances(kernel)
    scale = ((v1 + spec.eps) * (v2 + spec.eps)).rsqrt_()
    k = kernel.nngp * scale
    nngp = k.mul(spec.gain_var).add_(spec.bias_var)
    ntk = kernel.ntk * scale
    ntk.mul_(spec.gain_var).add_(k, alpha=spec.gain_grad).add_(spec.bias_grad)
    return kernel.with_kernels(
        nngp, ntk, zero_mean=spec.bias_var == 0, terms=frozenset({Term("nonlinear", name)})
    )


def average_matrix(n: int, window: Window) -> torch.Tensor:
    """(out, n) matrix of an average pooling (zero padding counted, as torch's default)."""
    rows = torch.zeros(window.out_length(n), n, dtype=torch.float64)
    for i in range(rows.shape[0]):
        for delta in range(window.size):
            j = i * window.stride + delta * window.dilation - window.padding[0]
            if 0 <= j < n:
                rows[i, j] += 1.0 / window.size
    return rows


def adaptive_matrix(n: int, out: int) -> torch.Tensor:
    """(out, n) matrix of adaptive average pooling: window i is ⌊i n/out⌋ .. ⌈(i+1) n/out⌉."""
    rows = torch.zeros(out, n, dtype=torch.float64)
    for i in range(out):
        start, end = (i * n) // out, -((-(i + 1) * n) // out)
        rows[i, start:end] = 1.0 / (end - start)
    return rows


def positional(kernel: Kernel, matrices: Sequence[torch.Tensor | None]) -> Kernel:
    """A linear map A of each position axis (pooling, means): Σ = A K Aᵀ, Θ = A T Aᵀ.

    ``matrices[i]`` (out, n) for position axis i, or None to leave it.
    """
    k, t = kernel.nngp, kernel.ntk
    for position, a in enumerate(matrices):
        if a is None:
            continue
        for axis in kernel.axes(position):
            a = a.to(k.device)
            k = (k.movedim(axis, -1) @ a.T).movedim(-1, axis)
            t = (t.movedim(axis, -1) @ a.T).movedim(-1, axis)
    return kernel.with_kernels(k, t)


def drop_positions(kernel: Kernel, positions: Sequence[int]) -> Kernel:
    """Remove position axes of size 1 (after a mean without keepdim)."""
    axes = sorted((a for p in positions for a in kernel.axes(p)), reverse=True)
    k, t = kernel.nngp, kernel.ntk
    for axis in axes:
        k, t = k.squeeze(axis), t.squeeze(axis)
    channel = kernel.channel - sum(1 for p in positions if p < kernel.channel)
    return kernel.with_kernels(k, t, ndim=kernel.ndim - len(positions), channel=channel)


def flatten(kernel: Kernel) -> Kernel:
    """Flatten channels and positions into one width axis (size-1 positions vanish)."""
    shape = kernel.position_shape()
    if all(n == 1 for n in shape):
        dropped = drop_positions(kernel, range(len(shape)))
        return dropped.with_kernels(dropped.nngp, dropped.ntk, flat=False)
    return kernel.with_kernels(kernel.nngp, kernel.ntk, ndim=1, channel=0, flat=True)


def scale(kernel: Kernel, factor: float) -> Kernel:
    """c · h: Σ = c² K, Θ = c² T."""
    return kernel.with_kernels(kernel.nngp * factor**2, kernel.ntk * factor**2)


def _independent(a: Kernel, b: Kernel) -> bool:
    """Every pair of summands has one side linear in fresh weights the other lacks."""
    return all(
        (u.kind == "layer" and u.name not in b.ancestors)
        or (v.kind == "layer" and v.name not in a.ancestors)
        for u in a.terms
        for v in b.terms
    )


def add(a: Kernel, b: Kernel, name: str) -> Kernel:
    """h = u + v of two branches that are independent given the input: Σ = K_u + K_v.

    In the limit a branch ending in a weight layer with fresh zero-mean weights W is a
    Gaussian process independent of every tensor that does not depend on W: the
    cross-covariance E[u(x) v(x')] = E_W[W] · (...) = 0, and the cross-NTK Σ_θ ∂u ∂v
    vanishes as 1/√n (each of the n terms W_ij ∂φ_j carries an independent zero-mean
    W_ij). So x + f(x) with f ending in a fresh layer has Σ = K_x + K_f, Θ = T_x + T_f,
    and likewise a·f(x) + b·x with the factors squared. Branches that share a summand
    (h + pool(h), φ(h) + h) are correlated: refused.
    """
    if a.position_shape() != b.position_shape() or (a.ndim, a.channel, a.flat) != (
        b.ndim,
        b.channel,
        b.flat,
    ):
        raise ProgramError(f"{name}: adds tensors of different shapes or layouts")
    if not _independent(a, b):
        raise ProgramError(
            f"{name}: adds two branches that are correlated (neither ends in a weight layer "
            "that the other does not use, e.g. φ(h) + h): their cross-covariance has no "
            "closed form here; use ntkscope.monte_carlo_kernels"
        )
    return a.with_kernels(
        a.nngp + b.nngp,
        a.ntk + b.ntk,
        zero_mean=a.zero_mean and b.zero_mean,
        mixed=a.mixed or b.mixed,
        terms=a.terms | b.terms,
        ancestors=a.ancestors | b.ancestors,
    )
