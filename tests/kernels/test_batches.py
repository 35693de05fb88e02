"""eNTK of models called with token ids, tuples and dicts, against the brute-force reference.

Tolerance: float64 throughout; every method computes the same sums as the reference in a
different order, so they agree to ~1e-14 relative; 1e-10 leaves margin for long sums.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntkscope as ns
from reference import brute_force_ntk, relative_error

TOL = 1e-10
VOCAB, LENGTH, N = 11, 5, 4


class TokenModel(nn.Module):
    """Embedding + tanh + Linear read at the last position: ``model(ids)``, ids int64."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, input_ids, attention_mask=None):
        h = torch.tanh(self.embed(input_ids))
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        return self.head(h.mean(1))


class TwoInputs(nn.Module):
    """``model(features, ids)``: a float input and token ids; returns a tuple."""

    def __init__(self):
        super().__init__()
        self.tokens = TokenModel()
        self.dense = nn.Linear(4, 3)

    def forward(self, features, ids):
        return self.tokens(ids) * torch.tanh(self.dense(features)), ids


def _ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, LENGTH), generator=torch.Generator().manual_seed(seed))


def _batch(kind: str, n: int, seed: int):
    ids = _ids(n, seed)
    if kind == "ids":
        return ids
    if kind == "dict":
        mask = (torch.arange(LENGTH) < LENGTH - seed % 2).to(torch.int64).expand(n, -1)
        return {"input_ids": ids, "attention_mask": mask}
    features = torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return (features, ids)


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return (TwoInputs() if kind == "tuple" else TokenModel()).double()


@pytest.mark.parametrize("kind", ["ids", "dict", "tuple"])
@pytest.mark.parametrize("method", ["jacobian", "ntvp"])
@pytest.mark.parametrize("mode", ["full", "trace"])
def test_batches_match_reference(kind, method, mode):
    model = _model(kind)
    reference_output = (lambda out: out[0]) if kind == "tuple" else None
    x1, x2 = _batch(kind, N, 1), _batch(kind, N - 1, 2)
    for second, diagonal in [(None, False), (x2, False), (None, True)]:
        kernel = ns.empirical_ntk(model, x1, second, mode=mode, method=method, diagonal=diagonal)
        expected = brute_force_ntk(
            model, x1, second, mode=mode, diagonal=diagonal, output=reference_output
        )
        assert relative_error(kernel, expected) < TOL, (second is None, diagonal)


def test_output_selector_and_tiles():
    """``output`` picks what is differentiated; tiles of one example give the same kernel."""
    model, x = _model("ids"), _batch("dict", 5, 3)

    def select(out):
        return out[:, :2]

    kernel = ns.empirical_ntk(model, x, mode="full", output=select, memory_budget=20_000)
    expected = brute_force_ntk(model, x, mode="full", output=select)
    assert kernel.shape == (5, 5, 2, 2)
    assert relative_error(kernel, expected) < TOL


def test_params_replace_the_weights_for_dict_batches():
    """``params`` with a dict batch equals the kernel of a model holding those weights."""
    model, x = _model("ids"), _batch("dict", 4, 5)
    doubled = {name: 2 * p.detach() for name, p in model.named_parameters()}
    other = _model("ids")
    with torch.no_grad():
        for name, p in other.named_parameters():
            p.copy_(doubled[name])
    kernel = ns.empirical_ntk(model, x, params=doubled, method="jacobian")
    assert relative_error(kernel, brute_force_ntk(other, x)) < TOL
