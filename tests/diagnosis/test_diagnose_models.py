"""`diagnose` on token, recurrent and attention models, and how factories take the seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import ntkscope as ns
from ntkscope.diagnosis.inputs import build
from tiny_transformers import tiny_transformer

TINY = dict(steps=6, n_train=24, n_test=12, probe=8, seeds=2, records=2)
VOCAB, LENGTH = 20, 6


def make_model(d_in=64, d_out=10):
    return nn.Sequential(nn.Linear(d_in, 16), nn.Tanh(), nn.Linear(16, d_out))


def test_factory_with_defaults_keeps_them_and_is_seeded():
    a, b, c = build(make_model, 0), build(make_model, 0), build(make_model, 1)
    assert a[0].in_features == 64 and a[2].out_features == 10
    assert torch.equal(a[0].weight, b[0].weight) and not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize(
    "factory",
    [
        lambda s: nn.Linear(s + 1, 1),  # one required positional parameter
        lambda width=1, seed=0: nn.Linear(seed + 1, width),  # by keyword, defaults kept
        lambda *, seed: nn.Linear(seed + 1, 1),  # keyword-only
    ],
)
def test_factory_receives_the_seed(factory):
    assert build(factory, 2).in_features == 3


def test_factory_that_cannot_take_the_seed_lists_the_accepted_forms():
    with pytest.raises(TypeError, match=r"model_factory: .*\(required parameters: a, b\).*make"):
        build(lambda a, b: nn.Linear(a, b), 0)


class TokenClassifier(nn.Module):
    """Embedding + LSTM, classifier on the last state."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, ids):
        return self.head(self.lstm(self.embed(ids))[0][:, -1])


class SequenceEncoder(nn.Module):
    """A 64-pixel digit read as 8 tokens of 8 features by a ``TransformerEncoderLayer``."""

    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.layer(x.view(len(x), 8, 8)).mean(1))


def _bert():
    return tiny_transformer("bert", VOCAB, LENGTH)


def _tokens(tmp_path):
    """A .npz of int64 token ids (N, L) and class labels: token data for `diagnose`."""
    g = np.random.default_rng(0)
    path = tmp_path / "tokens.npz"
    np.savez(path, x=g.integers(0, VOCAB, size=(40, LENGTH)), y=g.integers(0, 2, size=40))
    return path


@pytest.mark.parametrize("factory", [TokenClassifier, _bert], ids=["lstm", "bert"])
def test_diagnose_token_models_from_npz(tmp_path, factory):
    diagnosis = ns.diagnose(factory, _tokens(tmp_path), **TINY)
    assert diagnosis.verdict in set(ns.Verdict)
    assert diagnosis.settings["method"] in {m.value for m in ns.kernels.Method}
    assert np.isfinite(diagnosis.numbers["linear_rmse"])


@pytest.mark.parametrize(
    "factory",
    [
        # ~60 s on 2 cores: the fused attention has no forward AD, so every kernel and the
        # linearized network fall back to per-example products (slow, exact)
        pytest.param(SequenceEncoder, id="encoder", marks=pytest.mark.slow),
        pytest.param(make_model, id="defaults"),
    ],
)
def test_diagnose_attention_and_default_factories(factory):
    diagnosis = ns.diagnose(factory, "digits", **TINY)
    assert diagnosis.verdict in set(ns.Verdict)
    assert np.isfinite(diagnosis.numbers["kernel_change"])
