"""Output gradients of a chain of dense layers and elementwise activations, without autograd.

For ``nn.Sequential(..., Linear, φ, Linear, φ, ..., Linear)`` (Linear: `nn.Linear` or
`ntkscope.models.Dense`, ``h_l = s_l W_l a_l + t_l b_l``; φ: elementwise activation modules,
`ELEMENTWISE`), the output gradients ``g_l[o] = ∂f_o/∂h_l`` of every dense layer follow
from the chain rule, output-major (O, n, d_l), for all O outputs at once:

    g_L[o, n] = e_o,     g_{L-1}[o, n] = s_L W_L[o] ⊙ φ'(h_{L-1}[n]),
    g_l = (g_{l+1} · s_{l+1} W_{l+1}) ⊙ φ'(h_l)      (one GEMM for all outputs)

where φ'(h) is the derivative of the activations between the two layers, composed. The
general structured path gets the same gradients from a backward pass vectorized over the
outputs through probes added to each layer's output; for a chain there is no autograd graph,
no probe and no vectorized backward (whose elementwise kernels under the legacy `vmap` were
slow): the scale s_{l+1} goes into φ'(h_l), which multiplies each GEMM's result in place,
and the first step is a broadcast product instead of a GEMM with O inner columns (MLP
100-512³-10, N = 128, 2 threads, separate processes: trace 13.3–13.4 against 14.3–14.5 ms,
full 28.1–28.4 against 29.1–29.3 ms, measured before the separable trace column of
`Chain.record`). The structured driver checks the result against autograd on one example
(`_structured.check_against_autograd`), as for every model.

Modules before the first dense layer (e.g. ``nn.Flatten``) only prepare its input: any
module without trainable parameters may stand there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ntkscope import _batch
from ntkscope.kernels._functional import FunctionalModel
from ntkscope.kernels._rules import Rule
from ntkscope.kernels._rules.linear import LinearRule
from ntkscope.models.activations import Elementwise, autograd_derivative
from ntkscope.models.layers import ActivationLayer, Dense

ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,  # in eval mode (`refuse_training_mode`) or p = 0: the identity
    ActivationLayer,
)
"""Module types applied elementwise (exact types: a subclass may change ``forward``); not
with ``inplace=True``, which would overwrite the layer output that φ' is taken at."""


def _derivative(module: nn.Module) -> Elementwise:
    """φ' of one elementwise module: the table's for `ActivationLayer`, else by autograd."""
    if isinstance(module, ActivationLayer):
        return module.activation.derivative
    return autograd_derivative(module)


@dataclass
class _Dense:
    """One dense layer of the chain, and the elementwise modules after it with their φ'."""

    name: str
    rule: Rule
    after: list[tuple[nn.Module, Elementwise]] = field(default_factory=list)

    def slope(self, h: torch.Tensor) -> torch.Tensor:
        """(φ_k ∘ ⋯ ∘ φ_1)'(h): each module's derivative at its own input, multiplied."""
        if not self.after:
            return torch.ones_like(h)
        slope, value = self.after[0][1](h), h
        for (before, _), (_, derivative) in zip(self.after[:-1], self.after[1:], strict=True):
            value = before(value)
            slope = slope * derivative(value)
        return slope


Record = tuple[Rule, torch.Tensor, torch.Tensor]


@dataclass
class Chain:
    """The dense layers of a chain model, in order (`chain`)."""

    layers: list[_Dense]

    def record(self, fm: FunctionalModel, x: torch.Tensor, separable: bool) -> list[Record] | None:
        """(rule, input a, output gradients g (n, O, d_out)) of each dense layer, as
        `StructuredStrategy._record` gives them (g output-major: views of (O, n, d)); None
        when a layer's output is not (n, d) (e.g. a sequence: positions are not a chain).

        ``separable`` (trace mode, Σ_o of the Gram products, both sides at the same θ): the
        layer below the readout gets one column per example, ``v ⊙ √c`` (n, 1, d) with
        ``c = Σ_o u_o²``, since its gradients are separable, ``g[o, n] = u_o ⊙ v_n``
        (u = s_L W_L, v = φ'(h)), and ``Σ_o g[o, n]·g[o, m] = Σ_k c_k v_nk v_mk``: a Gram
        with 1/O of the columns."""
        seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def keep(name):
            return lambda module, inputs, output: seen.__setitem__(name, (inputs[0], output))

        handles = [d.rule.module.register_forward_hook(keep(d.name)) for d in self.layers]
        try:
            with torch.no_grad():
                fm(fm.theta, x)
        finally:
            for handle in handles:
                handle.remove()
        if any(h.dim() != 2 for _, h in seen.values()):
            return None
        values = {**fm.fixed, **fm.theta}
        readout = self.layers[-1]
        n, n_out = seen[readout.name][1].shape
        eye = torch.eye(n_out, dtype=fm.dtype, device=fm.device)
        identity = eye[:, None, :].expand(n_out, n, n_out).contiguous()
        records = [(readout.rule, seen[readout.name][0], identity.transpose(0, 1))]
        g = None
        for layer, above in zip(self.layers[-2::-1], self.layers[:0:-1], strict=True):
            weight = values[f"{above.name}.weight"]  # (d_above, d_layer)
            scale = getattr(above.rule.module, "weight_scale", 1.0)
            slope = layer.slope(seen[layer.name][1]) * scale  # (n, d_layer)
            if g is None:  # above is the readout, whose output gradient is the identity
                g = weight[:, None, :] * slope
                kept = (
                    (slope * weight.square().sum(0).sqrt())[:, None]
                    if separable
                    else g.transpose(0, 1)
                )
            else:
                g = (g.reshape(-1, g.shape[2]) @ weight).view(n_out, n, -1).mul_(slope)
                kept = g.transpose(0, 1)
            records.append((layer.rule, seen[layer.name][0], kept))
        return records[::-1]

    def transient_bytes(self, n_out: int, item: int) -> int:
        """Working memory of `record` per example beyond the features it returns: every
        dense layer's input and output, one layer's φ' and its gradients for all outputs."""
        shapes = [d.rule.module.weight.shape for d in self.layers]
        widest = max(d_out for d_out, _ in shapes)
        return item * (sum(d_out + d_in for d_out, d_in in shapes) + (n_out + 1) * widest)


def chain(fm: FunctionalModel, rules: dict[str, Rule]) -> Chain | None:
    """The chain of ``fm``'s module, or None when it is not one (module docstring)."""
    module = fm.module
    if type(module) is not nn.Sequential or fm.output is not _batch.default_output:
        return None
    children = list(module._modules.items())
    if len({id(child) for _, child in children}) != len(children):
        return None  # a module applied twice
    layers: list[_Dense] = []
    for name, child in children:
        rule = rules.get(name)
        if isinstance(rule, LinearRule) and type(child) in (nn.Linear, Dense):
            layers.append(_Dense(name, rule))
        elif layers and type(child) in ELEMENTWISE and not getattr(child, "inplace", False):
            layers[-1].after.append((child, _derivative(child)))
        elif layers or any(True for _ in child.parameters()):
            return None
    if not layers or layers[-1].after or len(rules) != len(layers):
        return None
    return Chain(layers)
