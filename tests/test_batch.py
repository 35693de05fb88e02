"""The batch helpers: every kind sliced, joined, moved and called alike; default outputs."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import ntkscope as ns
from ntkscope import _batch

IDS = torch.arange(12).view(4, 3)
FEATURES = torch.randn(4, 2, dtype=torch.float64)
KINDS = [IDS, (FEATURES, IDS), {"input_ids": IDS, "features": FEATURES}]


@pytest.mark.parametrize("batch", KINDS, ids=["tensor", "tuple", "dict"])
def test_take_concat_and_to_keep_the_kind(batch):
    halves = [_batch.take(batch, slice(0, 1)), _batch.take(batch, torch.tensor([1, 2, 3]))]
    joined = _batch.concat(halves)
    assert type(joined) is type(batch)
    for a, b in zip(_batch.tensors(joined), _batch.tensors(batch), strict=True):
        assert torch.equal(a, b)
    moved = _batch.to(batch, "cpu", torch.float32)
    dtypes = [t.dtype for t in _batch.tensors(moved)]
    assert torch.int64 in dtypes and torch.float64 not in dtypes  # ids stay integers
    assert _batch.size(batch) == 4


def test_call_spreads_tuples_and_mappings():
    def model(*args, **kwargs):
        return args, kwargs

    assert _batch.call(model, IDS) == ((IDS,), {})
    assert _batch.call(model, (IDS, FEATURES))[0] == (IDS, FEATURES)
    assert _batch.call(model, {"input_ids": IDS})[1] == {"input_ids": IDS}


def test_default_output():
    logits = torch.ones(2, 3)
    assert _batch.default_output(logits) is logits
    assert _batch.default_output((logits, "cache")) is logits
    assert _batch.default_output(OrderedDict(loss=None, logits=logits)) is logits
    assert _batch.default_output(SimpleNamespace(logits=logits)) is logits
    assert _batch.default_output({"hidden": logits}) is logits
    with pytest.raises(TypeError, match="output: the model returns int"):
        _batch.default_output(3)


@dataclass
class ScoreAndAux:
    """A model output holding tensors but no ``logits``."""

    score: torch.Tensor
    aux: torch.Tensor


LOOKED_UP = (
    "; without output=, ntkscope differentiates a tensor as it is, else a 'logits' attribute "
    "or key holding a tensor, else the first tensor of a tuple, list or mapping, and found "
    "none; pass output=callable giving the (N, ...) tensor to differentiate"
)


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (
            ScoreAndAux(FEATURES, IDS),
            "ScoreAndAux (tensor attributes: score, aux)"
            + LOOKED_UP
            + ", e.g. output=lambda out: out.score",
        ),
        ({"loss": 0.5, "name": "x"}, "dict (keys: 'loss', 'name')" + LOOKED_UP),
        (SimpleNamespace(), "SimpleNamespace" + LOOKED_UP),
    ],
    ids=["dataclass", "dict-without-tensors", "plain-object"],
)
def test_an_output_with_nothing_to_differentiate_says_what_is_looked_up(out, message):
    """Regression (u3): a dataclass of tensors without ``logits`` was said to hold "no
    logits or tensor"."""
    with pytest.raises(TypeError, match=re.escape("output: the model returns " + message)):
        _batch.default_output(out)


def test_the_message_reaches_the_user_of_empirical_ntk():
    class TwoHeads(nn.Linear):
        def forward(self, x):
            return ScoreAndAux(super().forward(x), x)

    with pytest.raises(TypeError, match=r"returns ScoreAndAux .* out\.score$"):
        ns.empirical_ntk(TwoHeads(2, 3).double(), FEATURES)
