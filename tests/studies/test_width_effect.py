"""width_effect: network, eNTK at init, infinite kernels vs width (Vyas et al. 2022)."""

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from ntkscope.data import targets
from ntkscope.dynamics import KernelRidge
from ntkscope.kernels import empirical_ntk
from ntkscope.studies import Results
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
