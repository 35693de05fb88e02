"""width_effect: network, eNTK at init, infinite kernels vs width (Vyas et al. 2022)."""

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from interrupts import INTERRUPTED_OR_DIVERGED
from ntkscope.data import targets
from ntkscope.dynamics import KernelRidge
from ntkscope.kernels import empirical_ntk
from ntkscope.studies import Results, width_effect
from ntkscope.studies._training import inputs, network, splits
from ntkscope.studies.width_effect import Config, captions, figures, run

SMALL = Config(n_train=64, n_val=32, n_test=48, widths=(8, 32), seeds=2, steps=20, eval_every=5)


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small(one_thread):
    return run(SMALL, lambda d, t: None)


def test_every_width_and_seed_is_reported(small):
    table = small.tables["widths"]
    assert sorted(zip(table.width, table.seed, strict=True)) == [
        (w, s) for w in (8, 32) for s in (0, 1)
    ]
    assert (table.stop_step <= SMALL.steps).all() and (table.stop_step % 5 == 0).all()
    assert small.metrics["best_width"] in (8, 32)
    for name in ("ntk_test_mse", "nngp_test_mse", "entk_gap_widest", "network_gap_widest"):
        assert name in small.metrics


def test_entk_regression_is_kernel_ridge_on_the_initial_entk(small):
    train_set, _, test = splits(SMALL)
    y = targets(train_set)
    model = network(SMALL, train_set, 32, y.shape[1], 1).double()
    # the study trains on float32 inputs; its float64 kernels see them rounded
    x, x_test = (inputs(SMALL, d).float().double() for d in (train_set, test))
    prediction = KernelRidge(empirical_ntk(model, x), y).predict(empirical_ntk(model, x_test, x))
    expected = float((prediction - targets(test)).square().mean())
    table = small.tables["widths"].set_index(["width", "seed"])
    # same float64 kernel and solver: agreement to rounding
    assert table.loc[(32, 1), "entk_test_mse"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"widths": ()}, "widths"),
        ({"widths": (16, 16)}, "at least 2 distinct"),
        ({"architecture": "rnn"}, "architecture"),
        ({"task": "imagenet"}, "task"),
        ({"stopping": "never"}, "stopping"),
        ({"seeds": 0}, "seeds"),
        ({"parameterization": "standard"}, "parameterization"),
        ({"output_scale": 0.1, "center": False}, "output_scale"),
    ],
)
def test_bad_configs_are_rejected(fields, match):
    with pytest.raises(ValidationError, match=match):
        Config(**fields)


def test_figures_and_captions_draw_from_stored_results(small):
    runs = pd.DataFrame(
        {"hash": ["h"], "config.depth": [1]}
        | {f"metrics.{k}": [v] for k, v in small.metrics.items()}
    )
    stored = Results(runs, {"widths": small.tables["widths"].assign(hash="h")}, lambda h: {})
    drawn = figures(stored)
    assert set(drawn) == {"test_loss_vs_width"} and len(drawn["test_loss_vs_width"].axes) == 2
    text = captions(stored)["test_loss_vs_width"]
    assert f"{small.metrics['ntk_test_mse']:.3g}" in text
    assert f"width {small.metrics['best_width']:.0f}" in text


def test_entk_regression_approaches_the_infinite_ntk_with_width(one_thread):
    m = run(Config(n_train=128, widths=(16, 1024), seeds=2, steps=10), lambda d, t: None).metrics
    # Measured |eNTK − NTK| / NTK test MSE (mean of 2 initializations): 0.77-1.00 at width
    # 16 and 0.024-0.031 at width 1024 over data seeds 0, 100, 200: a ratio ≥ 25; a factor
    # 4 leaves a margin > 6.
    assert m["entk_gap_widest"] < m["entk_gap_narrowest"] / 4, m


def test_cnn_family_uses_the_infinite_cnn_kernels(one_thread):
    config = Config(task="digits_parity", architecture="cnn", image_size=4, depth=1, n_train=24,
                    n_val=12, n_test=16, widths=(4, 16), seeds=1, steps=5)  # fmt: skip
    result = run(config, lambda d, t: None)
    assert len(result.tables["widths"]) == 2
    assert 0 < result.metrics["ntk_test_mse"] < 2  # ±1 targets: 1 is the zero predictor's


def test_output_scaled_network_on_a_regression_task(one_thread):
    tiny = dict(task="single_index", d=8, n_train=32, n_val=16, n_test=32, widths=(8, 16),
                seeds=1, steps=5, eval_every=5)  # fmt: skip
    lazy, rich = (run(Config(**tiny, output_scale=a), lambda d, t: None) for a in (1.0, 0.1))
    # the reference kernel of α (f − f_0) is α² × the infinite NTK: lr × 1/α² = 100 (float64)
    assert rich.metrics["lr"] == pytest.approx(100 * lazy.metrics["lr"], rel=1e-12)
    table = rich.tables["widths"]
    assert table.network_test_error.isna().all() and table.entk_test_error.isna().all()
    # α² K and K give the same ridgeless regression (the ridge grid is relative to tr K / N
    # too); 1e-6 relative leaves room for the solver's rounding on a ~1e3-conditioned kernel
    assert table.entk_test_mse.tolist() == pytest.approx(
        lazy.tables["widths"].entk_test_mse.tolist(), rel=1e-6)  # fmt: skip


@pytest.mark.slow
def test_feature_learning_network_deteriorates_toward_the_ntk_with_width(one_thread):
    """Vyas et al. 2022 (d), on the quick preset's single_index setting (α = 0.1, NTK
    parameterization): at fixed α, wider networks train lazier and move toward the NTK."""
    config = Config(task="single_index", output_scale=0.1, n_train=256, n_val=256, n_test=1000,
                    widths=(64, 1024), seeds=1, steps=1000)  # fmt: skip
    for seed in range(3):
        result = run(config.model_copy(update={"seed": seed}), lambda d, t: None)
        mse = result.tables["widths"].set_index("width").network_test_mse
        ntk = result.metrics["ntk_test_mse"]
        # Measured (seeds 0, 1, 2): width 64 0.362, 0.339, 0.377; width 1024 0.463, 0.443,
        # 0.413; NTK 0.573, 0.516, 0.481. Ratios 1024/64 1.28, 1.31, 1.10: asserted > 1.05
        # (half the smallest excess); 1024/NTK 0.81, 0.86, 0.86: asserted < 0.95.
        assert mse[1024] > 1.05 * mse[64], (seed, mse.to_dict())
        assert mse[1024] < 0.95 * ntk, (seed, mse.to_dict(), ntk)


@INTERRUPTED_OR_DIVERGED
def test_only_divergence_is_blamed_on_lr_fraction(monkeypatch, fake_train, error, match):
    monkeypatch.setattr(width_effect, "train", fake_train)
    with pytest.raises(error, match=match):
        run(Config(**SMALL.model_dump() | {"seeds": 1, "steps": 6}), lambda d, t: None)
