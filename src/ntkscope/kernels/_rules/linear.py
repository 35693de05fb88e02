"""Dense layers ``h = s_w W a + s_b b`` at every position of their input.

Covers ``nn.Linear``, `ntkscope.models.Dense` (forward multipliers ``weight_scale``,
``bias_scale``) and a transposed-weight linear layer of GPT-2 style (weight (d_in, d_out),
``h = a W + b``), recognised by duck typing: a module named ``Conv1D`` with an ``nf``
attribute equal to its weight's second dimension. The weight's layout does not change the
Gram products. Inputs (n, ..., d_in): every leading position (sequence elements of an
(N, L, E) batch) is a position p of `Factors`.
"""

from __future__ import annotations

import torch
from torch import nn

from ntkscope.kernels._rules._base import Factors, Rule, Term, scaled_columns


class LinearRule(Rule):
    def terms(self, a: torch.Tensor, g: torch.Tensor) -> list[Term]:
        n, n_out = a.shape[0], g.shape[1]
        a = a.reshape(n, -1, a.shape[-1])
        scales = (
            getattr(self.module, "weight_scale", 1.0),
            getattr(self.module, "bias_scale", 1.0),
        )
        columns = scaled_columns(a, "weight" in self.trainable, "bias" in self.trainable, scales)
        return [Factors(columns, g.reshape(n, n_out, -1, g.shape[-1]))]


def is_transposed_linear(module: nn.Module) -> bool:
    """GPT-2's ``Conv1D``: a linear layer with weight (d_in, d_out) and ``nf`` = d_out."""
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and getattr(module, "nf", None) == weight.shape[1]
    )
