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

from ntkscope.kernels._program_kernel import Context, Kernel, ProgramError
from ntkscope.kernels.dual import Dual

_ODD = frozenset({"erf", "tanh", "identity", "sin", "sign"})
"""Built-in odd activations: their features have mean exactly zero."""


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
        """(Σ, Θ) from a weight-summed K and T (already summed over offsets, for a conv).

        With a² n = a² v_w n (NTK parameterization, v_w = 1) Θ = Σ + σ_w² T + β² − σ_b², one
        pass over the tile; terms that are zero take no pass."""
        nngp = k.mul(self.weight_var)
        if self.bias_var:
            nngp.add_(self.bias_var)
        if self.weight_grad == self.weight_var:
            ntk = torch.add(nngp, t, alpha=self.weight_var)
            constant = self.bias_grad - self.bias_var
        else:
            ntk, constant = t.mul(self.weight_var), self.bias_grad
            if self.weight_grad:
                ntk.add_(k, alpha=self.weight_grad)
        if constant:
            ntk.add_(constant)
        return nngp, ntk


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
        return kernel.with_kernels(nngp, ntk, ndim=1, channel=0, flat=False, mean=None)
    if kernel.channel != kernel.ndim - 1:
        raise ProgramError(
            f"{name}: a dense layer acts on the last axis, but the width axis of its input "
            f"is axis {kernel.channel + 1} of {kernel.ndim + 1}"
        )
    nngp, ntk = affine.apply(k, t)
    return kernel.with_kernels(nngp, ntk, flat=False, mean=None)


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
    return kernel.with_kernels(nngp, ntk, mean=None)


def activation(kernel: Kernel, act: Dual, ctx: Context) -> Kernel:
    """Σ = E[φ(u) φ(v)], Θ = T · E[φ'(u) φ'(v)], (u, v) ~ N(0, [[K(x,x), K], [K, K(x',x')]]);
    the features' mean μ(x) = E[φ(u)], u ~ N(0, K(x, x)) (`Dual.mean`).

    The input's features must be zero-mean Gaussian (checked when the program is built,
    `ntkscope.kernels._program_lineage`).
    """
    q1, q2 = ctx.per_input(kernel)
    e_ff, e_dd = act(*kernel.sides(q1, q2), kernel.nngp)
    mean = None
    if act.name not in _ODD:
        m1 = act.mean(q1)
        mean = (m1, m1 if q2 is q1 else act.mean(q2))
    return kernel.with_kernels(e_ff, e_dd.mul_(kernel.ntk), mean=mean)


@dataclass(frozen=True)
class Norm:
    """LayerNorm or RMSNorm over the width axis: eps, and the mean squares of γ and β.

    gain_var: mean(γ²) (1 without affine); bias_var: mean(β²); gain_mean, bias_mean:
    mean(γ), mean(β); gain_grad, bias_grad: 1 when γ, β are trainable, else 0.
    """

    eps: float
    centered: bool
    gain_var: float = 1.0
    bias_var: float = 0.0
    gain_mean: float = 1.0
    bias_mean: float = 0.0
    gain_grad: float = 0.0
    bias_grad: float = 0.0


