"""`ntkscope.diagnose` end to end on small settings, its report, and its errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ntkscope as ns
from ntkscope.diagnosis import load_factory, run
from ntkscope.diagnosis.inputs import split
from ntkscope.report.diagnosis import write_report

SMALL = dict(steps=20, n_train=48, n_test=32, probe=24, seeds=2, records=4)
PNG = b"\x89PNG\r\n\x1a\n"


def mlp_factory(seed: int) -> nn.Module:
    return ns.models.mlp(64, 64, 1, 10, seed=seed)


def check_report(page: Path) -> None:
    """Every image the page references exists and is a PNG; summary.json parses."""
    sources = re.findall(r'<img src="([^"]+)"', page.read_text())
    assert len(sources) == 4
    for source in sources:
        assert (page.parent / source).read_bytes()[:8] == PNG, source
    summary = json.loads((page.parent / "summary.json").read_text())
    assert summary["verdict"] in {v.value for v in ns.Verdict}


def test_diagnose_an_mlp_and_write_its_report(tmp_path):
    diagnosis = ns.diagnose(mlp_factory, "digits", **SMALL)
    numbers = diagnosis.numbers
    for name in ("kernel_change", "linear_gap", "init_dispersion", "param_change",
                 "predicted_train_loss", "predicted_train_loss_infinite",
                 "infinite_distance_single", "infinite_distance_mean"):  # fmt: skip
        assert np.isfinite(numbers[name]), name
    assert numbers["steps_taken"] == 20
    # the seed mean is closer to the infinite NTK than one seed (fluctuations average out)
    assert numbers["infinite_distance_mean"] < numbers["infinite_distance_single"]
    page = write_report(diagnosis, tmp_path / "report")
    check_report(page)
    for c in diagnosis.criteria:  # the page states the thresholds the verdict used
        assert f"{c.name} below {c.lazy_below:g}" in page.read_text(), c.name


def test_a_user_model_on_images_with_an_unsupported_layer(tmp_path):
    """A CNN with LayerNorm (generic eNTK path), given digits it must see as images, with
    cross-entropy and Adam (no NTK prediction then)."""

    def factory():
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LayerNorm(144),
                             nn.Linear(144, 10))  # fmt: skip

    diagnosis = ns.diagnose(factory, "digits", loss="cross_entropy", optimizer="adam", **SMALL)
    assert diagnosis.numbers["infinite_distance_single"] is None
    assert np.isnan(diagnosis.numbers["predicted_train_loss"])
    check_report(write_report(diagnosis, tmp_path))


def test_divergence_is_a_verdict_not_a_crash(tmp_path):
    diagnosis = ns.diagnose(mlp_factory, "digits", lr=1e4, **SMALL)
    assert diagnosis.verdict is ns.Verdict.DIVERGED
    assert "diverged at step" in diagnosis.notes[0]
    check_report(write_report(diagnosis, tmp_path))


def test_npz_data_with_its_own_test_split(tmp_path):
    g = np.random.default_rng(0)
    path = tmp_path / "task.npz"
    np.savez(path, x=g.normal(size=(60, 5)), y=g.normal(size=60),
             x_test=g.normal(size=(10, 5)), y_test=g.normal(size=10))  # fmt: skip
    diagnosis = ns.diagnose(lambda s: ns.models.mlp(5, 32, 1, 1, seed=s), path, **SMALL)
    assert diagnosis.settings["data"] == "task"
    assert diagnosis.trajectory.frame()["test_loss"].notna().all()


def test_the_default_sgd_learning_rate_is_stable_for_many_outputs():
    """Regression (issue 18, defect 1): the default lr was N/λ_max of the *trace* kernel,
    above the stability limit 2N/λ_max of the full (N·O × N·O) kernel on a narrow tanh
    network in standard parameterization with 10 outputs (λ_max ratio 3.3 here)."""

    def factory(seed: int) -> nn.Module:
        return ns.models.mlp(64, 16, 2, 10, activation="tanh", parameterization="standard",
                             seed=seed)  # fmt: skip

    diagnosis = ns.diagnose(factory, "digits", **SMALL)
    x = split("digits", 48, 32, 0)[0].x
    full = ns.metrics.spectrum(ns.empirical_ntk(factory(0), x, mode="full"))[0]
    assert diagnosis.settings["lr"] == pytest.approx(48 / float(full), rel=1e-4)  # float32 eNTK
    for name in ("predicted_train_loss", "linear_gap"):
        assert np.isfinite(diagnosis.numbers[name]), name
    assert diagnosis.verdict is not ns.Verdict.INCOMPLETE


def test_a_factory_in_training_mode_is_measured_in_eval_mode_and_trained_as_given(monkeypatch):
    """Regression (u3): a factory's model in training mode with Dropout (every new module,
    every Hugging Face model built from a config) was refused by the kernels at
    initialization. They are now taken in eval mode: the same numbers as the same model
    given in eval mode (the same float32 operations on the same weights; rel 1e-6 allows
    for a reduction order), every module's mode restored after, training in training mode.
    """
    built, kernel_modes, dropout_modes = [], [], []

    def factory(seed: int, training: bool = True) -> nn.Module:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
        model[2].register_forward_pre_hook(lambda m, _: dropout_modes.append(m.training))
        built.append(model)
        return model.train(training)

    def spied(model, *args, **kwargs):
        kernel_modes.append({m.training for m in model.modules()})
        return ns.empirical_ntk(model, *args, **kwargs)

    monkeypatch.setattr(run, "empirical_ntk", spied)
    given = ns.diagnose(factory, "digits", **SMALL)
    assert kernel_modes and all(modes == {False} for modes in kernel_modes)
    assert all(m.training for model in built for m in model.modules())
    assert True in dropout_modes  # the training steps ran with dropout on
    evaluated = ns.diagnose(lambda s: factory(s, training=False), "digits", **SMALL)
    for name in ("init_dispersion", "infinite_distance_single", "infinite_distance_mean"):
        assert given.numbers[name] == pytest.approx(evaluated.numbers[name], rel=1e-6), name
    assert given.settings["lr"] == pytest.approx(evaluated.settings["lr"], rel=1e-6)
    torch.testing.assert_close(given.spectra["init"], evaluated.spectra["init"], rtol=1e-6, atol=0)
    assert given.settings["method"] == evaluated.settings["method"]


@pytest.mark.parametrize(
    ("factory", "data", "message"),
    [
        (lambda: "not a model", "digits", "model_factory: expected it to return a torch.nn.Module"),
        (lambda: nn.Linear(3, 10), "digits", "data: the model does not accept 'digits' inputs"),
        (lambda: nn.Linear(64, 10), "mnist", "data: expected a built-in name"),
        (lambda: 1 / 0, "digits", "model_factory: raised ZeroDivisionError"),
    ],
)
def test_bad_input_is_named(factory, data, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ns.diagnose(factory, data, **SMALL)


def _never_built():
    raise AssertionError("the model was built: lr must be checked before anything runs")


@pytest.mark.parametrize("lr", [0, 0.0, -0.1, float("nan")])
def test_a_learning_rate_not_above_zero_is_refused_first_as_by_train(lr):
    """lr must be > 0, as in `ntkscope.train` (with the same message): a run at lr 0 never
    moves, so its laziness numbers say nothing. Refused naming lr before the model is built
    (not after the dispersion and infinite-width measurements)."""
    with pytest.raises(ValueError, match=r"^lr: expected a positive learning rate") as error:
        ns.diagnose(_never_built, "digits", lr=lr, **SMALL)
    x, y = torch.randn(4, 64), torch.randn(4, 10)
    with pytest.raises(ValueError) as by_train:
        ns.train(nn.Linear(64, 10), (x, y), lr=lr, steps=1)
    assert str(error.value) == str(by_train.value)


def test_non_finite_outputs_at_initialization_are_an_error():
    def factory():
        model = nn.Linear(64, 10)
        torch.nn.init.constant_(model.weight, float("nan"))
        return model

    with pytest.raises(ValueError, match="model: the loss at initialization is nan"):
        ns.diagnose(factory, "digits", **SMALL)


def test_load_factory_errors(tmp_path):
    file = tmp_path / "models.py"
    file.write_text("import torch\nVALUE = 3\ndef make():\n    return torch.nn.Linear(64, 10)\n")
    assert isinstance(load_factory(f"{file}:make")(), nn.Linear)
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    for spec, message in [
        ("models.py", "expected 'path/to/file.py:function'"),
        (f"{tmp_path}/missing.py:make", "no such file"),
        (f"{file}:other", "has no function 'other'"),
        (f"{file}:VALUE", "is not callable"),
        (f"{broken}:make", "importing .* failed: ModuleNotFoundError"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_factory(spec)


@pytest.mark.parametrize(
    ("lr", "maximize", "note"),
    [
        (1e-4, False, r"the training loss fell only from (\S+) to (\S+): a run that barely"),
        (0.05, True, r"the training loss rose from (\S+) to (\S+): a run that does not train"),
        (1e-9, False, r"the training loss stayed at (\S+): a run that does not train"),
    ],
    ids=["fell", "rose", "stayed"],
)
def test_a_run_that_does_not_train_says_how_its_loss_moved(lr, maximize, note):
    """A loop that barely trains (tiny lr), trains backwards (gradient ascent) or does not
    move gets a note that words the change of its training loss rightly."""
    model = ns.models.mlp(5, 16, 1, 2, seed=0).double()
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64)
    monitor = ns.Monitor(model, x, [ns.KernelRecorder(x, 1), ns.LossRecorder(1)], targets=y)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, maximize=maximize)
    monitor.start()
    for step in range(1, 6):
        optimizer.zero_grad()
        (0.5 * (model(x) - y).pow(2).sum() / len(x)).backward()
        optimizer.step()
        monitor.step(step)
    losses = monitor.frame()["train_loss"]
    (message,) = [n for n in monitor.diagnosis().notes if n.startswith("the training loss")]
    numbers = [float(n) for n in re.match(note, message).groups()]
    assert numbers == [float(f"{v:.3g}") for v in (losses.iloc[0], losses.iloc[-1])][: len(numbers)]
