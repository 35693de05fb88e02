"""Normalization layers ``h = x̂ ⊙ w + b``, x̂ the normalized input.

The Jacobian of output o with respect to the scale w of channel c is
``Σ_p x̂_{p,c} g_{o,p,c}`` and with respect to the shift b is ``Σ_p g_{o,p,c}``, summed over
the positions p that share the channel's parameters. Both are (n, O, C) per example,
small enough to contract as `Jacobian` terms. x̂ per layer:

- ``nn.LayerNorm``: ``(x − mean) / sqrt(var + eps)`` over the normalized trailing dims.
- ``nn.RMSNorm``: ``x / sqrt(mean(x²) + eps)`` over the normalized trailing dims.
- ``nn.GroupNorm``: as LayerNorm over each group of channels; channels on dim 1.
- ``nn.BatchNorm1d/2d/3d`` in eval mode: ``(x − running_mean) / sqrt(running_var + eps)``;
  without running statistics it normalizes by the batch's own, which couples the
  examples, and is refused.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ntkscope.kernels._rules._base import Jacobian, Rule, Term


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
            parts.append((g * self.normalized(a).reshape(n, 1, *shape)).sum(axis))
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
