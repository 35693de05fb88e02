import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from ntkscope.data import targets
from ntkscope.runner import expand
from ntkscope.studies import Results
from ntkscope.studies._training import bare_network, inputs, splits
from ntkscope.studies.scaling_laws import (
    MIN_SIZES,
    PRESETS,
    Config,
    _fit_network,
    captions,
    figures,
    run,
)

TINY = {"d": 8, "sizes": (8, 12, 16, 24, 32, 48), "width": 16, "n_val": 16, "n_test": 32,
        "max_steps": 40, "lr": 0.2, "after_kernel_sizes": (8, 48),
        "ridges": (1e-3, 1e-1)}  # fmt: skip
KERNELS = ("entk_init", "ntk", "nngp", "after_8", "after_48")


@pytest.fixture(scope="module")
def tiny():
    calls = []
    return run(Config(**TINY), lambda d, t: calls.append((d, t))), calls


def test_every_method_is_scored_for_every_size_and_seed(tiny):
    result, calls = tiny
    table = result.tables["losses"]
    methods = {"network", *KERNELS, *(k + "_ridgeless" for k in KERNELS)}
    assert set(table.method) == methods
    assert len(table) == len(methods) * 6 * 3 and calls[-1] == (21, 21)
    assert table.groupby(["method", "n"]).seed.nunique().eq(3).all()
    assert (table.test_loss > 0).all() and table.test_error.isna().all()  # real targets
    kernels = table[table.method != "network"]
    assert (kernels.ridge >= 0).all() and kernels.steps.isna().all()
    assert (table[table.method.str.endswith("_ridgeless")].ridge == 0).all()
    for method in methods:
        low, alpha, high = (result.metrics[f"alpha_{method}{s}"] for s in ("_low", "", "_high"))
        assert low <= alpha <= high
    assert result.metrics["kernel_seconds"] > 0 and result.metrics["train_seconds"] > 0
    assert list(result.arrays["after_kernel_sizes"]) == [8, 48]


def test_after_kernel_at_init_equals_the_init_entk():
    # K_m of a network that is never trained (max_steps 1, lr tiny) is its eNTK at
    # initialization: same kernel regression, up to the ridge path's float64 rounding.
    config = Config(**TINY | {"max_steps": 1, "lr": 1e-12, "stopping": "converged"})
    table = run(config, lambda d, t: None).tables["losses"].set_index(["method", "n", "seed"])
    after, init = table.loc["after_48_ridgeless"], table.loc["entk_init_ridgeless"]
    np.testing.assert_allclose(after.test_loss, init.test_loss, rtol=1e-6)


def test_sparse_parity_reports_classification_error():
    config = Config(**TINY | {"task": "sparse_parity", "parity_k": 2})
    table = run(config, lambda d, t: None).tables["losses"]
    assert table.test_error.between(0, 1).all()


def test_cnn_runs_on_image_tasks_with_the_infinite_cnn_kernels():
    config = Config(**TINY | {"task": "digits_parity", "model": "cnn", "image_size": 4,
                              "width": 8, "depth": 2, "max_steps": 10})  # fmt: skip
    table = run(config, lambda d, t: None).tables["losses"]
    assert table.test_error.between(0, 1).all() and (table.test_loss > 0).all()
    with pytest.raises(ValueError, match="model: 'cnn' needs an image task"):
        run(Config(**TINY | {"model": "cnn", "depth": 2}), lambda d, t: None)


def test_converged_stops_at_the_documented_training_loss():
    # digits has one-hot targets (O = 10), so ½‖f − Y‖²/N, summed over outputs, is 10 times
    # the ½-mean over N·O; the centered network starts at ½‖Y‖²/N = ½. Checking every step,
    # "converged" must stop at the first step where the documented loss is below tolerance:
    # below it there, not below it one step earlier (same deterministic float32 steps).
    config = Config(**TINY | {"task": "digits", "n_val": 100, "stopping": "converged",
                              "tolerance": 0.3, "check_every": 1, "max_steps": 200})  # fmt: skip
    train_set, val, _ = splits(config, 100, 0, torch.float32)
    x, y = inputs(config, train_set), targets(train_set, torch.float32)
    x_val, y_val = inputs(config, val), targets(val, torch.float32)
    initial = bare_network(config, train_set, config.width, y.shape[1], 0)

    def loss(net):
        with torch.no_grad():
            return float(0.5 * (net(x) - y).square().sum() / len(x))

    net, step = _fit_network(config, initial, x, y, x_val, y_val, "test")
    assert 1 < step < config.max_steps and loss(net) < config.tolerance
    earlier = Config(**config.model_dump() | {"max_steps": step - 1})
    before, _ = _fit_network(earlier, initial, x, y, x_val, y_val, "test")
    assert loss(before) >= config.tolerance


def _results(result) -> Results:
    runs = pd.DataFrame({"hash": ["h"], "config.task": ["single_index"]}
                        | {f"metrics.{k}": [v] for k, v in result.metrics.items()})  # fmt: skip
    return Results(runs, {"losses": result.tables["losses"].assign(hash="h")},
                   lambda h: result.arrays)  # fmt: skip