def norm(kernel: Kernel, spec: Norm, ctx: Context, name: str) -> Kernel:
    """y = (h − mean_i h_i) / √(var_i h + ε) · γ + β over an infinitely wide feature axis.

    As the width grows, the features' mean and variance over the width concentrate (law of
    large numbers): mean_i h_i → μ(x) (`Kernel.mean`, 0 for zero-mean features), var_i h →
    σ²(x) = q(x) − μ(x)², q = K(x, x). So y_i → (h_i − μ(x)) / s(x), s² = σ² + ε, a
    deterministic per-input shift and scale, and

        K_y = (K − μ(x) μ(x')) / (s(x) s(x')),      T_y = T / (s(x) s(x')).

    The tangent: ∂y_i = (∂h_i − mean_j ∂h_j − ŷ_i mean_j ŷ_j ∂h_j) / s, with ŷ = y before
    γ, β (−1/n − ŷ_i ŷ_j/n: the derivatives through the mean and the variance). The last two
    terms are width averages of tangents: their gradient norm is ‖Σ_j c_j ∇h_j‖/n with
    bounded c_j, O(1/√n) of one feature's ‖∇h_i‖ (the ∇h_j are orthogonal at leading order:
    T_ij = O(1/√n) for i ≠ j), so by Cauchy–Schwarz they change Σ_θ ∂y_i ∂y'_i by O(1/√n) and
    drop out; only ∂h_i / s remains (checked against the Monte-Carlo mean eNTK in
    tests/kernels/test_infinite_width_norm.py). With μ = 0 this is the zero-mean case,
    where the features after φ = relu, gelu, ... have μ(x) = E[φ(u)], u ~ N(0, q_pre(x)).

    The affine part (γ_i, β_i fixed numbers, ŷ_i i.i.d. over i with E ŷ = 0) adds
    Σ = mean(γ²) K_y + mean(β²) and Θ = mean(γ²) T_y + K_y [γ trainable] + 1 [β trainable];
    the output's mean is mean(β). RMSNorm (no centering, no β): s² = q + ε, and ŷ keeps the
    mean μ/s, so the output's mean is mean(γ) μ/s.
    """
    if kernel.flat or kernel.channel != kernel.ndim - 1:
        raise ProgramError(f"{name}: a norm layer must normalize the width axis (the last one)")
    q1, q2 = ctx.per_input(kernel)
    means = kernel.mean
    centered = means is not None and spec.centered
    if centered:
        q1, q2 = ((q - m.square()).clamp_min_(0) for q, m in zip((q1, q2), means, strict=True))
    s1, s2 = ((q + spec.eps).rsqrt() for q in (q1, q2))
    r1, r2 = kernel.sides(s1, s2)
    scale = r1 * r2  # 1 / (s(x) s(x')) per pair
    if centered:
        k = torch.addcmul(kernel.nngp, *kernel.means(), value=-1.0).mul_(scale)
    else:
        k = kernel.nngp * scale
    nngp = k if (spec.gain_var, spec.bias_var) == (1.0, 0.0) else k * spec.gain_var + spec.bias_var
    weight = k if spec.gain_grad == 1.0 else k * spec.gain_grad  # [γ trainable] K_y
    ntk = torch.addcmul(weight, kernel.ntk, scale, value=spec.gain_var)  # + γ² T_y
    if spec.bias_grad:
        ntk.add_(spec.bias_grad)
    if means is None or spec.centered:  # E ŷ = 0
        mean = None
        if spec.bias_mean:
            mean = (torch.full_like(s1, spec.bias_mean), torch.full_like(s2, spec.bias_mean))
        return kernel.with_kernels(nngp, ntk, mean=mean)
    return kernel.with_kernels(
        nngp, ntk, mean=(spec.gain_mean * means[0] * s1, spec.gain_mean * means[1] * s2)
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
    k, t, mean = kernel.nngp, kernel.ntk, kernel.mean
    for position, a in enumerate(matrices):
        if a is None:
            continue
        a = a.to(k.device)
        for axis in kernel.axes(position):
            k, t = _map_axis(k, axis, a), _map_axis(t, axis, a)
        if mean is not None:
            mean = tuple(_map_axis(m, 1 + position, a) for m in mean)
    return kernel.with_kernels(k, t, mean=mean)


def _map_axis(t: torch.Tensor, axis: int, a: torch.Tensor) -> torch.Tensor:
    """A applied to axis ``axis`` of t."""
    return (t.movedim(axis, -1) @ a.T).movedim(-1, axis)


def drop_positions(kernel: Kernel, positions: Sequence[int]) -> Kernel:
    """Remove position axes of size 1 (after a mean without keepdim)."""
    axes = sorted((a for p in positions for a in kernel.axes(p)), reverse=True)
    k, t = kernel.nngp, kernel.ntk
    for axis in axes:
        k, t = k.squeeze(axis), t.squeeze(axis)
    mean = kernel.mean
    if mean is not None:
        mean = tuple(m.squeeze(tuple(1 + p for p in positions)) for m in mean)
    channel = kernel.channel - sum(1 for p in positions if p < kernel.channel)
    return kernel.with_kernels(k, t, ndim=kernel.ndim - len(positions), channel=channel, mean=mean)


def flatten(kernel: Kernel) -> Kernel:
    """Flatten channels and positions into one width axis (size-1 positions vanish)."""
    shape = kernel.position_shape()
    if all(n == 1 for n in shape):
        dropped = drop_positions(kernel, range(len(shape)))
        return dropped.with_kernels(dropped.nngp, dropped.ntk, flat=False)
    return kernel.with_kernels(kernel.nngp, kernel.ntk, ndim=1, channel=0, flat=True)


def scale(kernel: Kernel, factor: float) -> Kernel:
    """c · h: Σ = c² K, Θ = c² T, μ = c μ."""
    mean = None if kernel.mean is None else tuple(m * factor for m in kernel.mean)
    return kernel.with_kernels(kernel.nngp * factor**2, kernel.ntk * factor**2, mean=mean)


def add(a: Kernel, b: Kernel, name: str) -> Kernel:
    """h = u + v of two branches that are independent given the input:

        Σ = K_u + K_v + μ_u(x) μ_v(x') + μ_v(x) μ_u(x'),    Θ = T_u + T_v,    μ = μ_u + μ_v.

    In the limit feature i of a tensor is a function of feature i of the weight layers it
    descends from since the last mixing of features (its *sources*), and the outputs of
    different weight layers are independent Gaussian processes (each has fresh zero-mean
    weights W: E[W_i · a] = 0 given everything before). Branches with disjoint sources
    (checked when the program is built, `ntkscope.kernels._program_lineage`) have
    independent features: E[u_i(x) v_i(x')] = μ_u(x) μ_v(x'), and the cross-NTK
    Σ_θ ∂u_i ∂v_i vanishes as 1/√n (each of its n terms W_ij ∂φ_j carries an independent
    zero-mean W_ij). So x + f(x) with f ending in a fresh layer has Σ = K_x + K_f, and
    h + φ(W LN(h)) has Σ = K_h + K_φ (μ_h = 0).
    """
    if a.position_shape() != b.position_shape() or (a.ndim, a.channel, a.flat) != (
        b.ndim,
        b.channel,
        b.flat,
    ):
        raise ProgramError(f"{name}: adds tensors of different shapes or layouts")
    nngp, mean = a.nngp + b.nngp, a.mean
    if a.mean is not None and b.mean is not None:
        (ua, ua2), (ub, ub2) = a.means(), b.means()
        nngp = nngp + ua * ub2 + ub * ua2
        mean = (a.mean[0] + b.mean[0], a.mean[1] + b.mean[1])
    return a.with_kernels(nngp, a.ntk + b.ntk, mean=b.mean if mean is None else mean)


def add_shared(f: Kernel, linear: Kernel, g: Kernel, act: Dual, c: float, ctx: Context) -> Kernel:
    """h = a·φ(g) + b·g of one zero-mean Gaussian tensor g (φ(h) + h), c = a·b; ``f`` and
    ``linear`` are the kernels of a·φ(g) and b·g, ``g`` that of g.

    Stein's lemma for (g_i(x), g_i(x')) jointly Gaussian with mean zero gives
    E[φ(g_i(x)) g_i(x')] = K_g(x, x') E[φ'(u)], u ~ N(0, K_g(x, x)); the cross-NTK is
    Σ_θ ∂φ(g_i(x)) ∂g_i(x') = φ'(g_i(x)) Σ_θ ∂g_i(x) ∂g_i(x') → E[φ'(u)] T_g(x, x'), as the
    per-feature NTK concentrates. With e(x) = E[φ'(u)] (`Dual.first_moments`):

        Σ = K_f + K_lin + c (e(x) + e(x')) K_g,    Θ = T_f + T_lin + c (e(x) + e(x')) T_g,

    and the mean is that of a·φ(g) (g has none).
    """
    q1, q2 = ctx.per_input(g)
    e1 = act.first_moments(q1)[1]
    slope = sum(g.sides(e1, e1 if q2 is q1 else act.first_moments(q2)[1])) * c
    nngp = f.nngp + linear.nngp + slope * g.nngp
    ntk = f.ntk + linear.ntk + slope * g.ntk
    return f.with_kernels(nngp, ntk)
