"""The structured eNTK of every supported layer type against the brute-force reference.

float64 throughout. Tolerance 1e-10 relative Frobenius: the structured path computes the
same sums of products as the reference (one backward pass per example and output) in a
different order, so the two agree to ~1e-14 relative; any wrong term (a missing position,
channel, group, padding element or token match) changes the kernel by O(1).
Each case runs in full and trace mode, with x2 and without, and the diagonal.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ntkscope as ns
from ntkscope.kernels import _forms, _structured
from ntkscope.kernels._functional import FunctionalModel
from ntkscope.kernels._structured import StructuredStrategy
from reference import brute_force_jacobian, relative_error
from tiny_transformers import tiny_transformer

TOL = 1e-10


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """float64, every parameter and running statistic drawn at random (norm scales away
    from 1, shifts away from 0), eval mode: a test that cannot pass by a default value."""
    generator = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn(b.shape, generator=generator, dtype=b.dtype))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=generator, dtype=b.dtype) + 0.5)
    return model


def assert_structured_matches(model, x1, x2, *, output=None):
    """method='structured' equals the reference: full/trace, x2 or not, and the diagonal."""
    j1, j2 = brute_force_jacobian(model, x1, output), brute_force_jacobian(model, x2, output)
    full = {
        "x1": torch.einsum("nap,mbp->nmab", j1, j1),
        "x2": torch.einsum("nap,mbp->nmab", j1, j2),
    }
    for mode in ("full", "trace"):
        for second, expected in ((None, full["x1"]), (x2, full["x2"])):
            got = ns.empirical_ntk(model, x1, second, mode=mode, method="structured", output=output)
            reference = expected if mode == "full" else expected.diagonal(0, 2, 3).mean(-1)
            assert relative_error(got, reference) <= TOL, (mode, second is None)
        got = ns.empirical_ntk(
            model, x1, mode=mode, diagonal=True, method="structured", output=output
        )
        reference = torch.stack([full["x1"][n, n] for n in range(len(j1))])
        reference = reference if mode == "full" else reference.diagonal(0, 1, 2).mean(-1)
        assert relative_error(got, reference) <= TOL, (mode, "diagonal")


def check_on_random_inputs(model: nn.Module, shape: tuple[int, ...]) -> None:
    """`assert_structured_matches` for the randomized model on 3 and 2 inputs of ``shape``."""
    x1, x2 = torch.randn(3, *shape).double(), torch.randn(2, *shape).double()
    assert_structured_matches(randomize(model), x1, x2)


class ResNet(nn.Module):
    """Conv–BatchNorm stem, a residual block, a strided block with a 1×1 shortcut."""

    def __init__(self, width: int = 4, n_out: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        )
        self.block = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width)
        )
        self.shortcut = nn.Conv2d(width, 2 * width, 1, stride=2)
        self.head = nn.Linear(2 * width, n_out)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.block(h))
        h = torch.relu(self.down(h) + self.shortcut(h))
        return self.head(h.mean((2, 3)))


def test_resnet_with_batchnorm_in_eval_mode():
    model = randomize(ResNet())
    x1, x2 = torch.randn(3, 3, 6, 6).double(), torch.randn(2, 3, 6, 6).double()
    assert_structured_matches(model, x1, x2)
    assert ns.kernels.resolve_method(model, x1, mode="full") == "structured"


@pytest.mark.parametrize("threads", [1, 2])
def test_symmetric_kernel_computed_by_blocks_of_examples(threads, monkeypatch):
    """x2 = x1 with 37 examples: row blocks of 8, 8, 8, 8 and 5, each against the columns
    from its first on, mirrored (at any cost: this tile is far below the size at which
    blocks pay), one block per thread with 2 torch threads. Every contraction
    form runs: per-example Jacobians (first conv, BatchNorm; their Gram in column chunks of
    4 kB), positional (the 2×2 conv with wide inputs), outer (the readout). With 2 threads
    the blocks are taken by whichever thread is free, each computed on one torch thread:
    two runs give the same kernel to the bit."""
    monkeypatch.setattr(_structured, "_SYMMETRIC_MIN_MACS", 0)
    monkeypatch.setattr(_forms, "GRAM_CHUNK_BYTES", 4096)
    run, workers = _structured.run_jobs, []
    monkeypatch.setattr(_structured, "run_jobs", lambda jobs, w: workers.append(w) or run(jobs, w))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_blocks_of_examples()
        assert set(workers) == {threads} and torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def _check_blocks_of_examples() -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.Tanh(),
        nn.Conv2d(16, 16, 2, stride=2),  # wide inputs: positional 3.9× cheaper than Jacobian
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(16 * 4, 3),
    )
    model = randomize(model)
    x1, x2 = torch.randn(37, 2, 4, 4).double(), torch.randn(2, 2, 4, 4).double()
    forms = StructuredStrategy(FunctionalModel(model, None, None), 3, full=True).features(x1)
    assert forms.outer and forms.positional and forms.jacobians
    assert_structured_matches(model, x1, x2)
    for mode in ("full", "trace"):
        first, again = (ns.empirical_ntk(model, x1, mode=mode, method="structured") for _ in "12")
        assert torch.equal(first, again), mode


def test_cnn_with_groupnorm_and_batchnorm1d():
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3),
        nn.GroupNorm(3, 6),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(6 * 8, 5),
        nn.BatchNorm1d(5),
        nn.Tanh(),
        nn.Linear(5, 2),
    )
    check_on_random_inputs(model, (2, 4, 6))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_grouped_and_depthwise_conv2d_with_every_padding_mode(padding_mode):
    model = nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1, groups=2, padding_mode=padding_mode),
        nn.Tanh(),
        nn.Conv2d(6, 6, 3, stride=2, padding=2, dilation=2, groups=6, padding_mode=padding_mode),
        nn.Tanh(),
        nn.Conv2d(6, 4, (2, 3), padding="same", groups=2, padding_mode=padding_mode, bias=False),
        nn.Flatten(),
        nn.Linear(4 * 9, 2),
    )
    check_on_random_inputs(model, (4, 5, 6))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv1d_on_sequences(padding_mode):
    model = nn.Sequential(
        nn.Conv1d(3, 4, 3, padding=1, padding_mode=padding_mode),
        nn.Tanh(),
        nn.Conv1d(4, 4, 2, stride=2, groups=2, padding="valid"),
        nn.Tanh(),
        nn.Conv1d(4, 2, 4, padding="same", dilation=2, padding_mode=padding_mode),
        nn.Flatten(),
    )
    check_on_random_inputs(model, (3, 8))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
def test_conv3d_on_volumes(padding_mode):
    """Three spatial dims: anisotropic kernel, stride, dilation, groups, every padding kind."""
    model = nn.Sequential(
        nn.Conv3d(2, 4, (3, 2, 3), padding=1, padding_mode=padding_mode),
        nn.Tanh(),
        nn.Conv3d(4, 4, 2, stride=(1, 2, 1), dilation=(2, 1, 1), groups=2, bias=False),
        nn.Tanh(),
        nn.Conv3d(4, 1, 3, padding="same", padding_mode=padding_mode),
        nn.Flatten(),
    )
    check_on_random_inputs(model, (2, 4, 4, 3))


def test_conv_transpose3d():
    model = nn.Sequential(
        nn.ConvTranspose3d(2, 2, (2, 3, 2), stride=(2, 1, 2), padding=(0, 1, 1), groups=2),
        nn.Tanh(),
        nn.AvgPool3d(2),
        nn.Flatten(),
    )
    check_on_random_inputs(model, (2, 2, 3, 3))


def test_conv_transpose():
    model = nn.Sequential(
        nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
        nn.Tanh(),
        nn.ConvTranspose2d(4, 2, (2, 3), stride=(1, 2), dilation=2, bias=False),
        nn.Flatten(2),
        nn.Tanh(),
        nn.ConvTranspose1d(2, 1, 3, stride=3, padding=2),
        nn.Flatten(),
        nn.LazyLinear(2),
    )
    x1, x2 = torch.randn(3, 2, 3, 3), torch.randn(2, 2, 3, 3)
    model(x1)  # materialize the lazy readout
    model, x1, x2 = randomize(model), x1.double(), x2.double()
    assert_structured_matches(model, x1, x2)


class SequenceModel(nn.Module):
    """Linear, LayerNorm and RMSNorm applied to (N, L, E) sequences."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(3, 6)
        self.layer_norm = nn.LayerNorm(6)
        self.rms_norm = nn.RMSNorm(6)
        self.plane_norm = nn.LayerNorm((4, 6), bias=False)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.tanh(self.layer_norm(self.up(x)))
        h = self.plane_norm(torch.tanh(self.rms_norm(h)))
        return self.head(h)  # (N, L, 2): O = 2L outputs


