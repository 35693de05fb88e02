"""Every kernel function keeps its working memory within ``memory_budget``.

Each test runs the function in a fresh process under a small budget and measures the
growth of the peak resident memory during the call (`peak_memory.measure`: after the
imports, the inputs and a warm-up call on a few examples), less the returned kernels. That
working memory must stay within the budget plus ``ALLOWANCE``.

``ALLOWANCE`` = 12 MiB: what a call needs beyond the arrays the budget covers, measured
for a trivial call (1 example) after the same warm-up: the allocator's arenas and page
granularity, the autograd engine's and the thread pool's first buffers, and the small
O(N) arrays outside the tiles (per-input variances of the infinite kernels, index
arrays). It does not grow with N or with the budget, so a budget overrun of the tiles (at
least the budget again in each case below) cannot hide in it.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ntkscope import kernels
from ntkscope.kernels import _tiling
from ntkscope.kernels._tiling import TilePlan, plan_tiles, tiled_kernel
from ntkscope.kernels.dual import CLOSED_FORMS
from peak_memory import measure

MB = 2**20
ALLOWANCE = 12 * MB

MLP = """
import ntkscope as ns
torch.manual_seed(0)
model = ns.models.mlp(d_in=100, width=512, depth=3, d_out=10)
x = torch.randn({n}, 100)

def warmup():
    ns.empirical_ntk(model, x[:16], mode="{mode}", memory_budget="{budget}")

def run():
    return ns.empirical_ntk(model, x, mode="{mode}", memory_budget="{budget}")
"""


def _check(result: dict, budget: int) -> None:
    working = result["working"]
    assert working <= budget + ALLOWANCE, (
        f"working memory {working / MB:.1f} MiB > budget {budget / MB:.0f} MiB + allowance"
    )


@pytest.mark.parametrize(
    ("mode", "n", "budget"),
    [("trace", 1200, 24), ("full", 200, 16)],  # all features: 80 MiB and 13 MiB
)
def test_empirical_ntk_stays_within_a_small_budget(mode, n, budget):
    result = measure(MLP.format(n=n, mode=mode, budget=f"{budget}MiB"))
    _check(result, budget * MB)


CONCURRENT = """
    from ntkscope.kernels._infinite_tiles import concurrent_tiles
    assert concurrent_tiles(2**21, torch.device("cpu"), 72) == torch.get_num_threads()
"""
"""With 2 threads, a 2 MiB budget runs two tiles of the erf MLP below (72 bytes per entry)
at once, each in 1 MiB."""


@pytest.mark.parametrize("threads", [1, 2])
def test_infinite_kernels_stay_within_a_small_budget(threads):
    code = """
    import ntkscope as ns
    x = torch.randn(1500, 20, dtype=torch.float64)

    def warmup():
        ns.infinite_kernels(x[:8], depth=3, activation="erf", memory_budget="2MiB")

    def run():
        return ns.infinite_kernels(x, depth=3, activation="erf", memory_budget="2MiB")
    """
    _check(measure(CONCURRENT + code, threads), 2 * MB)


TILE = """
from ntkscope.kernels.{kind} import plan
x = torch.randn({shape}, dtype=torch.float64)
rec, x, _, budget = plan(x, None, **{args!r}, activation="{name}")
v = rec.single(x, budget)[0]
rows, cols = slice(0, {half}), slice({half}, 2 * {half})
out = torch.empty(2, {half}, {half}, dtype=torch.float64).fill_(0.0).unbind()  # resident

def warmup():
    rec.tile(x[:2], x[2:4], [t[:2] for t in v], [t[2:4] for t in v])

def run():
    return rec.tile(x[rows], x[cols], [t[rows] for t in v], [t[cols] for t in v], out)
