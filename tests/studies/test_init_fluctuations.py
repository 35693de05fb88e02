"""Published directions of the finite-width corrections (Hanin & Nica 2019), ReLU, σ_w² = 2.

The grid is depth {1, 4} × width {16, 64, 256} with 128 initializations per cell, plus the
cell β = 8/16 = 0.5 with 256. Measured over data/initialization seeds 0, 1000, 2000:
diagonal dispersion / (exp(5β) − 1) is 0.44–0.73 for β ≤ 0.25 and 0.27–0.68 at β = 0.5
(depth 8 width 16; also 0.29 at depth 16 width 32): below 1 throughout, since the asymptotic
formula overestimates at small width and depth, where its O(1/n) corrections are not small.
The comments below quote the same three seeds.
"""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ntkscope.runner import InlineExecutor, expand, run_sweep
from ntkscope.store import load, load_arrays, load_table
from ntkscope.studies import Results
from ntkscope.studies.init_fluctuations import (
    Config,
    captions,
    dispersion,
    figures,
    predicted_dispersion,
    run,
)

DEPTHS, WIDTHS, SEEDS = (1, 4), (16, 64, 256), 128


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread, as the runner's default: these small networks (≤ 256 wide) run
    many times faster on one thread than on several threads contending for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def grid(one_thread):
    return {
        (depth, width): run(Config(depth=depth, width=width, seeds=SEEDS), lambda d, t: None)
        for depth in DEPTHS
        for width in WIDTHS
    }


def _metric(grid, name):
    return {cell: result.metrics[name] for cell, result in grid.items()}


def test_dispersion_rises_with_depth_and_falls_with_width(grid):
    d = _metric(grid, "dispersion_diagonal")
    # Each step is a factor ≥ 2 in expectation (β × 4) while the estimate's relative error
    # at 128 seeds is ≤ 0.25, so strict ordering fails only on a wrong scaling.
    for width in WIDTHS:
        assert d[4, width] > 2 * d[1, width], d
    for depth in DEPTHS:
        values = [d[depth, width] for width in WIDTHS]
        assert all(a > 2 * b for a, b in itertools.pairwise(values)), d


def test_dispersion_matches_hanin_nica_within_a_factor_three_for_small_beta(grid):
    ratios = _metric(grid, "dispersion_ratio")
    # Measured 0.44–0.73; the band [1/3, 3] leaves a factor 1.5 for the Monte-Carlo
    # error (≤ 25% at 128 seeds) and the finite-depth bias, and fails on a wrong exponent.
    assert all(1 / 3 < r < 3 for r in ratios.values()), ratios
    for (depth, width), result in grid.items():
        assert result.metrics["predicted_dispersion"] == pytest.approx(
            math.expm1(5 * depth / width)
        )


def test_dispersion_at_beta_one_half_within_a_factor_five(one_thread):
    ratio = run(Config(depth=8, width=16, seeds=256, train_seeds=0), lambda d, t: None)
    # Measured 0.27–0.68 at β = 0.5 (see the module docstring); the draws are heavy-tailed
    # (excess kurtosis of f ≈ 7–10), so the sample variance is biased low: factor 5.
    assert 1 / 5 < ratio.metrics["dispersion_ratio"] < 5, ratio.metrics
    assert math.isnan(ratio.metrics["kernel_change"])


def test_single_seed_distance_falls_as_inverse_square_root_of_width(grid):
    d = _metric(grid, "distance_single")
    for depth in DEPTHS:
        slope = np.polyfit(np.log(WIDTHS), np.log([d[depth, w] for w in WIDTHS]), 1)[0]
        # Measured −0.45 to −0.55 at depths 1 and 4; the mean over 128 seeds has a
        # relative error < 5%, so 0.15 allows the finite-width bias at width 16.
        assert abs(slope + 0.5) < 0.15, (depth, slope, d)


def test_seed_mean_kernel_is_closer_than_one_seed(grid):
    single, mean = _metric(grid, "distance_single"), _metric(grid, "distance_mean")
    # The mean over S seeds keeps ≈ 1/√S = 0.09 of a seed's fluctuation plus the O(1/width)
    # bias of E[Θ̂]: measured ratios 0.05–0.21; a single seed would give 1.
    assert all(mean[c] < 0.5 * single[c] for c in grid), (single, mean)


def test_output_variance_matches_nngp_diagonal(grid):
    for cell, result in grid.items():
        ratio, kurtosis = result.metrics["output_variance_ratio"], result.metrics["excess_kurtosis"]
        # E[f(x)²] = Σ^{L+1}(x, x) exactly at every width (ReLU, σ_b = 0); the sample
        # variance's relative standard error is √((2 + κ)/S); allow 3 of them.
        tolerance = 3 * math.sqrt((2 + max(kurtosis, 0.0)) / SEEDS)
        assert abs(ratio - 1) < tolerance, (cell, ratio, tolerance)


def test_excess_kurtosis_and_kernel_change_fall_with_width(grid):
    k, change = _metric(grid, "excess_kurtosis"), _metric(grid, "kernel_change")
    # Depth 4: measured 2.2–5.3 at width 16 and −0.3–0.5 at 256 (gaps 1.7–5.4); one
    # estimate's standard error is ≈ √(24/S) = 0.43 for Gaussian draws: a gap of 1.
    assert k[4, 16] > k[4, 256] + 1, k
    # Kernel change measured 0.11–0.49 → 0.02–0.04 (depth 1), 0.34–1.4 → 0.06–0.07 (depth 4).
    assert all(change[depth, 16] > 2 * change[depth, 256] for depth in DEPTHS), change


