"""Width effect: with width, eNTK regression approaches the infinite NTK; the network need not.

Vyas, Bansal & Nakkiran, "Limitations of the NTK for understanding generalization in deep
learning" (2022), finding (d): as width grows, kernel regression with the eNTK at
initialization moves toward kernel regression with the infinite NTK, while the trained
network's test loss first improves and then deteriorates toward the NTK's. At a fixed
training set, for each width and seed, a run measures the test MSE and error of

- the trained network: SGD on ½‖f(X) − Y‖² / N for ``steps`` steps at a learning rate of
  ``lr_fraction`` of the stability limit of the infinite NTK on the training inputs (the same
  for every width; α² times the NTK for the output-scaled network α (f − f₀) of
  ``output_scale``, see `ntkscope.studies._training`: at a fixed α < 1 narrow networks learn
  features and wide ones turn lazy, toward the NTK); ``stopping = "validation"`` keeps the
  parameters with the lowest validation MSE among the checks every ``eval_every`` steps
  (early stopping), ``"budget"`` the parameters after the last step;
- kernel regression with the network's eNTK at initialization (trace mode);
- kernel regression with the infinite NTK and NNGP (`ntkscope.infinite_kernels`),

each ridgeless (the primary numbers) and with the ridge chosen on the validation split
(`ntkscope.dynamics.regression_scores`). MSEs are means over examples and outputs.

Presets (sized by the quick preset's measurement): the gap's width slope is −0.77 [−1.58,
0.04] from 2 runs, whose t interval (1 degree of freedom) is 12.7 standard errors wide;
``standard`` runs 6 seed pairs per task (12 runs; t = 2.2), which puts the interval below
0 if the runs scatter as the two measured (~21 CPU-minutes estimated).
"""

from __future__ import annotations

import copy
import math
from enum import StrEnum

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from pydantic import PositiveInt, field_validator

from ntkscope.data import targets
from ntkscope.dynamics import Recorder, TrainState, regression_scores, train
from ntkscope.metrics import classification_error
from ntkscope.models import Parameterization
from ntkscope.studies._base import Progress, Result, Results, extended
from ntkscope.studies._claims import Claim, below, estimate
from ntkscope.studies._cost import (
    Cost,
    cost_of,
    entk_floats,
    entk_flops,
    infinite_flops,
    task_shape,
    train_flops,
)
from ntkscope.studies._kernel_cluster import ClusterFields, kernel_functions
from ntkscope.studies._panels import without_errors
from ntkscope.studies._training import (
    TrainingConfig,
    infinite,
    inputs,
    learning_rate,
    network,
    network_size,
    splits,
)

__all__ = ["PRESETS", "Config", "Stopping", "cost", "captions", "claims", "figures", "run"]


class Stopping(StrEnum):
    """Which parameters of the network's training are scored.

    VALIDATION: early stopping; the parameters with the lowest validation MSE among the checks
        at step 0, every ``eval_every`` steps and at the last step.
    BUDGET: the parameters after the last of ``steps`` steps.
    """

    VALIDATION = "validation"
    BUDGET = "budget"


class Config(TrainingConfig, ClusterFields):
    """A width scan at a fixed training set, several seeds per width."""

    depth: PositiveInt = 1
    """Hidden layers of the MLP."""
    widths: tuple[PositiveInt, ...] = (16, 64, 256, 1024)
    """Hidden widths scanned (at least two distinct)."""
    seeds: PositiveInt = 2
    """Initializations per width: seeds seed, seed + 1, ..."""
    steps: PositiveInt = 300
    """Step budget of the network's training."""
    stopping: Stopping = Stopping.VALIDATION
    """Which parameters of the run are scored: "validation" or "budget" (`Stopping`)."""
    eval_every: PositiveInt = 25
    """Steps between validation checks of early stopping."""

    @field_validator("widths")
    @classmethod
    def _distinct(cls, widths: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(widths)) < 2:
            raise ValueError(f"widths: expected at least 2 distinct widths, got {list(widths)}")
        return tuple(sorted(set(widths)))

    @field_validator("parameterization")
    @classmethod
    def _ntk_only(cls, value: Parameterization) -> Parameterization:
        if value is not Parameterization.NTK:
            raise ValueError(
                "parameterization: the eNTK converges to the infinite NTK in 'ntk' "
                "parameterization only (docs/conventions.md)"
            )
        return value


