"""Tiles of the infinite kernels computed concurrently (`_infinite_tiles`, `_threads.run_jobs`).

Concurrent tiles must give exactly (``torch.equal``) the kernel of the same tiles computed one
after another on one torch thread: each tile runs the same operations on one thread either
way; only the order of the tiles and the thread that computes them change.
"""

from __future__ import annotations

import pytest
import torch

import ntkscope as ns
from ntkscope.kernels import _infinite_tiles as tiles
from ntkscope.kernels import infinite

MB = 2**20


pytestmark = pytest.mark.usefixtures("two_torch_threads")


def _mlp(x1, x2, budget):  # erf: ReLU's in-place layers run one tile at a time
    args = dict(depth=3, sigma_b=0.1, activation="erf", memory_budget=budget)
    return ns.infinite_kernels(x1, x2, **args)


def _cnn(x1, x2, budget):
    return ns.infinite_cnn_kernels(x1, x2, depth=2, pool_after=[0], memory_budget=budget)


def _width(x1, x2, budget):
    torch.manual_seed(0)  # plain torch layers: σ_w² from their weights
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 1))
    return ns.infinite_width(net)(x1, x2, memory_budget=budget)


CASES = {  # kernel function, examples' shape, examples, budget (bytes)
    "mlp": (_mlp, (6,), 70, 3 * 72 * 100),
    "cnn": (_cnn, (2, 4, 4), 14, 2 * (128 * 128 + 16 * 16 * 128)),
    "width": (_width, (6,), 50, 2 * 20 * 8 * 60),
}


@pytest.mark.parametrize("second", [False, True])
@pytest.mark.parametrize("kind", sorted(CASES))
def test_concurrent_tiles_give_exactly_the_sequential_kernel(kind, second, monkeypatch):
    """Two tiles at a time (with tiles of many shapes: ~100 entries, a last row and column of
    smaller ones) against the same tiles one at a time on one thread: equal to the bit."""
    function, shape, n, budget = CASES[kind]
    x = torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x1, x2 = (x[: n // 2], x[n // 2 :]) if second else (x, None)
    monkeypatch.setattr(tiles, "concurrent_tiles", lambda *args: 2)
    run, ran = tiles.run_jobs, []
    monkeypatch.setattr(tiles, "run_jobs", lambda jobs, w: ran.append(w) or run(jobs, w))
    concurrent = function(x1, x2, budget)
    monkeypatch.setattr(tiles, "run_jobs", lambda jobs, w: run(jobs, 1))
    torch.set_num_threads(1)
    sequential = function(x1, x2, budget)
    assert ran == [2] and torch.get_num_threads() == 1
    for c, s in zip(concurrent, sequential, strict=True):
        assert torch.equal(c, s)


def test_a_small_budget_runs_two_tiles_at_once_and_the_default_one():
    """The rule of `concurrent_tiles`: below the 4 MiB tile cap, with ≥ 1 MiB per tile, for
    entries of ≤ 1 KiB."""
    cpu, relu = torch.device("cpu"), 72
    assert tiles.concurrent_tiles(2 * MB, cpu, relu) == 2
    assert tiles.tile_entries(2 * MB, cpu, relu) == MB // relu  # each tile half the budget
    assert tiles.concurrent_tiles(4 * MB - 1, cpu, relu) == 2
    for budget in (2 * MB - 1, 4 * MB, 10**10):  # too small to share, or capped tiles
        assert tiles.concurrent_tiles(budget, cpu, relu) == 1
    assert tiles.concurrent_tiles(2 * MB, cpu, 27_000, 110_000) == 1  # a CNN's image pairs
    assert tiles.concurrent_tiles(2 * MB, torch.device("meta"), relu) == 1
    torch.set_num_threads(1)
    assert tiles.concurrent_tiles(2 * MB, cpu, relu) == 1


def test_a_2mib_mlp_kernel_is_computed_concurrently_and_matches_the_untiled_one(monkeypatch):
    x = torch.randn(300, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    run, ran = tiles.run_jobs, []
    monkeypatch.setattr(tiles, "run_jobs", lambda jobs, w: ran.append(w) or run(jobs, w))
    args = dict(depth=3, activation="erf")  # not ReLU, whose in-place layers run sequentially
    small = ns.infinite_kernels(x, **args, memory_budget="2MiB")
    whole = ns.infinite_kernels(x, **args, memory_budget="1GB")
    assert ran == [2, 1] and torch.get_num_threads() == 2
    for s, w in zip(small, whole, strict=True):
        # the same per-entry arithmetic; only Σ¹ = x·x' (a matmul) may round differently for
        # another tile shape, by an ulp, which 3 arc-cosine layers amplify (as in
        # test_infinite.py::test_tiles_of_any_shape_give_the_untiled_kernel)
        torch.testing.assert_close(s, w, rtol=1e-12, atol=1e-15)


def test_concurrent_tiles_keep_the_callers_inference_mode(monkeypatch):
    """Inside torch.inference_mode the outputs are inference tensors, written in place by
    the tile threads: those must be in inference mode too (it is per thread)."""
    monkeypatch.setattr(tiles, "concurrent_tiles", lambda *args: 2)
    x = torch.randn(40, 5, dtype=torch.float64)
    with torch.inference_mode():
        kernels = infinite.infinite_kernels(x, depth=2, memory_budget=72 * 50)
    assert all(k.is_inference() for k in kernels)
    expected = infinite.infinite_kernels(x, depth=2, memory_budget="1GB")
    for k, e in zip(kernels, expected, strict=True):
        torch.testing.assert_close(k, e, rtol=1e-12, atol=1e-15)  # as above
