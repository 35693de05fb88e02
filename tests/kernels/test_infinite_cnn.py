"""Infinite-width CNN kernels against a dense reference, the MLP case and wide networks.

The dense reference runs the recursion of `ntkscope.kernels.infinite_cnn` on one joint
covariance over (image, position) pairs of all inputs, with the convolution, pooling and
readout written as explicit matrices: Σ ↦ σ_w²/k² Σ_δ S_δ Σ S_δᵀ + σ_b² with S_δ the
zero-padded shift by δ, Σ ↦ A Σ Aᵀ with A the 2×2 averaging matrix, and the readout as
block means (GAP) or block traces (flatten). Its activation step reads every variance
straight off the joint matrix's diagonal.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ntkscope as ns
from ntkscope.kernels import infinite_cnn
from ntkscope.kernels.dual import dual
from ntkscope.kernels.infinite import infinite_kernels
from ntkscope.kernels.infinite_cnn import infinite_cnn_kernels
from reference import relative_error

# Same arithmetic in a different order (sums over offsets and windows): rounding only.
EXACT = 1e-12


def images(n: int = 3, c: int = 2, h: int = 4, w: int | None = None, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, h if w is None else w, generator=generator, dtype=torch.float64)


def shift(h: int, w: int, dy: int, dx: int) -> torch.Tensor:
    """S_δ over flattened positions: (S v)[p] = v[p + δ], zero outside the image."""
    s = torch.zeros(h * w, h * w, dtype=torch.float64)
    for i, j in itertools.product(range(h), range(w)):
        if 0 <= i + dy < h and 0 <= j + dx < w:
            s[i * w + j, (i + dy) * w + j + dx] = 1.0
    return s


def average(h: int, w: int) -> torch.Tensor:
    """A: (h/2 · w/2, h · w), the mean over each 2×2 window."""
    a = torch.zeros(h * w // 4, h * w, dtype=torch.float64)
    for i, j in itertools.product(range(h), range(w)):
        a[(i // 2) * (w // 2) + j // 2, i * w + j] = 0.25
    return a


def dense_reference(
    x,
    *,
    depth,
    activation="relu",
    sigma_w=2**0.5,
    sigma_b=0.0,
    kernel_size=3,
    pool_after=None,
    readout="gap",
):
    """(NNGP, NTK) of all pairs of images in x from the joint (N·HW, N·HW) covariance."""
    n, c, h, w = x.shape
    pools = range(depth - 1) if pool_after is None else pool_after
    flat = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    nngp, ntk = flat @ flat.T / c, torch.zeros(n * h * w, n * h * w, dtype=torch.float64)
    eye, r = torch.eye(n, dtype=torch.float64), kernel_size // 2
    for block in range(depth):
        offsets = itertools.product(range(-r, r + 1), repeat=2)
        shifts = [torch.kron(eye, shift(h, w, dy, dx)) for dy, dx in offsets]
        nngp = sigma_w**2 / kernel_size**2 * sum(s @ nngp @ s.T for s in shifts) + sigma_b**2
        ntk = nngp + sigma_w**2 / kernel_size**2 * sum(s @ ntk @ s.T for s in shifts)
        q = nngp.diagonal()
        e_ff, e_dd = dual(activation, q[:, None], q[None, :], nngp)
        nngp, ntk = e_ff, ntk * e_dd
        if block in pools:
            a = torch.kron(eye, average(h, w))
            nngp, ntk, h, w = a @ nngp @ a.T, a @ ntk @ a.T, h // 2, w // 2
    blocks = [t.reshape(n, h * w, n, h * w) for t in (nngp, ntk)]
    if readout == "gap":
        means = [t.mean((1, 3)) for t in blocks]
    else:
        means = [t.diagonal(dim1=1, dim2=3).mean(-1) for t in blocks]
    out = sigma_w**2 * means[0] + sigma_b**2
    return out, out + sigma_w**2 * means[1]


CASES = [
    dict(depth=1),
    dict(depth=2, pool_after=[0], sigma_b=0.4),
    dict(depth=3, activation="erf", sigma_w=1.3, sigma_b=0.2, pool_after=[0, 1]),
    dict(depth=2, kernel_size=5, pool_after=[], sigma_b=0.1),
    dict(depth=2, activation="tanh", sigma_w=1.1, pool_after=[0]),
    dict(depth=2, readout="flatten", pool_after=[]),  # positions p = p' only
    dict(depth=2, readout="flatten", pool_after=[1], kernel_size=1, sigma_b=0.3),
    dict(depth=3, activation="identity", readout="flatten", sigma_w=0.9),
]


@pytest.mark.parametrize("case", CASES)
def test_matches_dense_reference(case):
    # x2 = x: every entry (x, x') computed in the reference's orientation. (With x2 = None
    # the lower triangle mirrors (x', x), which the 2-D fallback rule of numerical duals
    # matches only to its accuracy: it is not symmetric in (q1, q2).)
    x = images(n=3, h=4)
    for got, expected in zip(
        infinite_cnn_kernels(x, x, **case), dense_reference(x, **case), strict=True
    ):
        assert got.dtype == torch.float64 and got.shape == (3, 3)
        assert relative_error(got, expected) <= EXACT, relative_error(got, expected)


def test_rectangular_images_and_x2():
    x1, x2 = images(n=2, h=4, w=8), images(n=3, h=4, w=8, seed=1)
    case = dict(depth=2, pool_after=[0], activation="erf", sigma_b=0.2)
    both = dense_reference(torch.cat([x1, x2]), **case)
    for got, expected in zip(infinite_cnn_kernels(x1, x2, **case), both, strict=True):
        assert relative_error(got, expected[:2, 2:]) <= EXACT


@pytest.mark.parametrize("activation", ["relu", "erf", "tanh"])
def test_one_pixel_cnn_is_the_mlp(activation):
    # 1×1 images, 1×1 filters, no pooling: every layer is a dense layer on the channels,
    # GAP and flatten are the identity, so the kernels are the MLP's of the same depth.
    x = images(n=5, c=3, h=1)
    kwargs = dict(activation=activation, sigma_w=1.2, sigma_b=0.3)
    expected = infinite_kernels(x.flatten(1), depth=3, **kwargs)
    for readout in ("gap", "flatten"):
        got = infinite_cnn_kernels(
            x, depth=3, kernel_size=1, pool_after=[], readout=readout, **kwargs
        )
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=EXACT, atol=0)


@pytest.mark.parametrize("case", CASES[:2] + CASES[5:7])
def test_diagonal_symmetry_and_x2(case):
    x = images(n=4, h=4)
    full = infinite_cnn_kernels(x, **case)
    diagonal = infinite_cnn_kernels(x, diagonal=True, **case)
    given_x2 = infinite_cnn_kernels(x, x.clone(), **case)
    for f, d, g in zip(full, diagonal, given_x2, strict=True):
        assert torch.equal(f, f.T)  # mirrored tiles
        assert torch.equal(f.diagonal(), d)  # written from the single-image run
        # x2 given computes the lower triangle too: (x', x) against the mirrored (x, x').
        torch.testing.assert_close(g, f, rtol=EXACT, atol=0)


@pytest.mark.parametrize("square", [True, False])
def test_blocked_equals_unblocked(square, monkeypatch):
    x1, x2 = images(n=4, h=4), (None if square else images(n=3, h=4, seed=1))
    case = dict(depth=2, pool_after=[0], sigma_b=0.2)
    whole = infinite_cnn_kernels(x1, x2, memory_budget="1GB", **case)
    tiles = []
    tile = infinite_cnn._Recursion.tile
    monkeypatch.setattr(infinite_cnn._Recursion, "tile", lambda *a: tiles.append(1) or tile(*a))
    blocked = infinite_cnn_kernels(x1, x2, memory_budget=1, **case)
    # One pair of images per tile: the 10 tiles on and above the diagonal, or 4 × 3.
    assert len(tiles) == (10 if square else 12)
    for b, w in zip(blocked, whole, strict=True):
        torch.testing.assert_close(b, w, rtol=EXACT, atol=0)


@st.composite
def architectures(draw):
    depth = draw(st.integers(1, 3))
    pools = draw(st.lists(st.integers(0, depth - 1), max_size=2, unique=True))
    side = 2 ** len(pools) * draw(st.integers(1, 2))
    return {
        "x": images(
            n=draw(st.integers(1, 5)),
            c=draw(st.integers(1, 3)),
            h=side,
            seed=draw(st.integers(0, 99)),
        ),
        "depth": depth,
        "pool_after": pools,
        "kernel_size": draw(st.sampled_from([1, 3])),
        "activation": draw(st.sampled_from(["relu", "erf", "identity"])),
        "readout": draw(st.sampled_from(["gap", "flatten"])),
        "sigma_b": draw(st.sampled_from([0.0, 0.5])),
    }


@given(architectures(), st.integers(1, 2**16))
def test_psd_and_tiling_invariant(case, budget):
    x = case.pop("x")
    whole = infinite_cnn_kernels(x, memory_budget="1GB", **case)
    tiled = infinite_cnn_kernels(x, memory_budget=budget, **case)
    for kernel, t in zip(whole, tiled, strict=True):
        # Tiles sum the same terms in another order: each entry within EXACT of its own size
        # plus the kernel's scale there, √(K_ii K_jj) ≥ |K_ij| (an entry that cancels to
        # ~1e-17, an erf network without bias under GAP, rounded 2e-12 apart relative to it).
        scale = kernel.diagonal().clamp_min(0).sqrt()
        bound = EXACT * (kernel.abs() + scale[:, None] * scale[None, :])
        assert ((t - kernel).abs() <= bound).all(), float(((t - kernel).abs() - bound).max())
        # Exact duals give PSD kernels; rounding moves eigenvalues by ~1e-15 relative.
        eigenvalues = torch.linalg.eigvalsh(kernel)
        assert eigenvalues.min() >= -1e-10 * max(eigenvalues.max().item(), 1e-300)


def test_one_pixel_images_of_both_signs_give_psd_relu_kernels():
    """ρ = ±1 exactly between scalar inputs: θ = π must be snapped like θ = 0 (regression for
    a hypothesis example, relative eigenvalue −5.4e-10 before; rounding leaves ~1e-16)."""
    x = torch.randn(5, 1, 1, 1, generator=torch.Generator().manual_seed(83), dtype=torch.float64)
    for kernel in infinite_cnn_kernels(x, depth=1, activation="relu", sigma_b=0.0, kernel_size=1):
        eigenvalues = torch.linalg.eigvalsh(kernel)
        assert eigenvalues.min() >= -1e-12 * eigenvalues.max()


def test_dtype_shapes_and_zero_images():
    x = images(n=3, h=4).float()
    x[0] = 0.0
    nngp, ntk = infinite_cnn_kernels(x, images(n=2, h=4, seed=1).half(), depth=2)
    assert nngp.shape == ntk.shape == (3, 2) and nngp.dtype == ntk.dtype == torch.float64
    nngp, ntk = infinite_cnn_kernels(x, depth=2, diagonal=True)
    assert nngp.shape == (3,) and torch.isfinite(ntk).all() and ntk[0] == 0


X = torch.ones(2, 1, 4, 4)
BAD = [
    ({"x1": torch.ones(2, 16)}, ValueError, "x1"),
    ({"x1": torch.ones(2, 1, 4, 4, 1)}, ValueError, "x1"),
    ({"x1": torch.ones(2, 0, 4, 4)}, ValueError, "x1"),
    ({"x1": torch.ones(2, 1, 6, 4)}, ValueError, "x1"),  # 6 not divisible by 2^2
    ({"x1": torch.ones(2, 1, 4, 4, dtype=torch.int64)}, TypeError, "x1"),
    ({"x1": X.clone().fill_(float("nan"))}, ValueError, "x1"),
    ({"x2": torch.ones(2, 2, 4, 4)}, ValueError, "x2"),
    ({"x2": torch.ones(2, 1, 8, 8)}, ValueError, "x2"),
    ({"x2": torch.ones(2, 1, 4, 2)}, ValueError, "x2"),
    ({"x2": X, "diagonal": True}, ValueError, "x2"),
    ({"depth": 0}, ValueError, "depth"),
    ({"depth": 2.0}, TypeError, "depth"),
    ({"kernel_size": 2}, ValueError, "kernel_size"),
    ({"kernel_size": 0}, ValueError, "kernel_size"),
    ({"pool_after": [3]}, ValueError, "pool_after"),
    ({"readout": "max"}, ValueError, "readout"),
    ({"sigma_w": -1.0}, ValueError, "sigma_w"),
    ({"sigma_b": float("inf")}, ValueError, "sigma_b"),
    ({"activation": "swish"}, ValueError, "activation"),
    ({"memory_budget": "lots"}, ValueError, "memory_budget"),
]


@pytest.mark.parametrize(("kwargs", "error", "argument"), BAD)
def test_bad_input_names_the_argument(kwargs, error, argument):
    kwargs = {"x1": X, "depth": 3, "pool_after": [0, 1], **kwargs}
    with pytest.raises(error, match=rf"^{argument}:"):
        infinite_cnn_kernels(kwargs.pop("x1"), kwargs.pop("x2", None), **kwargs)


def test_exported():
    assert ns.infinite_cnn_kernels is ns.kernels.infinite_cnn_kernels is infinite_cnn_kernels


def wide_cnn_kernels(x, width, seeds, **case):
    """Per seed: the NTK-parameterized CNN's eNTK (trace) and its NNGP estimate.

    NNGP estimate: σ_w² φ·φ' / F + σ_b² on the F features entering the readout; its mean
    over seeds is the output covariance E[f(x) f(x')] exactly, with less noise than f f'.
    """
    c, h = x.shape[1], x.shape[2]
    nngps, ntks = [], []
    for seed in range(seeds):
        model = ns.models.cnn(c, width, d_out=1, image_size=h, seed=seed, **case).double()
        with torch.no_grad():
            features = model[:-1](x)
        gram = features @ features.T / features.shape[1]
        nngps.append(model[-1].sigma_w ** 2 * gram + model[-1].sigma_b ** 2)
        ntks.append(ns.empirical_ntk(model, x, mode="trace"))
    return torch.stack(nngps), torch.stack(ntks)


def assert_wide_cnns_converge(case, widths=(32, 256), seeds=8):
    """Monte-Carlo check at two widths (8× apart) over ``seeds`` initializations, 4 images 4×4.

    Measured over the 6 cases of this file (8 seeds): the root-mean-square relative error
    of one network's kernels is 3.7–10% at width 256 and 1.7–4.3× larger at width 32
    (√8 ≈ 2.8 expected for O(1/√width) fluctuations); the seed mean at width 256 is within
    1.3–7%, at most 2.0 standard errors (RMS / √seeds; 24 seeds at width 512: within 1.3%,
    z ≤ 1.7 per entry). Tolerances: the RMS error must shrink ≥ 1.5× from width 32 to 256
    (a bias as large as the fluctuations would not shrink), and the seed mean at width 256
    be within 3 standard errors (≤ 11%). A wrong normalization of the padded offsets or of
    the pooling changes these 4×4 kernels by ≥ 20%.
    """
    x = images(n=4, h=4, seed=5)
    limits = infinite_cnn_kernels(x, **case)
    rms = {}
    for width in widths:
        samples = wide_cnn_kernels(x, width, seeds, **case)
        rms[width] = [
            (sum(relative_error(s, limit) ** 2 for s in sample) / seeds) ** 0.5
            for sample, limit in zip(samples, limits, strict=True)
        ]
    for name, sample, limit, small, large in zip(
        ("nngp", "ntk"), samples, limits, *rms.values(), strict=True
    ):
        assert large <= small / 1.5, (name, small, large)
        error = relative_error(sample.mean(0), limit)
        assert error <= 3 * large / seeds**0.5, (name, error, large)


def test_wide_cnn_kernels_converge():
    assert_wide_cnns_converge(dict(depth=2, pool_after=[0]))


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        dict(depth=2, pool_after=[]),
        dict(depth=2, activation="erf", sigma_b=0.3, pool_after=[0]),
        dict(depth=2, activation="erf", sigma_w=1.5, readout="flatten", pool_after=[]),
        dict(depth=3, readout="flatten", pool_after=[1]),
        dict(depth=2, readout="flatten", pool_after=[0], sigma_b=0.2),
    ],
)
def test_wide_cnn_kernels_converge_slow(case):
    assert_wide_cnns_converge(case)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [dict(depth=2, pool_after=[0]), dict(depth=3, activation="erf", readout="flatten")]
)
def test_wider_cnn_kernels_converge(case):
    assert_wide_cnns_converge(case, widths=(64, 512), seeds=16)