def test_figures_draw_from_stored_results(tiny):
    drawn = figures(_results(tiny[0]))
    assert set(drawn) == {"loss_vs_n", "after_kernel_vs_m"}
    assert all(len(f.axes) == 1 for f in drawn.values())
    # network, eNTK at init, NTK and two after-kernels: points and fitted lines
    assert len(drawn["loss_vs_n"].axes[0].lines) == 2 * 5


def test_captions_state_the_exponents_and_verdicts(tiny):
    text = captions(_results(tiny[0]))
    alpha = tiny[0].metrics["alpha_network"]
    assert f"α = {alpha:.2f}" in text["loss_vs_n"]
    assert re.search(r"interval is (above|below|overlapping) eNTK at init's", text["loss_vs_n"])
    assert re.search(r"K_m test MSE [0-9.]+ \(m = 8\) → [0-9.]+ \(m = 48\)",
                     text["after_kernel_vs_m"])  # fmt: skip
    assert "with m" in text["after_kernel_vs_m"]


@pytest.mark.parametrize(
    ("change", "match"),
    [({"sizes": (8, 16, 32, 64, 128)}, "at least 6"),
     ({"sizes": (8, 8, 16, 32, 64, 128)}, "at least 6 distinct"),
     ({"seeds": 2}, "seeds"),
     ({"ridges": (1e-3, 0.0)}, "ridges: expected positive"),
     ({"ridges": (-1.0,)}, "ridges: expected positive"),
     ({"after_kernel_sizes": (8, 50)}, r"after_kernel_sizes: \[50\] not among sizes"),
     ({"task": "spiral"}, "task"),
     ({"model": "cnn", "depth": 0}, "depth: a CNN needs at least one")],
)  # fmt: skip
def test_bad_configs_are_refused_with_the_field_named(change, match):
    with pytest.raises(ValidationError, match=match):
        Config(**TINY | change)


def test_presets_meet_the_minimums_of_a_scaling_fit():
    for preset in PRESETS.values():
        for config in expand(preset, "scaling_laws").configs:
            assert len(config.sizes) >= 6 and config.seeds >= 3
            assert set(config.after_kernel_sizes) <= set(config.sizes)
    quick = expand(PRESETS["quick"], "scaling_laws").configs
    assert any(c.task == "single_index" for c in quick)


@pytest.fixture(scope="module")
def quick_synthetic():
    config = next(c for c in expand(PRESETS["quick"], "scaling_laws").configs
                  if c.task == "single_index")  # fmt: skip
    return run(config, lambda d, t: None)


@pytest.mark.slow
def test_network_scales_better_than_its_kernels(quick_synthetic):
    # Quick preset, single_index (d = 64, degrees 1 and 2), n = 48..544, 3 seeds, width 128,
    # α_out = 0.1. Measured for first seeds 0, 3, 6, 9, 12 (exponent [bootstrap 95%]):
    #   network   0.67 [0.61, 0.74]  0.65 [0.53, 0.78]  0.59 [0.52, 0.65]  0.71 [0.65, 0.78]
    #             0.69 [0.62, 0.76]
    #   eNTK init 0.24 [0.21, 0.28]  0.23 [0.17, 0.29]  0.22 [0.17, 0.27]  0.27 [0.22, 0.32]
    #             0.25 [0.20, 0.29]
    #   NTK       0.29 [0.26, 0.33]  0.32 [0.29, 0.35]  0.27 [0.20, 0.33]  0.34 [0.30, 0.38]
    #             0.34 [0.28, 0.39]
    # so the network's lower end (≥ 0.52) clears both kernels' upper ends (≤ 0.39) every time.
    m = quick_synthetic.metrics
    for kernel in ("ntk", "entk_init"):
        assert m["alpha_network_low"] > m[f"alpha_{kernel}_high"], (kernel, m)


@pytest.mark.slow
def test_after_kernel_improves_with_m(quick_synthetic):
    # Test MSE at n = 544 for K_48, K_208, K_544 (seed 0): 0.31, 0.19, 0.14 — each step a
    # drop of 30% or more, against seed-to-seed sds of about 0.02; K_m's exponent also grows.
    table = quick_synthetic.tables["losses"]
    largest = table[table.n == table.n.max()].groupby("method").test_loss.mean()
    losses = [largest[f"after_{m}"] for m in (48, 208, 544)]
    assert losses[0] > losses[1] > losses[2], losses
    assert largest["entk_init"] > losses[0]
    alphas = [quick_synthetic.metrics[f"alpha_after_{m}"] for m in (48, 208, 544)]
    assert alphas[0] < alphas[2] and not math.isnan(alphas[1])


def test_the_cifar_example_sweep_expands_to_valid_configs():
    # examples/scaling_laws_cifar.toml: the recipe for users' CIFAR-10 files (not run here)
    from pathlib import Path

    from ntkscope.runner import load_sweep

    sweep = load_sweep(Path(__file__).parents[2] / "examples" / "scaling_laws_cifar.toml")
    assert [c.depth for c in sweep.configs] == [1, 2]
    assert all(c.task == "cifar10_binary" and len(c.sizes) >= MIN_SIZES for c in sweep.configs)
