"""Structured eNTK rules, one per supported layer type, and their registry.

Adding a layer type is adding a `Rule` subclass in its own module and an entry here.
"""

from __future__ import annotations

from torch import nn

from ntkscope.kernels._rules._base import Factors, Jacobian, Rule, Term, UnsupportedModel
from ntkscope.kernels._rules.conv import ConvRule, ConvTransposeRule
from ntkscope.kernels._rules.embedding import EmbeddingRule
from ntkscope.kernels._rules.linear import LinearRule, is_transposed_linear
from ntkscope.kernels._rules.norm import BatchNormRule, GroupNormRule, LayerNormRule, RMSNormRule
from ntkscope.models.layers import Conv, Dense

RULES: dict[type[nn.Module], type[Rule]] = {
    nn.Linear: LinearRule,
    Dense: LinearRule,
    nn.Conv1d: ConvRule,
    nn.Conv2d: ConvRule,
    nn.Conv3d: ConvRule,
    Conv: ConvRule,
    nn.ConvTranspose1d: ConvTransposeRule,
    nn.ConvTranspose2d: ConvTransposeRule,
    nn.ConvTranspose3d: ConvTransposeRule,
    nn.Embedding: EmbeddingRule,
    nn.LayerNorm: LayerNormRule,
    nn.RMSNorm: RMSNormRule,
    nn.GroupNorm: GroupNormRule,
    nn.BatchNorm1d: BatchNormRule,
    nn.BatchNorm2d: BatchNormRule,
    nn.BatchNorm3d: BatchNormRule,
}
"""Rules by exact module type (a subclass may change ``forward``, so it is not matched)."""


def rule_type(module: nn.Module) -> type[Rule] | None:
    """The rule for ``module``: by its exact type, or by duck typing; None if unsupported."""
    if type(module) in RULES:
        return RULES[type(module)]
    return LinearRule if is_transposed_linear(module) else None


__all__ = ["Factors", "Jacobian", "Rule", "Term", "UnsupportedModel", "rule_type"]
