"""Structured eNTK: per-layer Gram products instead of per-example Jacobians.

For a layer ``h = s_w · W a + s_b · b`` (Linear, or Conv2d on unfolded patches), the
Jacobian of output o with respect to W at example x is ``s_w · Σ_p g_{o,p}(x) a_p(x)ᵀ``,
where ``a_p`` is the layer input at position p (patch, sequence element) and
``g_{o,p} = ∂f_o/∂h_p`` the output gradient there. Its contribution to the eNTK is

    Θ_W(x, x')_{oo'} = s_w² Σ_{p,p'} (a_p · a'_{p'}) (g_{o,p} · g'_{o',p'})

With a single position (dense layers on flat inputs) this is the product of two Gram
matrices, ``s_w² (a · a') (g_o · g'_{o'})`` — the layer-wise form of Novak, Sohl-Dickstein &
Schoenholz, "Fast finite width neural tangent kernel" (ICML 2022), which costs
O(N² (d_in + O² d_out)) per layer instead of O(N² O² d_in d_out). The bias adds
``s_b² (g_o · g'_{o'})``, folded in as a constant input column. With several positions
(convolutions) the per-example weight Jacobian is formed from the unfolded patches and
contracted in one GEMM.

The activations ``a`` and gradients ``g`` come from one forward pass with hooks on the
supported layers, and one backward pass per output through zero "probe" tensors added to
each layer's output (∂f/∂probe = ∂f/∂h), so no parameter gradient is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ntkscope.kernels._functional import FunctionalModel
from ntkscope.kernels._gram import gram, gram_diagonal
from ntkscope.kernels._probe import disagreement
from ntkscope.models.layers import Conv, Dense

SUPPORTED = (nn.Linear, nn.Conv2d, Dense, Conv)


class UnsupportedModel(ValueError):
    """The structured method cannot compute this model's eNTK; the message says why."""


@dataclass(frozen=True)
class _Layer:
    name: str
    module: nn.Module
    has_weight: bool
    has_bias: bool
    weight_scale: float
    bias_scale: float