def test_layer_and_rms_norm_on_sequences():
    check_on_random_inputs(SequenceModel(), (4, 3))


class Conv1D(nn.Module):
    """GPT-2's transposed linear layer, written here: weight (d_in, d_out), ``nf`` = d_out."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.randn(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(
            *x.shape[:-1], self.nf
        )


class TokenEncoder(nn.Module):
    """Token and (1, L) position embeddings, LayerNorm, transposed-linear MLP, mean readout."""

    def __init__(self, linear=Conv1D, vocab: int = 7, length: int = 5, width: int = 6):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width, padding_idx=0)
        self.positions = nn.Embedding(length, width)
        self.norm = nn.LayerNorm(width)
        self.mlp = linear(8, width)
        self.head = nn.Linear(8, 2)
        self.register_buffer("position_ids", torch.arange(length)[None])

    def forward(self, ids):
        h = self.norm(self.tokens(ids) + self.positions(self.position_ids))
        return self.head(torch.tanh(self.mlp(h)).mean(1))


def token_batches(vocab: int = 7, length: int = 5):
    generator = torch.Generator().manual_seed(0)
    x1 = torch.randint(0, vocab, (4, length), generator=generator)  # id 0 is padding_idx
    x1[0, :2] = torch.tensor([3, 3])  # repeated tokens within an example
    return x1, torch.randint(0, vocab, (3, length), generator=generator)


def test_embedding_with_padding_and_broadcast_positions_and_duck_typed_conv1d():
    model = randomize(TokenEncoder())
    x1, x2 = token_batches()
    assert_structured_matches(model, x1, x2)
    assert ns.kernels.resolve_method(model, x1, mode="full") == "structured"


def test_transformers_conv1d_is_recognised():
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    model = randomize(TokenEncoder(linear=pytorch_utils.Conv1D))
    x1, x2 = token_batches()
    assert_structured_matches(model, x1, x2)


def test_embedding_options_the_rule_cannot_factorize_fall_back():
    for options in (dict(max_norm=1.0), dict(scale_grad_by_freq=True)):
        model = randomize(
            nn.Sequential(nn.Embedding(5, 3, **options), nn.Flatten(), nn.Linear(6, 2))
        )
        x = torch.tensor([[1, 2], [3, 1], [4, 4]])
        with pytest.raises(ValueError, match=r"method='structured': layer '0' \(Embedding\)"):
            ns.empirical_ntk(model, x, method="structured")
        assert ns.kernels.resolve_method(model, x) != "structured"


class UnusedHead(nn.Module):
    """An auxiliary head (and an unsupported trainable layer) that forward never calls."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(3, 4), nn.Linear(4, 2)
        self.auxiliary = nn.Linear(4, 5)
        self.unused_rnn = nn.GRU(4, 4)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