"""
MLP_ARGS = {"depth": 2, "sigma_w": 1.5, "sigma_b": 0.1, "diagonal": False}
CNN_ARGS = {**MLP_ARGS, "kernel_size": 3, "pool_after": [0, 1], "readout": "gap"}
TILES = {  # kind: (module, examples' shape, half of N, arguments of plan)
    "mlp": ("infinite", (1, 20), 700, MLP_ARGS),
    "cnn": ("infinite_cnn", (1, 3, 8, 8), 48, CNN_ARGS),
}


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        pytest.param(kind, n.value, marks=[] if n == "relu" else [pytest.mark.slow])
        for kind in TILES
        for n in sorted(CLOSED_FORMS)
    ],
)
def test_an_infinite_kernel_tile_holds_at_most_its_bytes(kind, name):
    """The peak memory of a tile written into given outputs (resident before) is within its
    ``entry_bytes`` per entry and ``tile_bytes``: MLP 700×700 entries (ReLU: the two arrays
    of `Dual.layer`, exactly; the others: `Dual.arrays` of the closed form, measured for
    it), CNN 48×48 pairs of 8×8 images (and `infinite_cnn._BLOCK_ARRAYS`). The arrays
    (≥ 3.9 MB each) are mapped one by one (the budget, given, fixes glibc's mmap threshold
    at 1 MiB), so the peak resident memory is theirs to a page. Allowance 256 KiB: a page
    per array and the GEMM's packing buffers of Σ¹ (ReLU's tile measured 50–150 KB above
    its two arrays)."""
    module, shape, half, args = TILES[kind]
    args = {**args, "memory_budget": "1GB"}
    one = torch.ones(2 * half, *shape[1:])
    rec = getattr(kernels, module).plan(one, None, **args, activation=name)[0]
    held = half * half * rec.entry_bytes() + rec.tile_bytes() + 256 * 2**10
    code = TILE.format(kind=module, shape=(2 * half, *shape[1:]), half=half, args=args, name=name)
    growth = measure(code)["growth"]
    assert growth <= held, f"{growth / MB:.1f} MiB > {held / MB:.1f} MiB"


CNN_TILE = """
from ntkscope.kernels._infinite_tiles import tile_entries, tile_shape
from ntkscope.kernels.infinite_cnn import plan
x = torch.randn(96, 3, 8, 8, dtype=torch.float64)
args = dict(depth=3, pool_after=[0, 1], memory_budget="{budget}", activation="{name}")
rec, x, _, budget = plan(x, None, **args, sigma_w=1.5, sigma_b=0.1, kernel_size=3,
                         readout="gap", diagonal=False)
v = rec.single(x, budget)[0]
entries = tile_entries(budget, x.device, rec.entry_bytes(), rec.tile_bytes())
side = tile_shape(len(x), len(x), entries)[0]
rows, cols = slice(0, side), slice(side, 2 * side)
out = torch.empty(2, side, side, dtype=torch.float64).fill_(0.0).unbind()  # resident

def warmup():
    rec.tile(x[:2], x[2:4], [t[:2] for t in v], [t[2:4] for t in v])

def run():
    return rec.tile(x[rows], x[cols], [t[rows] for t in v], [t[cols] for t in v], out)