def _conv_padding(module: nn.Conv2d) -> tuple[int, int]:
    if module.padding == "valid":
        return (0, 0)
    if module.padding == "same":
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        if any(t % 2 for t in total):
            raise UnsupportedModel("asymmetric 'same' padding (even kernel size)")
        return (total[0] // 2, total[1] // 2)
    return tuple(module.padding)


def _supported_layers(fm: FunctionalModel) -> list[_Layer]:
    """The layers holding θ; raises `UnsupportedModel` naming the first that is not supported."""
    layers = []
    for name, module in fm.module.named_modules():
        own = {n for n, _ in module.named_parameters(recurse=False)}
        trainable = {n for n in own if (f"{name}.{n}" if name else n) in fm.theta}
        if not trainable:
            continue
        prefix = f"layer {name or '(root)'!r} ({type(module).__name__})"
        if type(module) not in SUPPORTED:
            raise UnsupportedModel(f"{prefix} has trainable parameters and is not supported")
        if isinstance(module, nn.Conv2d):
            if module.groups != 1 or module.padding_mode != "zeros":
                raise UnsupportedModel(f"{prefix}: groups != 1 or non-zero padding mode")
            _conv_padding(module)
        scales = (getattr(module, "weight_scale", 1.0), getattr(module, "bias_scale", 1.0))
        layers.append(_Layer(name, module, "weight" in trainable, "bias" in trainable, *scales))
    return layers


def _patches(a, kernel, stride, padding, dilation) -> torch.Tensor:
    """Convolution patches (n, P, C·kh·kw) in the weight's (C, kh, kw) order.

    Same result as ``F.unfold`` (im2col), built from strided views and one copy, which on
    CPU is many times faster than PyTorch's im2col.
    """
    padded = F.pad(a, (padding[1], padding[1], padding[0], padding[0]))
    for dim, (k, s, d) in enumerate(zip(kernel, stride, dilation, strict=True), start=2):
        padded = padded.unfold(dim, d * (k - 1) + 1, s)[..., ::d]
    # (n, C, H', W', kh, kw) -> (n, H'·W', C·kh·kw)
    n, c, h, w, kh, kw = padded.shape
    return padded.permute(0, 2, 3, 1, 4, 5).reshape(n, h * w, c * kh * kw)


def _positions(layer: _Layer, a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Inputs (n, P, d_in) and output gradients (n, O, P, d_out) at every position."""
    m = layer.module
    n, n_out = a.shape[0], g.shape[1]
    if isinstance(m, nn.Conv2d):
        patches = _patches(a, m.kernel_size, m.stride, _conv_padding(m), m.dilation)
    elif isinstance(m, Conv):
        patches = _patches(a, m.weight.shape[-2:], (1, 1), (m.padding,) * 2, (1, 1))
    else:
        return a.reshape(n, -1, a.shape[-1]), g.reshape(n, n_out, -1, g.shape[-1])
    return patches, g.flatten(3).transpose(2, 3)


@dataclass
class Features:
    """Per-example factors of Θ̂, one entry per layer in the cheapest of three forms.

    ``outer``: [(A (n, d_in'), G (n, O, d_out))], one position: (A Aᵀ) ⊙ (G Gᵀ).
    ``positional``: [(A (n, P, d_in'), G (n, O, P, d_out))]: Σ_{p,q} (a_p·a'_q)(g_p·g'_q).
    ``jacobians``: [J (n, O, d_in'·d_out)], per-example Jacobians: J Jᵀ.
    A carries the bias as a constant column s_b (d_in' = d_in + 1), the weight part as s_w·a.
    """

    outer: list[tuple[torch.Tensor, torch.Tensor]]
    positional: list[tuple[torch.Tensor, torch.Tensor]]
    jacobians: list[torch.Tensor]


def _positional_pair(a1, g1, a2, g2, full: bool) -> torch.Tensor:
    """Σ_{p,q} (a1_p · a2_q)(g1_{o,p} · g2_{o',q}) for every pair: three GEMM-shaped steps."""
    (n, p1, _), (m, p2, _) = a1.shape, a2.shape
    aa = (a1.flatten(0, 1) @ a2.flatten(0, 1).T).view(n, p1, m, p2)
    if not full:
        g1t, g2t = g1.transpose(1, 2).flatten(2), g2.transpose(1, 2).flatten(2)  # (n, P, O·D)
        gg = (g1t.flatten(0, 1) @ g2t.flatten(0, 1).T).view(n, p1, m, p2)
        return (aa * gg).sum((1, 3))
    n_out, d_out = g2.shape[1], g2.shape[3]
    # b[m, (n, p), (d, o')] = Σ_q (a1_p · a2_q) g2[m, o', q, d]: one GEMM per column example
    g2t = g2.permute(0, 2, 3, 1).reshape(m, p2, d_out * n_out)
    b = aa.permute(2, 0, 1, 3).reshape(m, n * p1, p2) @ g2t
    # Θ[n, m, o, o'] = Σ_{p,d} g1[n, o, p, d] b[m, n, (p, d), o']: per row example n, a
    # batch over m of contiguous blocks (no permuted copy of b, which is the largest array)
    b = b.view(m, n, p1 * d_out, n_out)
    g1 = g1.reshape(n, n_out, p1 * d_out)
    return torch.stack([g1[i] @ b[:, i] for i in range(n)])


def _positional_diagonal(a, g, full: bool) -> torch.Tensor:
    """`_positional_pair` of each example with itself."""
    aa = a @ a.transpose(1, 2)  # (n, P, P)
    if not full:
        gt = g.transpose(1, 2).flatten(2)
        return (aa * (gt @ gt.transpose(1, 2))).sum((1, 2))
    return torch.einsum("nopd,npqd->noq", g, torch.einsum("npq,noqd->npod", aa, g))


def _diagonal(f: Features, full: bool) -> torch.Tensor:
    """Θ̂(x_n, x_n) from one block's features: (n, O, O) if full, else (n,) summed over o."""
    total = 0
    for a, g in f.outer:
        aa = (a * a).sum(1)
        total = total + (aa[:, None, None] if full else aa) * gram_diagonal(g, full)
    for a, g in f.positional:
        total = total + _positional_diagonal(a, g, full)
    for j in f.jacobians:
        total = total + gram_diagonal(j, full)
    return total


def _output_gradients(out: torch.Tensor, probes: list[torch.Tensor]) -> list[torch.Tensor]:
    """∂f_o/∂probe for every output o, stacked as (n, O, *probe.shape[1:]).

    One backward pass vectorized over the O one-hot cotangents (``is_grads_batched``).
    """
    n, n_out = out.shape
    eye = torch.eye(n_out, dtype=out.dtype, device=out.device)
    cotangents = eye[:, None, :].expand(n_out, n, n_out)
    grads = torch.autograd.grad(out, probes, cotangents, is_grads_batched=True, allow_unused=True)
    return [
        torch.zeros((n_out, *p.shape), dtype=p.dtype, device=p.device).transpose(0, 1)
        if g is None
        else g.transpose(0, 1)
        for g, p in zip(grads, probes, strict=True)
    ]


class StructuredStrategy:
    """Tiling strategy (see `_tiling.Strategy`) for models made of supported layers."""

    def __init__(self, fm: FunctionalModel, n_out: int, full: bool):
        self.fm, self.n_out, self.full = fm, n_out, full
        self.layers = _supported_layers(fm)
        owned = {
            f"{layer.name}.{p}" if layer.name else p
            for layer in self.layers
            for p in ("weight", "bias")
        }
        stray = set(fm.theta) - owned
        if stray:
            raise UnsupportedModel(f"parameters {sorted(stray)} belong to no supported layer")
        item = torch.empty((), dtype=fm.dtype).element_size()
        self.feature_bytes, self.pair_bytes = 0, item * (3 * n_out**2 if full else 3)

    def measure(self, f: Features) -> None:
        """Set ``feature_bytes`` and ``pair_bytes`` from one example's features ``f``."""
        pieces = [*f.outer, *f.positional]
        item = torch.empty((), dtype=self.fm.dtype).element_size()
        sizes = [a.numel() + g.numel() for a, g in pieces] + [j.numel() for j in f.jacobians]
        self.feature_bytes = sum(sizes) * item
        # positional temporaries per pair: a·a' (P²) and g·g' (P²), or b and its copy (P·O·d_out)
        for a, g in f.positional:
            self.pair_bytes += item * (
                a.shape[1] ** 2 + (2 * g[0].numel() if self.full else a.shape[1] ** 2)
            )

    def _record(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Forward with hooks; returns [(input a, output gradients g (n, O, *h.shape[1:]))]."""
        records: dict[str, tuple] = {}

        def hook(name):
            def add_probe(module, inputs, output):
                if name in records:
                    raise UnsupportedModel(f"layer {name!r} is called more than once per forward")
                probe = torch.zeros_like(output, requires_grad=True)
                records[name] = (inputs[0].detach(), probe)
                return output + probe

            return add_probe

        handles = [layer.module.register_forward_hook(hook(layer.name)) for layer in self.layers]
        try:
            with torch.enable_grad():
                out = self.fm(self.fm.theta, x)
        finally:
            for handle in handles:
                handle.remove()
        probes = [records[layer.name][1] for layer in self.layers]
        grads = _output_gradients(out, probes)
        return [(records[layer.name][0], g) for layer, g in zip(self.layers, grads, strict=True)]

    def features(self, x: torch.Tensor) -> Features:
        f = Features([], [], [])
        for layer, (a, g) in zip(self.layers, self._record(x), strict=True):
            a, g = _positions(layer, a, g)  # (n, P, d_in), (n, O, P, d_out)
            columns = [layer.weight_scale * a] if layer.has_weight else []
            if layer.has_bias:
                columns.append(a.new_full((*a.shape[:2], 1), layer.bias_scale))
            a = torch.cat(columns, dim=2)
            (_, positions, d_in), (_, n_out, _, d_out) = a.shape, g.shape
            outputs = n_out**2 if self.full else n_out
            per_example = outputs * d_in * d_out
            factorized = positions**2 * (d_in + n_out * d_out) + positions * d_out * outputs
            if positions == 1:
                f.outer.append((a[:, 0], g[:, :, 0]))
            elif factorized < per_example:
                f.positional.append((a, g))
            else:
                f.jacobians.append(torch.einsum("nopd,npe->node", g, a).flatten(2))
        return f

    def pair(self, f1: Features, f2: Features) -> torch.Tensor:
        total = 0
        for (a1, g1), (a2, g2) in zip(f1.outer, f2.outer, strict=True):
            aa = a1 @ a2.T
            total = total + (aa[:, :, None, None] if self.full else aa) * gram(g1, g2, self.full)
        for (a1, g1), (a2, g2) in zip(f1.positional, f2.positional, strict=True):
            total = total + _positional_pair(a1, g1, a2, g2, self.full)
        for j1, j2 in zip(f1.jacobians, f2.jacobians, strict=True):
            total = total + gram(j1, j2, self.full)
        return total

    def diagonal(self, f: Features) -> torch.Tensor:
        return _diagonal(f, self.full)


def check_against_autograd(strategy: StructuredStrategy, f: Features, x) -> None:
    """Compare ``vᵀ Θ̂(x₀, x₀) v`` with ``‖∇_θ (v · f(x₀))‖²`` (`_probe.disagreement`).

    Catches what the layer inspection cannot see (a parameter used outside its layer's
    forward, a layer whose forward is not ``s_w W a + s_b b``) at the cost of one example.
    ``f`` are the structured features of x₀ = ``x[:1]``, computed once and reused by
    `StructuredStrategy.measure`.

    Raises:
        UnsupportedModel: when the two differ by more than the dtype's tolerance.
    """
    why = disagreement(strategy.fm, _diagonal(f, full=True)[0], x)
    if why is not None:
        raise UnsupportedModel(
            f"the layer-wise eNTK disagrees with autograd ({why}); a parameter is probably "
            "used outside its layer's forward"
        )
