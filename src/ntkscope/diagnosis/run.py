"""`diagnose`: does NTK theory describe how this network trains?

Three measurements (thresholds and verdict in `ntkscope.diagnosis.verdict`):

1. the seed-to-seed dispersion of the eNTK at initialization, over ``seeds`` models built
   by the factory (Hanin & Nica 2019);
2. one training run of the seed-0 model with every recorder: loss, kernel change and
   velocity (Fort et al. 2020), parameter change, the linearized network trained alongside
   (Lee et al. 2019) and, for MSE trained by SGD, the NTK-predicted loss curve;
3. for every network `ntkscope.infinite_width` supports, the distance of the eNTK to the
   infinite NTK of its architecture (`ntkscope.diagnosis.infinite`).

Every kernel and every forward at initialization is taken in eval mode (dropout off,
BatchNorm on its running statistics), as the recorders take theirs (`measuring`), each
module's mode restored after; the model trains in the mode the factory gave it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ntkscope import _batch, metrics
from ntkscope._checks import choice, learning_rate, positive_int
from ntkscope.data import Dataset
from ntkscope.diagnosis.infinite import infinite_distances, infinite_reference
from ntkscope.diagnosis.inputs import Factory, build, fit_inputs, split
from ntkscope.diagnosis.verdict import Criterion, Verdict, criteria, decide, missing
from ntkscope.dynamics import (
    KernelRecorder,
    LinearizedRecorder,
    LossRecorder,
    ParameterRecorder,
    PredictionRecorder,
    Trajectory,
    stability_limit,
    train,
)
from ntkscope.dynamics.monitor import measuring
from ntkscope.dynamics.train import Loss, Optimizer
from ntkscope.kernels import empirical_ntk, resolve_method

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ADAM_LR = 1e-3
"""Default learning rate of Adam."""


@dataclass
class Diagnosis:
    """What `diagnose` measured and concluded.

    In Jupyter it renders as the report (``_repr_html_``); `plot` and `to_frame` give the
    figures and the criteria. (These methods import the report layer when called: a
    departure from "lower never imports upper", at call time only.)

    Attributes:
        verdict: the `Verdict`.
        criteria: the measured `Criterion` list behind it.
        numbers: every scalar measured (JSON-ready; None where not applicable).
        settings: the run's settings (data, sizes, optimizer, lr, steps, seeds).
        trajectory: the training run's `Trajectory`.
        spectra: eNTK eigenvalues on the probe set at initialization and at the end.
        notes: plain-language remarks (divergence, a run that barely trained, ...).
    """

    verdict: Verdict
    criteria: list[Criterion]
    numbers: dict[str, float | None]
    settings: dict[str, object]
    trajectory: Trajectory
    spectra: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """The criteria, one row each: value, thresholds, status, meaning (the records of the
        run: ``trajectory.frame()``; every scalar: ``numbers``)."""
        from ntkscope.report.diagnosis import criteria_table  # the report layer, on use

        return criteria_table(self)

    def plot(self) -> dict[str, Figure]:
        """The figures of the diagnosis report (`ntkscope.report.diagnosis.FIGURES`)."""
        from ntkscope.report.diagnosis import FIGURES

        return {name: draw(self) for name, draw in FIGURES.items()}

    def _repr_html_(self) -> str:
        """Jupyter: the verdict card, the criteria, the numbers and the figures."""
        from ntkscope.report.notebook import diagnosis_html

        return diagnosis_html(self)

    def summary(self) -> dict[str, object]:
        """Everything but the arrays, as a JSON-ready dict."""
        return {
            "verdict": self.verdict.value,
            "criteria": [
                {
                    "name": c.name,
                    "value": _json(c.value),
                    "kernel_regime_below": c.lazy_below,
                    "feature_learning_above": _json(c.rich_above),
                    "status": c.status,
                    "meaning": c.meaning,
                }
                for c in self.criteria
            ],
            "numbers": {k: _json(v) for k, v in self.numbers.items()},
            "settings": self.settings,
            "notes": self.notes,
        }


def _json(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _sgd_lr(model, x: torch.Tensor) -> float:
    """N / λ_max(Θ̂_0): half the largest stable step of full-batch gradient descent on the
    MSE ``½‖f − Y‖²/N`` of the linearized network, which is stable below 2N/λ_max with
    Θ̂_0 the *full* (N·O × N·O) kernel ``J Jᵀ`` (docs/conventions.md, "Training dynamics"). The
    trace kernel's λ_max can be several times smaller when O > 1, so it is not used."""
    return stability_limit(_kernel(model, x, "full")) / 2


