"""`auto` on the models people train today, against the brute-force reference.

Token-id and dict models (BERT- and GPT-2-style from Hugging Face configs, random
weights), recurrent and attention layers, and a model with an unused head; each in full
and trace mode, with x2 and without, and the diagonal. Tolerance: float64, 1e-10 relative
Frobenius (every method sums the same products as the reference in another order, ~1e-14).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import ntkscope as ns
from reference import brute_force_ntk, relative_error
from tiny_transformers import tiny_transformer

TOL = 1e-10
VOCAB, LENGTH = 12, 6


def _bert():
    return tiny_transformer("bert", VOCAB, LENGTH)


def _gpt2():
    return tiny_transformer("gpt2", VOCAB, LENGTH)


class Recurrent(nn.Module):
    """Embedding (of sparse gradient or not), LSTM or GRU, classifier on the last state:
    ``model(ids)``."""

    def __init__(self, cell: type[nn.RNNBase], sparse: bool = False):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 6, sparse=sparse)
        self.rnn = cell(6, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, ids):
        return self.head(self.rnn(self.embed(ids))[0][:, -1])


class Attention(nn.Module):
    """``nn.MultiheadAttention`` (or a ``TransformerEncoderLayer``) on (N, L, 8) inputs."""

    def __init__(self, encoder: bool):
        super().__init__()
        self.encoder = encoder
        self.layer = (
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
            if encoder
            else nn.MultiheadAttention(8, 2, batch_first=True)
        )
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = self.layer(x) if self.encoder else self.layer(x, x, x)[0]
        return self.head(h.mean(1))


class TokenMean(nn.Module):
    """Embedding of sparse gradient, mean over the sequence, tanh, classifier:
    ``model(ids)``. ``kind``: "module" (``nn.Embedding(sparse=True)``), "bag"
    (``nn.EmbeddingBag(mode="mean", sparse=True)``) or "functional" (a weight that the
    forward passes to ``F.embedding(..., sparse=True)`` itself)."""

    def __init__(self, kind: str = "module"):
        super().__init__()
        self.kind, self.sparse = kind, True
        if kind == "functional":
            self.weight = nn.Parameter(torch.randn(VOCAB, 6))
        else:
            layer = nn.EmbeddingBag if kind == "bag" else nn.Embedding
            self.embed = layer(VOCAB, 6, sparse=True)
        self.head = nn.Linear(6, 2)

    def forward(self, ids):
        if self.kind == "functional":
            mean = nn.functional.embedding(ids, self.weight, sparse=self.sparse).mean(1)
        else:
            mean = self.embed(ids) if self.kind == "bag" else self.embed(ids).mean(1)
        return self.head(torch.tanh(mean))


class UnusedHead(nn.Module):
    """A trainable auxiliary head that the forward pass never calls (zero gradient)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.aux = nn.Linear(3, 5)

    def forward(self, x):
        return torch.tanh(self.body(x))


def _ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, LENGTH), generator=torch.Generator().manual_seed(seed))


def _dict(n: int, seed: int) -> dict[str, torch.Tensor]:
    mask = torch.ones(n, LENGTH, dtype=torch.int64)
    mask[0, -2:] = 0  # one padded example
    return {"input_ids": _ids(n, seed), "attention_mask": mask}


