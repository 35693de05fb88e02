"""kernel_over_time: checkpoints of K^t (Vyas, Bansal & Nakkiran 2022) and Fort's kernel motion."""

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from interrupts import INTERRUPTED_OR_DIVERGED
from ntkscope import metrics
from ntkscope.data import targets
from ntkscope.dynamics import KernelRidge
from ntkscope.kernels import empirical_ntk
from ntkscope.studies import Results, kernel_over_time
from ntkscope.studies._training import inputs, network, splits
from ntkscope.studies.kernel_over_time import Config, captions, figures, run

SMALL = Config(n_train=48, n_val=24, n_test=32, width=32, steps=40, checkpoints=7, probe_size=16)


@pytest.fixture(scope="module")
def small():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield run(SMALL, lambda d, t: None)
    torch.set_num_threads(threads)


def test_every_checkpoint_is_reported(small):
    table = small.tables["checkpoints"]
    assert list(table.step) == list(SMALL.schedule()) == list(small.arrays["steps"])
    assert len(table) >= 6 and table.step.iloc[0] == 0 and table.step.iloc[-1] == SMALL.steps
    assert small.arrays["probe_kernels"].shape == (len(table), 16, 16)
    assert np.isfinite(table[["kernel_test_mse", "test_mse", "kernel_distance"]]).all().all()


def test_initial_regression_is_kernel_ridge_on_the_initial_entk(small):
    train_set, _, test = splits(SMALL)
    y = targets(train_set)
    model = network(SMALL, train_set, SMALL.width, y.shape[1], SMALL.seed).double()
    # the study trains on float32 inputs; its float64 kernels see them rounded
    x, x_test = (inputs(SMALL, d).float().double() for d in (train_set, test))
    kernel = empirical_ntk(model, x)
    prediction = KernelRidge(kernel, y).predict(empirical_ntk(model, x_test, x))
    expected = float((prediction - targets(test)).square().mean())
    # Same float64 kernel and solver, computed as one rectangular block in the study:
    # agreement to rounding (1e-9 relative).
    assert small.tables["checkpoints"].kernel_test_mse.iloc[0] == pytest.approx(expected, rel=1e-9)


def test_velocity_is_distance_between_checkpoints_over_elapsed_steps(small):
    table, kernels, steps = (small.tables["checkpoints"], small.arrays["probe_kernels"],
                             small.arrays["steps"])  # fmt: skip
    k = [torch.from_numpy(a) for a in kernels]
    for i in range(1, len(steps)):
        velocity = metrics.kernel_distance(k[i], k[i - 1]) / (steps[i] - steps[i - 1])
        assert table.kernel_velocity.iloc[i] == pytest.approx(velocity, rel=1e-12)
        assert table.kernel_distance.iloc[i] == pytest.approx(
            metrics.kernel_distance(k[i], k[0]), rel=1e-12)  # fmt: skip
    assert np.isnan(table.kernel_velocity.iloc[0])


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"checkpoints": 5}, "checkpoints"),
        ({"steps": 3, "checkpoints": 8}, "at least 6 distinct"),
        ({"steps": 10, "checkpoint_steps": (0, 1, 2, 2, 5, 10)}, "strictly increasing"),
        ({"steps": 10, "checkpoint_steps": (0, 1, 2, 3, 5, 8)}, "from 0 to steps"),
        ({"steps": 10, "checkpoint_steps": (1, 2, 3, 4, 5, 10)}, "from 0 to steps"),
        ({"early_fraction": 1.5}, "early_fraction"),
        ({"output_scale": 0.1, "center": False}, "output_scale"),
        ({"output_scale": 0.0}, "output_scale"),
    ],
)
def test_bad_configs_are_rejected(fields, match):
    with pytest.raises(ValidationError, match=match):
        Config(**fields)


def _stored(result):
    runs = pd.DataFrame(
        {"hash": ["h"], "config.steps": [SMALL.steps]}
        | {f"metrics.{k}": [v] for k, v in result.metrics.items()}
    )
    tables = {"checkpoints": result.tables["checkpoints"].assign(hash="h")}
    return Results(runs, tables, lambda h: result.arrays)


def test_figures_and_captions_draw_from_stored_results(small):
    stored = _stored(small)
    drawn = figures(stored)
    assert set(drawn) == {"test_loss_vs_time", "kernel_motion_vs_time"}
    assert [len(f.axes) for f in drawn.values()] == [3, 2]
    text = captions(stored)
    assert set(text) == set(drawn)
    assert f"{small.metrics['kernel_test_mse_initial']:.3g}" in text["test_loss_vs_time"]
    assert any(c.isdigit() for c in text["kernel_motion_vs_time"])
    assert "ends better than K^0 in" in text["test_loss_vs_time"]  # the per-setting verdict


