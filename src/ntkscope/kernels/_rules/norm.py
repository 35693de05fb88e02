"""Normalization layers ``h = x̂ ⊙ w + b``, x̂ the normalized input.

The Jacobian of output o with respect to the scale w of channel c is
``Σ_p x̂_{p,c} g_{o,p,c}`` and with respect to the shift b is ``Σ_p g_{o,p,c}``, summed over
the positions p that share the channel's parameters. Both are (n, O, C) per example,
small enough to contract as `Jacobian` terms. The scale's sum runs over a few examples at a
time (`weighted_sum`), so that the products ``x̂ ⊙ g`` stay in cache. x̂ per layer:

- ``nn.LayerNorm``: ``(x − mean) / sqrt(var + eps)`` over the normalized trailing dims.
- ``nn.RMSNorm``: ``x / sqrt(mean(x²) + eps)`` over the normalized trailing dims.
- ``nn.GroupNorm``: as LayerNorm over each group of channels; channels on dim 1.
- ``nn.BatchNorm1d/2d/3d`` in eval mode: ``(x − running_mean) / sqrt(running_var + eps)``;
  without running statistics it normalizes by the batch's own, which couples the
  examples, and is refused. Its input gradient is the output gradient times
  ``w / sqrt(running_var + eps)`` per channel (`BatchNormRule.input_gradient`: 0.17 ms per
  16-channel 16×16 layer of 64 examples in autograd's general backward, measured in the
  ResNet row's backward passes, one multiplication here).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ntkscope.kernels._rules._base import Jacobian, Rule, Term

_CHUNK_BYTES = 2**20
"""Bytes of the products ``x̂ ⊙ g`` that `weighted_sum` forms at a time (a core's L2 cache
on the CI-class CPU): the ResNet's 16×16 BatchNorm terms took 5.3 ms per layer as one
product, in the pipeline, where the 10 MB product went through memory."""


def weighted_sum(g: torch.Tensor, w: torch.Tensor, axis: int) -> torch.Tensor:
    """``(g * w).sum(axis)`` for g (n, O, ...) and w (n, 1, ...), a few examples at a time
    (`_CHUNK_BYTES`)."""
    n = g.shape[0]
    out = g.new_empty(n, *g.shape[1:axis], *g.shape[axis + 1 :])
    step = max(1, _CHUNK_BYTES // max(g[0].numel() * g.element_size(), 1))
    for start in range(0, n, step):
        rows = slice(start, start + step)
        torch.sum(g[rows] * w[rows], axis, out=out[rows])
    return out


class _NormRule(Rule):
    channels_last = True
    """Whether the parameters cover trailing dims (LayerNorm) or dim 1 (GroupNorm)."""

    def normalized(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def terms(self, a: torch.Tensor, g: torch.Tensor) -> list[Term]:
        n, n_out = g.shape[:2]
        size = (self.module.bias if self.module.weight is None else self.module.weight).numel()
        # (n, O, positions, channels), or (n, O, channels, positions) with channels on dim 1:
        # summed over positions where they lie (moving them copied all the gradients)
        shape, axis = ((-1, size), 2) if self.channels_last else ((size, -1), 3)
        g = g.reshape(n, n_out, *shape)
        parts = []
        if "weight" in self.trainable:
            parts.append(weighted_sum(g, self.normalized(a).reshape(n, 1, *shape), axis))
        if "bias" in self.trainable:
            parts.append(g.sum(axis))
        return [Jacobian(torch.cat(parts, dim=2))]


class LayerNormRule(_NormRule):
    def normalized(self, a):
        return F.layer_norm(a, self.module.normalized_shape, eps=self.module.eps)


class RMSNormRule(_NormRule):
    def normalized(self, a):
        return F.rms_norm(a, self.module.normalized_shape, eps=self.module.eps)


class GroupNormRule(_NormRule):
    channels_last = False

    def normalized(self, a):
        return F.group_norm(a, self.module.num_groups, eps=self.module.eps)


class BatchNormRule(_NormRule):
    channels_last = False

    def check(self) -> None:
        if self.module.running_mean is None or self.module.running_var is None:
            raise self.refuse(
                "without running statistics it normalizes by the batch's own, which couples "
                "the examples of a batch"
            )

    def normalized(self, a):
        m = self.module
        return F.batch_norm(a, m.running_mean, m.running_var, training=False, eps=m.eps)

    def input_gradient(self, a):
        m = self.module
        scale = torch.rsqrt(m.running_var + m.eps)
        if m.weight is not None:
            scale = scale * m.weight.detach()
        scale = scale.view(-1, *[1] * (a.dim() - 2)).to(a.dtype)
        return lambda grad: grad * scale