"""


@pytest.mark.parametrize("name", ["relu", "erf"])
@pytest.mark.parametrize("budget", [1, 2])
def test_a_cnn_tile_of_a_small_budget_stays_within_it(budget, name):
    """A tile of the infinite CNN as a small budget sizes it (pairs of images, block 0's
    chunks, the images' patches: `infinite_cnn._Recursion.chunk_entries`) stays within the
    budget: peak resident memory, 8×8 images, allowance 256 KiB (GEMM packing buffers,
    a page per array). Its arrays are below the 1 MiB mmap threshold, so they come from
    the heap, whose pages stay resident once touched: the growth is an upper bound."""
    growth = measure(CNN_TILE.format(budget=f"{budget}MiB", name=name))["growth"]
    assert growth <= budget * MB + 256 * 2**10, f"{growth / MB:.2f} MiB > {budget} MiB"


@pytest.mark.parametrize("threads", [1, 2])
def test_infinite_cnn_kernels_stay_within_a_small_budget(threads):
    code = """
    import ntkscope as ns
    x = torch.randn(24, 3, 8, 8, dtype=torch.float64)
    args = dict(depth=3, pool_after=[0, 1], memory_budget="2MiB")

    def warmup():
        ns.infinite_cnn_kernels(x[:2], **args)

    def run():
        return ns.infinite_cnn_kernels(x, **args)
    """
    _check(measure(code, threads), 2 * MB)


def test_infinite_width_stays_within_a_small_budget():
    code = """
    import ntkscope as ns
    from torch import nn
    net = nn.Sequential(nn.Linear(20, 64), nn.GELU(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Linear(64, 1))
    kernel_fn = ns.infinite_width(net, memory_budget="2MiB")
    x = torch.randn(1500, 20, dtype=torch.float64)

    def warmup():
        kernel_fn(x[:8])

    def run():
        return kernel_fn(x)
    """
    _check(measure(code), 2 * MB)


@given(
    n1=st.integers(1, 5000),
    n2=st.integers(1, 5000),
    feature=st.integers(0, 10**6),
    pair=st.integers(0, 10**4),
    extract=st.integers(0, 10**6),
    budget=st.integers(1, 2 * 10**9),
    symmetric=st.booleans(),
)
def test_tile_plans_fit_their_budget(n1, n2, feature, pair, extract, budget, symmetric):
    """The plan's working memory (`plan_tiles`) is within the budget, or it refuses."""
    n2 = n1 if symmetric else n2
    try:
        plan = plan_tiles(n1, n2, (feature, pair, extract), budget, symmetric)
    except ValueError as error:
        assert "memory_budget" in str(error)
        assert 2 * feature + extract + pair > budget  # not even one example per chunk fits
        return
    kept = min(plan.resident * plan.chunk, n2)
    assert 1 <= plan.chunk <= max(n1, n2) and plan.resident >= 1
    assert kept * feature + plan.chunk * (feature + extract) + plan.chunk**2 * pair <= budget


@given(
    n=st.integers(1, 5000),
    feature=st.integers(1, 10**6),  # an example has features (with none, a 0-byte share fits none)
    extract=st.integers(0, 10**6),
    budget=st.integers(1, 10**8),
    share=st.integers(1, 4),
)
def test_diagonal_plans_fit_their_share_or_name_the_callers_budget(
    n, feature, extract, budget, share
):
    """The diagonal (n2 = 0) plans chunks of c examples, c·(F + E) ≤ budget // share; a
    refusal names the caller's budget and what one example needs of it, share·(F + E)."""
    try:
        plan = plan_tiles(n, 0, (feature, 0, extract), budget, share=share)
    except ValueError as error:
        assert str(error) == (
            f"memory_budget: {budget} bytes is too small for diagonal=True; one example "
            f"needs {share * (feature + extract)} bytes"
        )
        assert feature + extract > budget // share
        return
    assert 1 <= plan.chunk <= n and plan.chunk * (feature + extract) <= budget // share


class _Linear:
    """The linear kernel x·x' as a tiling strategy, counting the examples it featurizes."""

    feature_bytes, pair_bytes, extract_bytes = 8, 8, 0

    def __init__(self) -> None:
        self.computed = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.computed += len(x)
        return x

    def pair(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.T

    def symmetric(self, a: torch.Tensor) -> torch.Tensor:
        return self.pair(a, a)


@given(
    n1=st.integers(1, 40),
    n2=st.integers(1, 40),
    chunk=st.integers(1, 12),
    resident=st.integers(1, 6),
    symmetric=st.booleans(),
)
def test_tiles_fill_the_kernel_recomputing_only_rows_before_a_group(
    n1, n2, chunk, resident, symmetric
):
    """Every tile plan fills the whole kernel exactly (integer inputs: exact products), and
    x2 = x1 recomputes only the rows before each group, the smallest group first."""
    x1 = torch.randint(-3, 4, (n1, 3), dtype=torch.float64)
    x2 = None if symmetric else torch.randint(-3, 4, (n2, 3), dtype=torch.float64)
    strategy, n2 = _Linear(), n1 if symmetric else n2
    out = torch.empty(n1, n2, dtype=torch.float64)
    with mock.patch.object(_tiling, "plan_tiles", return_value=TilePlan(chunk, resident)):
        out = tiled_kernel(strategy, x1, x2, out, budget=1)
    assert torch.equal(out, x1 @ (x1 if symmetric else x2).T)
    chunks = -(-n2 // chunk)
    groups = _tiling._groups(chunks, resident, symmetric)
    assert [len(g) for g in groups] == sorted(len(g) for g in groups) or not symmetric
    before = sum(min(g.start * chunk, n1) for g in groups)
    assert strategy.computed == (n1 + before if symmetric else n2 + len(groups) * n1)


def test_a_kernel_of_one_symmetric_tile_is_that_tile_not_a_copy():
    """x2 = x1 in one tile: the strategy's symmetric tile is returned as it is (no copy
    into ``out``), with its values; two tiles fill ``out``."""
    x = torch.randint(-3, 4, (6, 3), dtype=torch.float64)
    strategy, made = _Linear(), []
    strategy.symmetric = lambda a: made.append(a @ a.T) or made[-1]
    out = torch.zeros(6, 6, dtype=torch.float64)
    with mock.patch.object(_tiling, "plan_tiles", return_value=TilePlan(6, 1)):
        kernel = tiled_kernel(strategy, x, None, out, budget=1)
    assert kernel is made[0] and torch.equal(kernel, x @ x.T) and not out.any()
    with mock.patch.object(_tiling, "plan_tiles", return_value=TilePlan(3, 2)):
        kernel = tiled_kernel(strategy, x, None, out, budget=1)
    assert kernel is out and torch.equal(out, x @ x.T)


def test_the_heap_thresholds_follow_the_kind_of_budget(monkeypatch):
    """An explicit budget on CPU sets the strict heap thresholds (so that it holds), the
    default the retaining ones (so that a kernel computed again finds its blocks resident);
    another device leaves the C library alone."""
    calls = []
    monkeypatch.setattr(
        _tiling, "_heap_thresholds", lambda explicit_budget: calls.append(explicit_budget)
    )
    assert _tiling.resolve_budget("4MB", torch.device("cpu")) == 4 * 10**6
    assert _tiling.resolve_budget(None, torch.device("cpu")) >= 64 * 2**20
    _tiling.resolve_budget("4MB", torch.device("meta"))
    assert calls == [True, False]