def _kernel(model, x: torch.Tensor, mode: str = "trace") -> torch.Tensor:
    """The eNTK of ``model`` on ``x`` in eval mode, as the recorders take it (`measuring`)."""
    with measuring(model):
        return empirical_ntk(model, x, mode=mode)


def _dispersion(factory: Factory, seeds: int, probe: torch.Tensor, shape) -> tuple[float, list]:
    kernels = [_kernel(build(factory, s), shape(probe)).double() for s in range(seeds)]
    return metrics.seed_dispersion(kernels), kernels


def diagnose(
    model_factory: Factory,
    data: str | Path | Dataset = "digits",
    *,
    loss: str | Loss = "mse",
    optimizer: str | Optimizer = "sgd",
    lr: float | None = None,
    steps: int = 300,
    batch_size: int | None = None,
    momentum: float = 0.0,
    n_train: int = 256,
    n_test: int = 256,
    probe: int = 128,
    seeds: int = 4,
    records: int = 20,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> Diagnosis:
    """Measure whether NTK theory describes ``model_factory``'s network on ``data``.

    Args:
        model_factory: callable returning a fresh model, given the seed or not (see
            `ntkscope.diagnosis.inputs`). Its kernels are taken in eval mode, every
            module's mode restored after; it trains in the mode it was returned in.
        data: a built-in name, a `Dataset` or a ``.npz`` path.
        loss, optimizer, lr, steps, batch_size, momentum: the training run (see
            `ntkscope.train`); ``lr`` > 0, checked before anything runs. ``lr=None``
            picks N/λ_max(Θ̂_0) for SGD, Θ̂_0 the full (N·O × N·O) eNTK on the training
            inputs (half the stability limit of gradient descent in the kernel regime), and
            1e-3 for Adam.
        n_train, n_test: sizes of the disjoint training and test sets.
        probe: size of the probe set (the first training inputs) for kernels.
        seeds: initializations for the dispersion (>= 2).
        records: number of records along the run.
        seed: seed of the data split and of the trained model (the factory's seed 0 + seed).
        progress: optional callback ``(phase, done, total)``.

    Returns:
        The `Diagnosis`.
    """
    loss, optimizer = choice(Loss, loss, "loss"), choice(Optimizer, optimizer, "optimizer")
    lr = None if lr is None else learning_rate(lr)
    sizes = [
        positive_int(v, k)
        for k, v in {"steps": steps, "n_train": n_train, "n_test": n_test, "probe": probe}.items()
    ]
    steps, n_train, n_test, probe = sizes
    if positive_int(seeds, "seeds") < 2:
        raise ValueError(f"seeds: expected at least 2 initializations, got {seeds}")
    train_set, test_set = split(data, n_train, n_test, seed)
    model = build(model_factory, seed)
    with measuring(model):  # no random forward, no running statistics updated
        shape = fit_inputs(model, train_set)
    like = next(iter(model.parameters()))
    x_train, x_test = (
        shape(_batch.to(d.x, like.device, like.dtype)) for d in (train_set, test_set)
    )
    report = progress or (lambda *_: None)
    report("dispersion at initialization", 0, 1)
    probe_x = _batch.to(train_set.x[: min(probe, n_train)], like.device, like.dtype)
    dispersion, kernels = _dispersion(model_factory, seeds, probe_x, shape)
    with measuring(model):
        infinite, program = infinite_reference(model, shape(probe_x))
    if lr is None:
        lr = ADAM_LR if optimizer is Optimizer.ADAM else _sgd_lr(model, x_train)
    every = max(steps // positive_int(records, "records"), 1)
    recorders = [
        LossRecorder(every),
        KernelRecorder(shape(probe_x), every, probe_y=train_set.y[: len(probe_x)]),
        ParameterRecorder(every),
        LinearizedRecorder(x_test, every),
    ]
    if loss is Loss.MSE and optimizer is Optimizer.SGD:
        recorders.append(PredictionRecorder(every))
    trajectory = train(
        model,
        (x_train, train_set.y),
        test=(x_test, test_set.y),
        loss=loss,
        optimizer=optimizer,
        lr=lr,
        steps=steps,
        batch_size=batch_size,
        momentum=momentum,
        recorders=recorders,
        seed=seed,
        progress=lambda done, total: report("training", done, total),
    )
    with measuring(model):
        method = resolve_method(model, shape(probe_x)).value
    return _conclude(
        trajectory,
        recorders[1],
        dispersion,
        kernels,
        infinite,
        {
            "method": method,
            "data": train_set.name,
            "n_train": n_train,
            "n_test": n_test,
            "probe": len(probe_x),
            "loss": loss.value,
            "optimizer": optimizer.value,
            "lr": float(lr),
            "steps": steps,
            "batch_size": batch_size,
            "momentum": momentum,
            "seeds": seeds,
            "seed": seed,
            "kernel_program": program,
        },
    )


def _final(trajectory: Trajectory, name: str) -> float:
    try:
        return trajectory.last(name)
    except KeyError:
        return math.nan


def _first(trajectory: Trajectory, name: str) -> float:
    try:
        return trajectory.series(name)[1][0]
    except KeyError:
        return math.nan


def _untrained_note(start: float, end: float) -> str:
    """The note for a training loss that ended above 0.9 times its start: how it moved."""
    before, after = f"{start:.3g}", f"{end:.3g}"
    if before == after:
        moved, how = f"stayed at {before}", "does not train"
    elif end > start:
        moved, how = f"rose from {before} to {after}", "does not train"
    else:
        moved, how = f"fell only from {before} to {after}", "barely trains"
    return f"the training loss {moved}: a run that {how} looks lazy whatever the network"


def monitored(trajectory: Trajectory, settings: dict[str, object]) -> Diagnosis:
    """The `Diagnosis` of a run recorded by a `ntkscope.Monitor` in any training loop.

    As `diagnose` concludes, from the one run alone: the "init dispersion" criterion needs
    several initializations and is not measured (NaN), so is the "linearization gap"
    without a `LinearizedRecorder`; the verdict is "feature learning" if a measured
    criterion says so, else "incomplete" (module `ntkscope.diagnosis.verdict`).

    Raises:
        ValueError: when no `KernelRecorder` recorded the run.
    """
    kernel = next((r for r in trajectory.recorders if isinstance(r, KernelRecorder)), None)
    if kernel is None or kernel.initial is None:
        raise ValueError("recorders: a diagnosis needs a KernelRecorder that has started")
    return _conclude(trajectory, kernel, math.nan, [], None, settings)


def _conclude(trajectory, kernel_recorder, dispersion, kernels, infinite, settings) -> Diagnosis:
    numbers: dict[str, float | None] = {
        name: _final(trajectory, name)
        for name in (
            "kernel_change",
            "kernel_distance",
            "kernel_alignment",
            "param_change",
            "linear_rmse",
            "linear_gap",
            "train_loss",
            "test_loss",
            "train_accuracy",
            "test_accuracy",
            "linear_train_loss",
            "predicted_train_loss",
            "predicted_train_loss_infinite",
        )
    }
    numbers["init_dispersion"] = dispersion
    numbers["steps_taken"] = len(trajectory.losses)
    numbers.update(infinite_distances(infinite, kernels))
    diverged = trajectory.stopped == "diverged"
    measured = criteria(
        numbers["kernel_change"], numbers["linear_gap"], dispersion, diverged=diverged
    )
    notes = []
    if diverged:
        notes.append(
            f"training diverged at step {len(trajectory.losses) + 1} (NaN, inf or a "
            "loss 1e6 times its initial value); lower the learning rate"
        )
    elif trajectory.stopped == "interrupted":
        notes.append(f"interrupted after {len(trajectory.losses)} steps; numbers so far")
    start, end = _first(trajectory, "train_loss"), _final(trajectory, "train_loss")
    if not diverged and end > 0.9 * start:
        notes.append(_untrained_note(start, end))
    if not diverged:
        notes.extend(
            f"{name}: could not be measured (not a finite number), so the verdict is incomplete"
            for name in missing(measured)
        )
    spectra = {
        "init": metrics.spectrum(kernel_recorder.initial),
        "end": metrics.spectrum(kernel_recorder.latest),
    }
    return Diagnosis(
        decide(measured, diverged), measured, numbers, settings, trajectory, spectra, notes
    )
