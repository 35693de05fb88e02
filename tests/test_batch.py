"""The batch helpers: every kind sliced, joined, moved and called alike; default outputs."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch

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
