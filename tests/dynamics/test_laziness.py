"""The published directions of lazy training, measured with ntkscope (fixed seeds, CPU).

Lee et al. 2019 ("Wide neural networks of any depth evolve as linear models"): in NTK
parameterization with a small learning rate, training moves the parameters by O(1/√n)
relative to their size and the network stays near its linearization. Chizat et al. 2019:
an output scale α makes any network lazy. And the opposite end: a narrow network in
standard parameterization trained by Adam with a large step learns features.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ntkscope as ns

WIDTHS = (64, 256, 1024, 2048)


def slope(widths, values) -> float:
    return float(np.polyfit(np.log(widths), np.log(values), 1)[0])


def lazy_run(width: int) -> ns.Trajectory:
    """One hidden layer, NTK parameterization, digits, full-batch GD with lr 0.2 (below the
    stability limit 2N/λ_max ≈ 0.6 at every width: the NTK's scale does not depend on it)."""
    data = ns.data.load("digits", 128, seed=0)
    test = ns.data.load("digits", 64, seed=1)
    model = ns.models.mlp(64, width, 1, 10, seed=1)
    return ns.train(model, data, test=test, lr=0.2, steps=100, recorders=[
        ns.KernelRecorder(data.x[:64], every=100), ns.ParameterRecorder(every=100),
        ns.LinearizedRecorder(test.x, every=100)])  # fmt: skip


@pytest.mark.slow  # a scientific check (minutes on one core), not a unit test
def test_laziness_grows_with_width_in_ntk_parameterization():
    """Measured (this seed): parameter-change slope −0.47; kernel-change slope −0.89; the
    linearization RMSE falls monotonically.

    Tolerances: the parameter change must follow Lee et al.'s −1/2 within ±0.15 (a
    four-point fit over 1.5 decades). The kernel change must fall at least as fast as
    Lee et al.'s O(1/√n) bound (slope ≤ −0.4) and no faster than 1/n (slope ≥ −1.2):
    its measured rate is close to the 1/n of the perturbative theory (Dyer & Gur-Ari
    2020; Huang & Yau 2020: dΘ/dt = O(1/n)), not −1/2.
    """
    runs = [lazy_run(w) for w in WIDTHS]
    params = [r.last("param_change") for r in runs]
    kernels = [r.last("kernel_change") for r in runs]
    linear = [r.last("linear_rmse") for r in runs]
    numbers = f"params {params}, kernels {kernels}, linear RMSE {linear}"
    assert abs(slope(WIDTHS, params) + 0.5) < 0.15, numbers
    assert -1.2 <= slope(WIDTHS, kernels) <= -0.4, numbers
    assert all(a > b for a, b in itertools.pairwise(linear)), numbers
    assert slope(WIDTHS, linear) < -0.3, numbers


@pytest.mark.slow  # a scientific check (minutes on one core), not a unit test
def test_the_widest_network_is_diagnosed_kernel_regime():
    diagnosis = ns.diagnose(lambda s: ns.models.mlp(64, 2048, 1, 10, seed=s), "digits", steps=200)
    assert diagnosis.verdict is ns.Verdict.KERNEL_REGIME, diagnosis.summary()


def test_a_larger_output_scale_is_lazier():
    """f_α = α(f − f_0) trained with lr/α² (Chizat et al.): the kernel change and the
    parameter change fall with α (measured ∝ 1/α), while the loss reached is similar."""
    data = ns.data.load("digits", 64, seed=0)
    rows = []
    for alpha in (1.0, 4.0, 16.0):
        model = ns.models.output_scaled(ns.models.mlp(64, 64, 2, 10, seed=0), alpha)
        trajectory = ns.train(model, data, lr=0.1 / alpha**2, steps=60, recorders=[
            ns.KernelRecorder(every=60, probe_size=32), ns.ParameterRecorder(every=60),
            ns.LossRecorder(every=60)])  # fmt: skip
        rows.append([trajectory.last(k) for k in ("kernel_change", "param_change", "train_loss")])
    kernel, params, loss = np.array(rows).T
    assert np.all(np.diff(kernel) < 0) and np.all(np.diff(params) < 0), rows
    assert params[-1] < params[0] / 8, rows  # ∝ 1/α would give /16
    assert loss.max() < 2 * loss.min(), rows


@pytest.mark.slow  # a scientific check (minutes on one core), not a unit test
def test_narrow_standard_network_with_adam_learns_features():
    diagnosis = ns.diagnose(
        lambda s: ns.models.mlp(64, 32, 2, 10, parameterization="standard", seed=s),
        "digits", optimizer="adam", lr=1e-2, steps=150, n_train=128, n_test=128, probe=64,
    )  # fmt: skip
    assert diagnosis.verdict is ns.Verdict.FEATURE_LEARNING, diagnosis.summary()