def _floats(*shape):
    def make(n: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(n, *shape, dtype=torch.float64, generator=generator)

    return make


def _last_logits(out):
    return out.logits[:, -1]


CASES = {  # name: (model factory, batch factory, output selector for both)
    "bert-ids": (_bert, _ids, None),
    "bert-dict": (_bert, _dict, None),
    "gpt2-ids": (_gpt2, _ids, _last_logits),
    "gpt2-dict": (_gpt2, _dict, _last_logits),
    "lstm": (lambda: Recurrent(nn.LSTM), _ids, None),
    "gru": (lambda: Recurrent(nn.GRU), _ids, None),
    "multihead-attention": (lambda: Attention(encoder=False), _floats(LENGTH, 8), None),
    "transformer-encoder-layer": (lambda: Attention(encoder=True), _floats(LENGTH, 8), None),
    "unused-head": (UnusedHead, _floats(4), None),
}


@pytest.mark.parametrize("mode", ["full", "trace"])
@pytest.mark.parametrize("case", list(CASES))
def test_auto_matches_reference(case, mode):
    make_model, make_batch, output = CASES[case]
    torch.manual_seed(0)
    model = make_model().double().eval()
    reference_output = output or (lambda out: out if isinstance(out, torch.Tensor) else out.logits)
    x1, x2 = make_batch(3, 1), make_batch(2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RNN weights not contiguous under vmap, etc.
        for second, diagonal in [(None, False), (x2, False), (None, True)]:
            kernel = ns.empirical_ntk(
                model, x1, second, mode=mode, diagonal=diagonal, output=output
            )
            expected = brute_force_ntk(
                model, x1, second, mode=mode, diagonal=diagonal, output=reference_output
            )
            assert relative_error(kernel, expected) < TOL, (second is None, diagonal)


@pytest.mark.parametrize(
    ("case", "dtype", "method"),
    [
        ("gru", torch.float64, "autograd"),  # GRU has no vmap rule
        ("gru", torch.float32, "autograd"),  # in float32 neither (README says so)
        ("lstm", torch.float64, "autograd"),  # nor LSTM in float64
        ("lstm", torch.float32, "jacobian"),  # vmap works, forward-mode AD does not
        ("bert-dict", torch.float64, "structured"),  # Embedding, LayerNorm, Linear only
        ("transformer-encoder-layer", torch.float32, "jacobian"),  # fused kernel: no jvp
    ],
)
def test_auto_reports_the_method_that_runs(case, dtype, method):
    make_model, make_batch, output = CASES[case]
    torch.manual_seed(0)
    model = make_model().to(dtype).eval()
    x = make_batch(3, 1)
    x = x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ns.kernels.resolve_method(model, x, output=output) == method


def test_gpt2_state_dict_with_its_tied_head_as_params():
    """GPT-2 ties ``lm_head.weight`` to ``transformer.wte.weight``; its ``state_dict()``
    names both, with one value, and is accepted as ``params``: the eNTK is that of the model
    holding those values (brute force, float64, 1e-10)."""
    torch.manual_seed(0)
    model = _gpt2().double().eval()
    torch.manual_seed(1)
    other = _gpt2().double().eval()
    assert other.lm_head.weight is other.transformer.wte.weight
    x = _ids(3, 0)
    kernel = ns.empirical_ntk(model, x, mode="full", params=other.state_dict(), output=_last_logits)
    expected = brute_force_ntk(other, x, mode="full", output=_last_logits)
    assert relative_error(kernel, expected) < TOL


@pytest.mark.parametrize("method", ["jacobian", "ntvp", "autograd"])
def test_unused_parameters_have_zero_gradient(method):
    """Every generic method handles a parameter the forward never uses (float64, 1e-10)."""
    torch.manual_seed(0)
    model, x = UnusedHead().double(), _floats(4)(4, 0)
    kernel = ns.empirical_ntk(model, x, mode="full", method=method)
    assert relative_error(kernel, brute_force_ntk(model, x, mode="full")) < TOL


@pytest.mark.parametrize(
    ("method", "match"),
    [
        (
            "ntvp",
            r"method='ntvp': RuntimeError: .*; use method='auto' \(it runs 'autograd' here\)$",
        ),
        ("structured", r"method='structured': layer '(embed|rnn)'"),
    ],
)
def test_an_explicit_method_that_cannot_run_says_why(method, match):
    torch.manual_seed(0)
    model = Recurrent(nn.GRU).double()
    with warnings.catch_warnings(), pytest.raises(ValueError, match=match):
        warnings.simplefilter("ignore")
        ns.empirical_ntk(model, _ids(3, 0), method=method)


SPARSE = {  # name: (model factory, the methods that run on it; auto runs the first)
    "gru": (lambda: Recurrent(nn.GRU, sparse=True), ["autograd"]),  # GRU: no vmap rule
    "embedding": (TokenMean, ["structured", "jacobian", "ntvp", "autograd"]),
    "embedding-bag": (lambda: TokenMean("bag"), ["jacobian", "autograd"]),  # no forward mode
    "functional": (lambda: TokenMean("functional"), ["autograd"]),  # vmap meets the sparse
}


def _dense_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (same weights, same function) whose embeddings' gradients are
    dense, which the brute-force reference needs (a sparse gradient has no reshape)."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if hasattr(module, "sparse"):
            module.sparse = False
    return twin


@pytest.mark.parametrize("case", list(SPARSE))
def test_every_method_that_runs_differentiates_a_sparse_embedding(case):
    """An embedding of sparse gradient (``nn.Embedding(sparse=True)`` before a GRU or a mean,
    ``nn.EmbeddingBag(sparse=True)``, ``F.embedding(..., sparse=True)`` in the forward):
    every method that runs on the model, and auto, which says which it ran, equal the brute
    force of its dense twin (float64, 1e-10, full mode, with x2 and without)."""
    make_model, methods = SPARSE[case]
    torch.manual_seed(0)
    model = make_model().double().eval()
    x1, x2 = _ids(3, 1), _ids(2, 2)
    model(x1).sum().backward()
    assert any(p.grad.is_sparse for p in model.parameters())  # the case the test is about
    twin = _dense_twin(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GRU weights not contiguous under vmap
        assert ns.kernels.resolve_method(model, x1) == methods[0]
        for second in (None, x2):
            expected = brute_force_ntk(twin, x1, second, mode="full")
            for method in ["auto", *methods]:
                kernel = ns.empirical_ntk(model, x1, second, mode="full", method=method)
                assert relative_error(kernel, expected) < TOL, (method, second is None)