# quick: digits (α = 1) and the synthetic single_index task (d = 64) in the
# feature-learning regime α = 0.1, where narrow networks learn the teacher direction
# and wide ones turn lazy (in NTK parameterization at fixed α)
_QUICK = {
    "fixed": {"widths": [16, 64, 256, 1024, 4096], "seeds": 2, "depth": 1},
    "zip": [
        {
            "task": ["digits", "single_index"],
            "output_scale": [1.0, 0.1],
            "steps": [300, 1000],
            "n_val": [128, 256],
            "n_test": [256, 1000],
        }
    ],
}

PRESETS = {  # paper: the CNN on 14×14 images (its infinite kernel costs ∝ pixels²)
    "quick": _QUICK,
    "standard": extended(_QUICK, seed=[0, 2, 4, 6, 8, 10]),
    "paper": {
        "fixed": {"task": "mnist_parity", "n_train": 1000, "n_val": 500, "n_test": 1000,
                  "steps": 5000, "seeds": 5, "depth": 2},
        "zip": [{"architecture": ["mlp", "cnn"], "image_size": [28, 14],
                 "widths": [[16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
                            [16, 32, 64, 128, 256]]}],
    },
}  # fmt: skip


def cost(config: Config) -> Cost:
    """Estimated time and peak memory of a run (`ntkscope.studies.Cost`): the infinite kernels
    twice; per width and seed, the eNTK between all inputs and the training set and ``steps``
    steps of training (validation every ``eval_every``)."""
    n_all = config.n_train + config.n_val + config.n_test
    batch = (config.batch_size or config.n_train) + config.n_val / config.eval_every
    side = task_shape(config.task, config.d, config.image_size)[1]
    cnn = config.architecture == "cnn"
    work = 2 * infinite_flops(n_all, config.n_train, config.depth, side if cnn else None)
    for width in config.widths:
        net = network_size(config, width)
        work += config.seeds * (entk_flops(n_all, config.n_train, net)
                                + train_flops(batch, net, config.steps))  # fmt: skip
    net = network_size(config, max(config.widths))
    runs = len(config.widths) * config.seeds
    floats = 4 * net.params + entk_floats(n_all, net) + 4 * n_all * config.n_train
    return cost_of("width_effect", work, floats, entks=runs, steps=runs * config.steps)


class _BestOnValidation(Recorder):
    """Validation MSE every ``every`` steps; keeps the parameters with the lowest."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, every: int) -> None:
        self.x, self.y, self.every = x, y, every
        self.best = (math.inf, 0, None)

    def record(self, state: TrainState) -> dict[str, float]:
        with torch.no_grad():
            mse = float((state.model(self.x) - self.y).square().mean())
        if mse < self.best[0]:
            self.best = (mse, state.step, copy.deepcopy(state.model.state_dict()))
        return {"val_mse": mse}


def _splits_xy(config: Config):
    """The training `Dataset`, and (train, val, test) as (inputs, targets, labels) triples
    with float32 inputs and targets; labels None for a regression task."""
    datasets = splits(config)
    triples = [
        (inputs(config, d).float(), targets(d, torch.float32), None if d.n_classes is None else d.y)
        for d in datasets
    ]
    return datasets[0], triples


def _network_scores(config, width, seed, train_set, data, lr, kernels) -> dict[str, float]:
    """Train one network; its test MSE and error under the stopping rule, and its eNTK at
    initialization (computed by ``kernels``) in kernel regression."""
    (x, y, _), (x_val, y_val, _), (x_test, y_test, labels) = data
    model = network(config, train_set, width, y.shape[1], seed)
    x_all = torch.cat([x, x_val, x_test]).double()
    kernel = kernels.entk(copy.deepcopy(model).double(), x_all, x.double(), mode="trace")
    entk = regression_scores(kernel, torch.cat([y, y_val, y_test]), len(x), len(x_val), labels)
    keeper = _BestOnValidation(x_val, y_val, config.eval_every)
    trajectory = train(model, (x, y), lr=lr, steps=config.steps, batch_size=config.batch_size,
                       recorders=[keeper], seed=seed)  # fmt: skip
    if trajectory.stopped == "interrupted":  # Ctrl-C: the runner leaves the run unfinished
        raise KeyboardInterrupt(f"training interrupted at width {width}, seed {seed}")
    if trajectory.stopped == "diverged":
        raise RuntimeError(
            f"lr_fraction: training diverged at width {width} (lr {lr:.3g}); lower lr_fraction"
        )
    stop_step = config.steps
    if config.stopping is Stopping.VALIDATION:
        _, stop_step, state = keeper.best
        model.load_state_dict(state)
    with torch.no_grad():
        outputs = model(x_test).double()
    return {
        "network_test_mse": float((outputs - y_test.double()).square().mean()),
        "network_test_error": math.nan if labels is None else classification_error(outputs, labels),
        "stop_step": stop_step,
    } | {f"entk_{k}": v for k, v in entk.items()}


def _infinite_scores(config: Config, data, kernels) -> dict[str, float]:
    """Infinite NTK and NNGP in kernel regression: ``ntk_*`` and ``nngp_*`` scores."""
    (x, y, _), (x_val, y_val, _), (x_test, y_test, labels) = data
    x_all = torch.cat([x, x_val, x_test]).double()
    pair = infinite(config, x_all, x.double(), kernels)
    y_all = torch.cat([y, y_val, y_test])
    scores = {}
    for name, kernel in zip(("nngp", "ntk"), pair, strict=True):
        for k, v in regression_scores(kernel, y_all, len(x), len(x_val), labels).items():
            scores[f"{name}_{k}"] = v
    return scores


def _gap(mse: pd.Series, reference: float) -> pd.Series:
    return (mse - reference).abs() / reference


def _findings(table: pd.DataFrame, infinite: dict[str, float]) -> dict[str, float]:
    """Finding (d): eNTK gap to the NTK vs width, the network's best width and widest gap."""
    means = table.groupby("width").mean(numeric_only=True)
    ntk = infinite["ntk_test_mse"]
    gap = _gap(means["entk_test_mse"], ntk)
    widths = means.index.to_numpy(float)
    slope = np.polyfit(np.log(widths), np.log(np.maximum(gap.to_numpy(), 1e-300)), 1)[0]
    best = means["network_test_mse"].idxmin()
    return {
        "entk_gap_narrowest": gap.iloc[0],
        "entk_gap_widest": gap.iloc[-1],
        "entk_gap_slope": slope,
        "best_width": best,
        "network_best_mse": means["network_test_mse"].min(),
        "network_test_mse_narrowest": means["network_test_mse"].iloc[0],
        "network_test_mse_widest": means["network_test_mse"].iloc[-1],
        "network_gap_widest": (means["network_test_mse"].iloc[-1] - ntk) / ntk,
    }


def run(config: Config, progress: Progress) -> Result:
    """Every width and seed: the trained network and its eNTK at initialization; the
    infinite NTK and NNGP once.

    Returns:
        metrics: ``lr``; ``ntk_*`` and ``nngp_*`` regression scores (`regression_scores`);
        ``entk_gap_narrowest`` and ``entk_gap_widest`` (|mean eNTK test MSE − NTK's| / NTK's
        at the narrowest and widest width), ``entk_gap_slope`` (log-log slope of that gap
        against width); ``best_width`` (lowest mean network test MSE), ``network_best_mse``,
        ``network_test_mse_narrowest``,
        ``network_test_mse_widest`` and ``network_gap_widest`` ((network − NTK) / NTK at
        the widest width). tables: ``widths``, one row per width and seed (network and
        ``entk_*`` scores, ``stop_step``).
    """
    train_set, data = _splits_xy(config)
    rows, total = [], len(config.widths) * config.seeds
    with kernel_functions(config) as kernels:
        scores = _infinite_scores(config, data, kernels)
        x = data[0][0].double()
        lr = learning_rate(config, config.output_scale**2 * infinite(config, x, x, kernels)[1])
        for width in config.widths:
            for seed in range(config.seed, config.seed + config.seeds):
                rows.append(
                    {"width": width, "seed": seed}
                    | _network_scores(config, width, seed, train_set, data, lr, kernels)
                )
                progress(len(rows), total)
    table = pd.DataFrame(rows)
    return Result(
        metrics={"lr": lr} | scores | _findings(table, scores),
        tables={"widths": table},
    )


def _band(axes, stats, label: str, style: str, color: str) -> None:
    mean = stats.mean()
    axes.plot(mean.index, mean, style, color=color, label=label)
    axes.fill_between(mean.index, stats.min(), stats.max(), color=color, alpha=0.2)


def figures(results: Results) -> dict[str, Figure]:
    """``test_loss_vs_width``: one row per stored run: the network and the eNTK at
    initialization (mean, band: min to max over seeds), the infinite NTK and NNGP (lines),
    test MSE (log scale) and test error against width."""
    runs = list(zip(results.labels(), results.runs.to_dict("records"), strict=True))
    figure = Figure(figsize=(11, 3.8 * len(runs)), layout="constrained")
    table = results.tables["widths"]
    for (label, run), panels in zip(
        runs, figure.subplots(len(runs), 2, squeeze=False), strict=True
    ):
        rows = table[table.hash == run["hash"]].groupby("width")
        for axes, metric in zip(panels, ("mse", "error"), strict=True):
            if without_errors(axes, rows[f"network_test_{metric}"].mean()):
                continue
            _band(axes, rows[f"network_test_{metric}"], "network", "o-", "C0")
            _band(
                axes, rows[f"entk_test_{metric}"], "eNTK at init (kernel regression)", "s--", "C1"
            )
            axes.axhline(run[f"metrics.ntk_test_{metric}"], color="C2", label="infinite NTK")
            axes.axhline(run[f"metrics.nngp_test_{metric}"], color="C3", ls=":", label="NNGP")
            axes.set(xscale="log", yscale="log" if metric == "mse" else "linear",
                     xlabel="width", ylabel=f"test {metric}")  # fmt: skip
        panels[0].set_title(label, fontsize="small", loc="left")
        panels[0].legend(fontsize="x-small")
    return {"test_loss_vs_width": figure}


def captions(results: Results) -> dict[str, str]:
    """Finding (d) in numbers, per stored run."""
    parts = []
    for label, row in zip(results.labels(), results.runs.to_dict("records"), strict=True):
        m = lambda name, row=row: row[f"metrics.{name}"]  # noqa: E731
        parts.append(
            f"{label}: eNTK-at-init regression's gap to the infinite NTK "
            f"{m('entk_gap_narrowest'):.1%} at the narrowest width → {m('entk_gap_widest'):.1%} "
            f"at the widest (log-log slope {m('entk_gap_slope'):.2f}); the network has test "
            f"MSE {m('network_test_mse_narrowest'):.3g} at the narrowest width, is best at "
            f"width {m('best_width'):.0f} (test MSE {m('network_best_mse'):.3g}) and at the "
            f"widest has {m('network_test_mse_widest'):.3g}, {m('network_gap_widest'):+.0%} vs "
            f"the NTK's {m('ntk_test_mse'):.3g} (NNGP {m('nngp_test_mse'):.3g})"
        )
    return {"test_loss_vs_width": "; ".join(parts) + "."}


def claims(results: Results) -> list[Claim]:
    """Finding (d), its kernel half: the eNTK-at-init regression's gap to the infinite NTK
    falls with width (log-log slope per run)."""
    slope = estimate(results.runs["metrics.entk_gap_slope"])
    return [
        Claim(
            "with width, eNTK regression at initialization approaches infinite-NTK regression",
            "Vyas, Bansal & Nakkiran 2022",
            f"log-log slope of the gap against width {slope}",
            below(slope, 0.0),
            "reproduced if the 95% interval of the mean slope over runs lies below 0; not "
            "reproduced if above",
        )
    ]