def test_never_called_layers_contribute_nothing():
    model = randomize(UnusedHead())
    x1, x2 = torch.randn(4, 3).double(), torch.randn(2, 3).double()
    assert_structured_matches(model, x1, x2)
    assert ns.kernels.resolve_method(model, x1) == "structured"


@settings(max_examples=12)
@given(
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    padding=st.integers(0, 2),
    groups=st.sampled_from([1, 2]),
    transposed=st.booleans(),
    seed=st.integers(0, 100),
)
def test_random_conv2d_geometries(kernel, stride, dilation, padding, groups, transposed, seed):
    if transposed:
        padding = min(padding, dilation * (kernel - 1))  # a valid transposed padding
        layer = nn.ConvTranspose2d(2, 4, kernel, stride, padding, dilation=dilation, groups=groups)
    else:
        layer = nn.Conv2d(2, 4, kernel, stride, padding, dilation=dilation, groups=groups)
    model = nn.Sequential(layer, nn.Tanh(), nn.Flatten(1), nn.LazyLinear(2))
    x1, x2 = torch.randn(2, 2, 6, 5), torch.randn(2, 2, 6, 5)
    model(x1)  # materialize the lazy readout
    model, x1, x2 = randomize(model, seed), x1.double(), x2.double()
    assert_structured_matches(model, x1, x2)


def test_bert_encoder_from_transformers_takes_the_structured_path():
    """Embedding, LayerNorm, Linear and parameter-free attention; called with a dict."""
    model = randomize(tiny_transformer("bert", vocab=50, length=8))
    ids = torch.randint(0, 50, (5, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    x1 = {"input_ids": ids[:3], "attention_mask": mask[:3]}
    x2 = {"input_ids": ids[3:], "attention_mask": mask[3:]}
    assert_structured_matches(model, x1, x2, output=lambda out: out.logits)
    assert ns.kernels.resolve_method(model, x1, mode="full") == "structured"


def test_gpt2_decoder_from_transformers_takes_the_structured_path():
    """Token and position embeddings, LayerNorm, GPT-2's Conv1D; the last token's logits."""
    model = tiny_transformer("gpt2", vocab=50, length=8)
    model.lm_head = nn.Linear(16, 3)  # a small untied head: O = 3
    model = randomize(model)
    ids = torch.randint(0, 50, (5, 6), generator=torch.Generator().manual_seed(1))
    last = lambda out: out.logits[:, -1]  # noqa: E731
    assert_structured_matches(model, ids[:3], ids[3:], output=last)
    assert ns.kernels.resolve_method(model, ids[:3], mode="full", output=last) == "structured"


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_rule_input_gradients_inside_the_backward_passes(dims, monkeypatch):
    """A strided pointwise convolution and BatchNorm after another layer: their backward is
    the rules' (`_structured._Probed`, counted: 2 layers per forward pass), the kernel the
    reference's."""
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    model = nn.Sequential(
        conv(2, 3, 3, padding=1), nn.Tanh(), conv(3, 4, 1, stride=2), norm(4), nn.Tanh()
    )
    model.append(nn.Flatten()).append(nn.LazyLinear(2))
    shape = (2, *[5] * dims)
    model(torch.randn(1, *shape))  # materialize the lazy readout
    calls = []
    apply = _structured._Probed.apply
    monkeypatch.setattr(_structured._Probed, "apply", lambda *a: calls.append(1) or apply(*a))
    check_on_random_inputs(model, shape)
    assert calls and len(calls) % 2 == 0