def test_dispersion_is_the_variance_over_the_squared_mean():
    values = np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]])
    expected = (np.var([1, 3, 2], ddof=1) / 4 + np.var([2, 2, 5], ddof=1) / 9) / 2
    assert dispersion(values) == pytest.approx(expected, rel=1e-12)  # float64 round-off


def test_runs_through_the_runner_and_draws_from_stored_results(tmp_path):
    spec = {"study": "init_fluctuations",
            "fixed": {"n": 4, "seeds": 8, "train_seeds": 1, "train_steps": 5},
            "product": {"depth": [1, 2], "width": [8, 16]}}  # fmt: skip
    summary = run_sweep(expand(spec), tmp_path, InlineExecutor())
    assert summary.failed == 0
    runs = load(tmp_path)
    tables = {name: load_table(tmp_path, name, runs.hash) for name in ("draws", "training")}
    results = Results(runs, tables, lambda h: load_arrays(tmp_path, h))
    assert len(tables["draws"]) == 4 * 8 * 4 and load_arrays(tmp_path, runs.hash[0])[
        "kernels"
    ].shape == (8, 4, 4)
    drawn, lines = figures(results), captions(results)
    names = {
        "dispersion_vs_beta",
        "distance_vs_width",
        "kurtosis_vs_width",
        "kernel_change_vs_width",
    }
    assert set(drawn) == set(lines) == names
    assert all(len(f.axes) == 1 for f in drawn.values())
    assert "Dispersion / (exp(5β) − 1) at β ≤ 0.5" in lines["dispersion_vs_beta"], lines


def test_prediction_only_in_hanin_and_nicas_setting():
    assert predicted_dispersion(Config(depth=2, width=10)) == pytest.approx(math.expm1(1.0))
    assert math.isnan(predicted_dispersion(Config(activation="tanh")))
    assert math.isnan(predicted_dispersion(Config(sigma_b=0.1)))


def _stored(rows: list[dict]) -> Results:
    """Results of synthetic stored runs: config.* and metrics.* columns, no tables."""
    runs = pd.DataFrame(rows)
    runs.insert(0, "hash", [f"h{k}" for k in range(len(runs))])
    for name in ("beta", "dispersion_diagonal", "dispersion_off_diagonal", "off_diagonal_pairs",
                 "dispersion_ratio", "distance_single", "distance_mean"):  # fmt: skip
        runs[f"metrics.{name}"] = runs.get(f"metrics.{name}", 1.0)
    return Results(runs, {}, lambda h: {})


def test_kernel_change_caption_compares_each_depth_with_itself():
    # At every depth the kernel change falls with width (ratio 0.5), but depth 64 exists only
    # at width 128 and changes a lot: a mean over the cells of each width rises from 1.0 at
    # width 16 to 2.75 at width 128, the reversal of the caption stored before.
    rows = [{"config.width": w, "config.depth": d, "metrics.kernel_change": c,
             "metrics.excess_kurtosis": c, "metrics.output_variance_ratio": 1.0}
            for w, d, c in [(16, 1, 1.0), (128, 1, 0.5), (128, 64, 5.0)]]  # fmt: skip
    lines = captions(_stored(rows))
    for name in ("kernel_change_vs_width", "kurtosis_vs_width"):
        assert "falls with width in 1 of 1 settings" in lines[name], lines[name]
        assert "rises" not in lines[name] and "2.75" not in lines[name], lines[name]


def _sweep_runs(tmp_path) -> Results:
    spec = {"study": "init_fluctuations",
            "fixed": {"n": 4, "seeds": 8, "train_seeds": 0, "width": 64},
            "product": {"activation": ["relu", "erf"], "depth": [2, 32]}}  # fmt: skip
    assert run_sweep(expand(spec), tmp_path, InlineExecutor()).failed == 0
    return Results(load(tmp_path), {}, lambda h: {})


def test_off_diagonal_dispersion_only_where_its_mean_is_not_near_zero(tmp_path, one_thread):
    # erf at depth 32 decorrelates the digits (|cos Θ| ≤ 0.005): Var/E² of those entries was
    # ~1e7 and made the caption's off-diagonal / diagonal ratio meaningless. At depth 2 every
    # pair has |cos Θ| ≥ 0.12 and the ratio is of order 1 (measured 2.2 at width 32), as for
    # ReLU at both depths (|cos Θ| ≥ 0.3).
    results = _sweep_runs(tmp_path)
    deep = results.runs.set_index(["config.activation", "config.depth"]).loc[("erf", 32)]
    assert deep["metrics.off_diagonal_pairs"] == 0
    assert np.isnan(deep["metrics.dispersion_off_diagonal"])
    line = captions(results)["dispersion_vs_beta"]
    assert "over pairs with |cos Θ| ≥ 0.1 (3 runs; 1 runs without such pairs)" in line, line
    low, high = (float(v) for v in line.split("dispersion ")[-1].split(" over")[0].split(" to "))
    assert 0.1 < low <= high < 100, line  # Var/E² of entries with |E| ≥ 0.1 √(diagonals)