@pytest.mark.slow
def test_kernel_velocity_decays_and_the_late_kernel_is_better():
    """Fort et al. 2020: the kernel moves fastest early; Vyas et al. 2022: K^t still improves.
    Quick-preset setting, seeds 0-2."""
    config = Config(width=64, steps=2000, checkpoints=8, lr_fraction=0.9)
    improvements = []
    for seed in range(3):
        m = run(config.model_copy(update={"seed": seed}), lambda d, t: None).metrics
        # Measured ratios velocity_first / velocity_last: 760, 556, 678 (seeds 0, 1, 2): the
        # velocity per step falls as the steps between checkpoints grow ×3.6 each; 100 is
        # a factor 5 below the smallest.
        assert m["velocity_first"] > 100 * m["velocity_last"], m
        improvements.append(1 - m["kernel_test_mse_final"] / m["kernel_test_mse_initial"])
    # K^t's ridgeless test MSE at T vs at 0, relative improvement measured 0.3%, 3.7%, 9.6%
    # for seeds 0, 1, 2 (mean 4.5%, standard error 2.7%): the mean is > 0 by 1.7 standard
    # errors (a weak effect at this scale); a kernel frozen at K^0 (lazy training) gives 0.
    assert np.mean(improvements) > 0, improvements


@pytest.mark.slow
def test_feature_learning_kernel_improves_while_the_network_trains_only():
    """Quick preset's single_index setting (α = 0.1, seeds 0-2): K^t learns a lot, ends as
    good as the network, and all of it before t_e = 0.1 T, when the network has converged
    (Fort et al.'s early kernel learning, not Vyas et al.'s late improvement)."""
    config = Config(task="single_index", output_scale=0.1, n_train=256, n_val=256,
                    n_test=1000, width=256, depth=2, steps=1000, lr_fraction=0.5)  # fmt: skip
    for seed in range(3):
        m = run(config.model_copy(update={"seed": seed}), lambda d, t: None).metrics
        # Measured (seeds 0, 1, 2): K^T / K^0 test MSE 0.55, 0.68, 0.62 (asserted < 0.8);
        # K^T / network 0.90, 0.92, 0.90 (asserted < 0.97); late_improvement_fraction
        # -0.00, -0.00, -0.01 (asserted |·| < 0.1, a tenth of a late-improving kernel's
        # 1 − early_fraction = 0.9).
        assert m["kernel_test_mse_final"] < 0.8 * m["kernel_test_mse_initial"], (seed, m)
        assert m["kernel_test_mse_final"] < 0.97 * m["network_test_mse_final"], (seed, m)
        assert abs(m["late_improvement_fraction"]) < 0.1, (seed, m)


def test_cnn_family_trains_on_images_of_a_binary_task():
    config = Config(task="digits_parity", architecture="cnn", width=4, n_train=16, n_val=8,
                    n_test=8, steps=10, checkpoints=6, probe_size=8)  # fmt: skip
    table = run(config, lambda d, t: None).tables["checkpoints"]
    assert list(table.step) == list(config.schedule())
    assert np.isfinite(table.kernel_test_mse).all()
    assert table.kernel_test_error.between(0, 1).all()  # one ±1 output: the sign is the class


def test_output_scaled_regression_task_follows_its_scaled_kernel():
    tiny = dict(task="single_index", d=8, n_train=24, n_val=12, n_test=16, width=16, steps=10,
                checkpoints=6, probe_size=8)  # fmt: skip
    lazy, rich = (run(Config(**tiny, output_scale=a), lambda d, t: None) for a in (1.0, 0.1))
    # α (f − f_0) has eNTK α² K: lr_fraction of its stability limit is 1/α² = 100 times
    # larger; both from float32 eNTKs of the same network (1e-5 relative: float32 rounding).
    assert rich.metrics["lr"] == pytest.approx(100 * lazy.metrics["lr"], rel=1e-5)
    table = rich.tables["checkpoints"]
    assert table.kernel_test_error.isna().all()  # real targets: no classification error
    assert np.isfinite(table[["kernel_test_mse", "test_mse"]]).all().all()


@INTERRUPTED_OR_DIVERGED
def test_only_divergence_is_blamed_on_lr_fraction(monkeypatch, fake_train, error, match):
    monkeypatch.setattr(kernel_over_time, "train", fake_train)
    with pytest.raises(error, match=match):
        run(Config(**SMALL.model_dump() | {"steps": 10, "checkpoints": 6}), lambda d, t: None)
