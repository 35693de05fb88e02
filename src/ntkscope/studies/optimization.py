"""Optimization: does a second-order method get the speed-up NTK theory promises?

Wenger, Dangel & Kristiadi (2023), "On the disconnect between theory and practice of neural
networks: limits of the NTK perspective": in the kernel regime the MSE loss is a quadratic
in function space with Hessian Θ = J Jᵀ, so gradient descent is slowed by Θ's condition
number while a Gauss–Newton (natural-gradient) step −η Jᵀ(Θ + λI)⁻¹ r fits every
direction with eigenvalue μ ≫ λ in one step (`ntkscope.dynamics.gauss_newton`). The
theory holds only while the Jacobian stays put, ‖J_t − J_0‖_F / ‖J_0‖_F ≪ 1, which takes
widths far beyond practical ones.

One run trains one network (MLP or CNN in NTK parameterization, one width and depth) on
n digits, twice from the same initialization: ``steps`` of full-batch gradient descent on
½‖f(X) − Y‖² / N, and ``steps`` of damped Gauss–Newton. It records

- the smallest eigenvalue and the condition number λ_max/λ_min of the trace eNTK on the
  training set, at initialization and every ``every`` steps;
- the relative Jacobian change ‖J_t − J_0‖_F / ‖J_0‖_F (exact, through a cross-parameter
  kernel: `ntkscope.dynamics.jacobian_change`);
- the training loss of both methods and their kernel-regime predictions from the full
  eNTK Θ̂_0 at initialization: GD by `ntkscope.predict_mse` (r_{t+1} = (I − ηΘ/N) r_t),
  GN by `ntkscope.dynamics.predict_gauss_newton` (r_{t+1} = (I − ηΘ(Θ + λI)⁻¹) r_t, a
  factor (λ + (1 − η)μ)/(μ + λ) per step along an eigenvector with eigenvalue μ).

The answer is the ratio (GN loss)/(GD loss) after ``steps`` steps, measured and
predicted, and the *shortfall* measured/predicted: 1 when the network behaves as its
kernel predicts, large when the predicted second-order advantage does not materialize.

Presets (sized by the quick preset's measurement): the shortfall falls with width at
damping 1 (1.43 → 1.12 and 1.77 → 1.15 from width 32 to 2048) but scatters at damping 0.1
(0.90 → 2.12, 2.09 → 2.58), so the fall over both is −0.10 [−0.79, 0.59] from 4 runs.
A first ``standard`` run of 10 seeds (40 runs per width) measured a fall of −0.006
[−0.248, 0.237] (the shortfall falls at damping 1 and not at damping 0.1); ``standard`` now
runs 50 seeds of the 16 cells (800 runs, ~4.5 CPU-minutes estimated), an interval about
√5 times narrower, ±0.11, under the claim's smallest effect (a quarter of the narrowest
width's log shortfall, about 0.14; `ntkscope.studies._claims.closes_with_width`).
"""

from __future__ import annotations

import copy
import math
from enum import StrEnum

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from ntkscope import metrics, models
from ntkscope.data import DatasetName, load
from ntkscope.dynamics import (
    JacobianRecorder,
    LossRecorder,
    Recorder,
    TrainState,
    predict_gauss_newton,
    predict_mse,
    train,
)
from ntkscope.kernels import empirical_ntk
from ntkscope.models import ActivationName
from ntkscope.studies._base import Progress, Result, Results, StudyConfig, extended, settings
from ntkscope.studies._claims import Claim, closes_with_width
from ntkscope.studies._cost import (
    Cost,
    cnn,
    cost_of,
    entk_floats,
    entk_flops,
    mlp,
    train_flops,
)
from ntkscope.studies._training import Architecture, inputs

__all__ = [
    "PRESETS",
    "Architecture",
    "Config",
    "Task",
    "captions",
    "claims",
    "cost",
    "figures",
    "run",
]

WITHIN = 2.0
"""A width "gets the predicted speed-up" when its shortfall is at most this factor."""


class Task(StrEnum):
    """What the network fits on the digits images.

    REGRESSION: one real output, the digit's value standardized over the 10 classes,
        (label − 4.5) / √8.25.
    CLASSIFICATION: ten outputs, MSE on one-hot targets.
    """

    REGRESSION = "regression"
    CLASSIFICATION = "classification"


class Config(StudyConfig):
    """One network (architecture, width, depth) trained by GD and by Gauss–Newton."""

    task: Task = Task.CLASSIFICATION
    """Regression (one output) or classification (ten outputs, one-hot MSE) on digits."""
    architecture: Architecture = Architecture.MLP
    """MLP or CNN, in NTK parameterization."""
    width: PositiveInt = 256
    """Hidden width (MLP) or channels (CNN)."""
    depth: PositiveInt = 1
    """Hidden layers (MLP) or convolution blocks (CNN)."""
    n: PositiveInt = Field(64, ge=2)
    """Training examples (digits drawn by ``seed``); GN solves an (n·O) × (n·O) system."""
    steps: PositiveInt = 8
    """Full-batch steps of each method."""
    every: PositiveInt = 4
    """Steps between records of the kernel spectrum and the Jacobian change."""
    damping: PositiveFloat = 0.1
    """GN damping λ relative to the mean eigenvalue tr Θ̂_0 / (n·O) of the initial eNTK."""
    gn_lr: float = Field(1.0, gt=0.0, lt=2.0)
    """GN step size η in (0, 2) (1: the full step; the fixed-kernel recursion is stable)."""
    gd_lr_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """GD learning rate as a fraction of the stability limit 2n / λ_max(Θ̂_0)."""
    activation: ActivationName = ActivationName.RELU
    """Activation φ."""
    sigma_w: PositiveFloat = math.sqrt(2.0)
    """Weight standard deviation σ_w."""
    sigma_b: NonNegativeFloat = 0.0
    """Bias standard deviation σ_b."""
    seed: NonNegativeInt = 0
    """Seed of the initialization and of the digits sample."""


_QUICK = {
    "fixed": {"n": 64, "steps": 8, "every": 4},
    "product": {
        "task": ["regression", "classification"],
        "damping": [0.1, 1.0],
        "width": [32, 128, 512, 2048],
    },
}

PRESETS = {
    "quick": _QUICK,
    "standard": extended(_QUICK, seed={"range": [0, 50]}),
    "paper": {  # CNNs up to width 2048: at 4096 (4.5e8 parameters) a run needs ~18 GB
        "fixed": {"n": 512, "steps": 50, "every": 10},
        "product": {
            "task": ["regression", "classification"],
            "depth": [1, 2, 3, 4],
            "damping": [0.1, 1.0],
            "seed": [0, 1, 2],
        },
        "zip": [
            {
                "architecture": ["mlp"] * 5 + ["cnn"] * 4,
                "width": [64, 256, 1024, 4096, 8192, 64, 256, 1024, 2048],
            }
        ],
    },
}


def cost(config: Config) -> Cost:
    """Estimated time and peak memory of a run (`ntkscope.studies.Cost`): the full eNTK at
    initialization; gradient descent (``steps`` steps) and Gauss–Newton (a full eNTK per
    step), each with the trace eNTK and the Jacobian change every ``every`` steps. Memory:
    the network, its gradients, the training copy, the initial parameters of the Jacobian
    change, the step; the full (n·O)² kernel."""
    outputs = 10 if config.task is Task.CLASSIFICATION else 1
    if config.architecture is Architecture.CNN:
        net = cnn(1, 8, config.width, config.depth, outputs)
    else:
        net = mlp(64, config.width, config.depth, outputs)
    full = entk_flops(config.n, config.n, net, full=True)
    records = config.steps // config.every + 1
    gd = train_flops(config.n, net, config.steps)
    gd += records * 2 * entk_flops(config.n, config.n, net)
    floats = 5 * net.params + entk_floats(config.n, net) + 2 * (config.n * outputs) ** 2
    return cost_of(
        "optimization",
        full + 2 * gd + config.steps * full,
        floats,
        entks=1 + 4 * records + config.steps,
        steps=2 * config.steps,
    )


def _data(config: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (flat or images) and MSE targets (n, O), float64."""
    data = load(DatasetName.DIGITS, config.n, seed=config.seed, dtype=torch.float64)
    x = inputs(config, data)
    if config.task is Task.CLASSIFICATION:
        return x, torch.nn.functional.one_hot(data.y, 10).double()
    return x, ((data.y.double() - 4.5) / math.sqrt(8.25))[:, None]


def _network(config: Config, n_out: int) -> torch.nn.Module:
    options = dict(
        activation=config.activation, sigma_w=config.sigma_w, sigma_b=config.sigma_b,
        seed=config.seed,
    )  # fmt: skip
    if config.architecture is Architecture.CNN:
        return models.cnn(1, config.width, config.depth, n_out, **options).double()
    return models.mlp(64, config.width, config.depth, n_out, **options).double()


def _conditioning(kernel: torch.Tensor) -> dict[str, float]:
    """λ_min and λ_max/λ_min of the trace (scalar) kernel."""
    eigenvalues = metrics.spectrum(metrics.scalar_kernel(kernel))
    return {
        "lambda_min": float(eigenvalues[-1]),
        "condition": float(eigenvalues[0] / eigenvalues[-1]),
    }


class _Conditioning(Recorder):
    """λ_min and condition number of the trace eNTK on the training set."""

    def __init__(self, every: int) -> None:
        self.every = every

    def record(self, state: TrainState) -> dict[str, float]:
        return _conditioning(empirical_ntk(state.model, state.train.x))


def _losses(residuals: torch.Tensor) -> np.ndarray:
    """½‖r_t‖² / N for residuals (T, N, O)."""
    return (0.5 * residuals.pow(2).sum(dim=(1, 2)) / residuals.shape[1]).numpy()


def _train(config, model, x, y, method: str, options: dict) -> tuple[pd.DataFrame, bool]:
    """One training run from a copy of ``model``: records by step, and whether it diverged."""
    recorders = [
        LossRecorder(every=1),
        JacobianRecorder(x, every=config.every),
        _Conditioning(config.every),
    ]
    trajectory = train(copy.deepcopy(model), (x, y), steps=config.steps, recorders=recorders,
                       **options)  # fmt: skip
    frame = trajectory.frame().reset_index().rename(columns={"train_loss": "loss"})
    return frame.assign(method=method), trajectory.stopped is not None


def run(config: Config, progress: Progress) -> Result:
    """Train by GD and by GN, compare with the kernel-regime predictions.

    Returns:
        metrics: ``lambda_min_init``, ``condition_init`` (trace eNTK, training set) and
        their values after training, ``*_gd``/``*_gn``; ``jacobian_change_gd``/``_gn`` after
        ``steps``; ``loss_init``, ``loss_gd``, ``loss_gn``, ``predicted_loss_gd``,
        ``predicted_loss_gn`` after ``steps`` (NaN if diverged); ``ratio`` = loss_gn /
        loss_gd, ``ratio_predicted``, ``shortfall`` = ratio / ratio_predicted; ``gd_lr`` and
        ``damping_absolute`` (λ in kernel units). tables: ``curves`` (method, step, loss,
        predicted_loss, and every ``every`` steps lambda_min, condition, jacobian_change).
        arrays: ``spectrum_init`` (eigenvalues of the initial trace eNTK, descending).
    """
    x, y = _data(config)
    model = _network(config, y.shape[1])
    kernel = empirical_ntk(model, x, mode="full")
    progress(1, 3)
    full_spectrum = metrics.spectrum(kernel)
    damping = config.damping * float(full_spectrum.mean())
    gd_lr = config.gd_lr_fraction * 2 * config.n / float(full_spectrum[0])
    with torch.no_grad():
        f0 = model(x)
    times = range(config.steps + 1)
    gd = predict_mse(kernel, kernel[:0], y, f0, f0[:0], t=times, lr=gd_lr, discrete=True)
    predicted = {
        "gd": _losses(gd.train - y),
        "gn": _losses(
            predict_gauss_newton(kernel, f0 - y, times, damping=damping, lr=config.gn_lr)
        ),
    }
    runs = {
        "gd": {"optimizer": "sgd", "lr": gd_lr},
        "gn": {"optimizer": "gauss_newton", "lr": config.gn_lr, "damping": damping},
    }
    frames, result = [], {}
    for i, (method, options) in enumerate(runs.items()):
        frame, diverged = _train(config, model, x, y, method, options)
        frames.append(frame.assign(predicted_loss=predicted[method][frame.step.to_numpy()]))
        last = frame.iloc[-1]
        result |= {
            f"loss_{method}": math.nan if diverged else float(last.loss),
            f"predicted_loss_{method}": float(predicted[method][-1]),
            f"jacobian_change_{method}": float(frame.jacobian_change.dropna().iloc[-1]),
            f"lambda_min_{method}": float(frame.lambda_min.dropna().iloc[-1]),
            f"condition_{method}": float(frame.condition.dropna().iloc[-1]),
        }
        progress(i + 2, 3)
    ratio = result["loss_gn"] / result["loss_gd"]
    ratio_predicted = result["predicted_loss_gn"] / result["predicted_loss_gd"]
    init = {f"{k}_init": v for k, v in _conditioning(kernel).items()}
    return Result(
        metrics=result | init | {
            "loss_init": float(predicted["gd"][0]), "ratio": ratio,
            "ratio_predicted": ratio_predicted, "shortfall": ratio / ratio_predicted,
            "gd_lr": gd_lr, "damping_absolute": damping,
        },
        tables={"curves": pd.concat(frames, ignore_index=True)},
        arrays={"spectrum_init": metrics.spectrum(metrics.scalar_kernel(kernel)).numpy()},
    )  # fmt: skip


def _axes_row(panels: int, titles: list[str], ylabel: list[str]):
    figure = Figure(figsize=(5.5 * panels, 4.5), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for ax, title, label in zip(axes, titles, ylabel, strict=True):
        ax.set(xscale="log", yscale="log", xlabel="width", ylabel=label, title=title)
    return figure, axes


def _conditioning_figure(results: Results) -> Figure:
    """λ_min and condition number of the trace eNTK against width: at initialization (solid)
    and after GD training (dashed)."""
    figure, axes = _axes_row(
        2, ["Smallest eNTK eigenvalue", "eNTK condition number"], ["λ_min", "λ_max / λ_min"]
    )
    for label, group in settings(results.runs, ("width",), "all"):
        for ax, metric in zip(axes, ("lambda_min", "condition"), strict=True):
            line = ax.plot(group["config.width"], group[f"metrics.{metric}_init"], "o-",
                           label=f"{label}, init")[0]  # fmt: skip
            ax.plot(group["config.width"], group[f"metrics.{metric}_gd"], "s--",
                    color=line.get_color(), label=f"{label}, after GD")  # fmt: skip
    axes[0].legend(fontsize="small")
    return figure


def _jacobian_figure(results: Results) -> Figure:
    """Relative Jacobian change after training against width, GD and GN, with width^(-1/2)."""
    figure, (axes,) = _axes_row(1, ["Jacobian change in training"], ["‖J_T − J_0‖_F / ‖J_0‖_F"])
    for label, group in settings(results.runs, ("width",), "all"):
        widths = group["config.width"]
        line = axes.plot(widths, group["metrics.jacobian_change_gd"], "o-", label=f"{label}, GD")
        axes.plot(widths, group["metrics.jacobian_change_gn"], "s--", color=line[0].get_color(),
                  label=f"{label}, GN")  # fmt: skip
    widths = np.unique(results.runs["config.width"]).astype(float)
    anchor = results.runs.loc[
        results.runs["config.width"] == widths[0], "metrics.jacobian_change_gd"
    ]
    axes.plot(widths, anchor.mean() * (widths / widths[0]) ** -0.5, "k:", label="∝ width^(-1/2)")
    axes.legend(fontsize="small")
    return figure


def _speedup_figure(results: Results) -> Figure:
    """GN/GD loss ratio measured and predicted, and their quotient (shortfall), vs width."""
    figure, axes = _axes_row(
        2, ["GN loss / GD loss after T steps", "Shortfall: measured / predicted ratio"],
        ["loss ratio", "shortfall"],
    )  # fmt: skip
    for label, group in settings(results.runs, ("width",), "all"):
        widths = group["config.width"]
        line = axes[0].plot(widths, group["metrics.ratio"], "o-", label=f"{label}, measured")
        axes[0].plot(widths, group["metrics.ratio_predicted"], "s--", color=line[0].get_color(),
                     label=f"{label}, NTK prediction")  # fmt: skip
        axes[1].plot(widths, group["metrics.shortfall"], "o-", label=label)
    axes[1].axhline(WITHIN, color="k", ls=":", lw=1, label=f"{WITHIN:g}× (threshold)")
    axes[1].axhline(1.0, color="k", ls="--", lw=1, label="kernel regime")
    for ax in axes:
        ax.legend(fontsize="small")
    return figure


def _loss_figure(results: Results) -> Figure:
    """Loss curves of GD and GN, measured (solid) and predicted (dashed), for the smallest,
    a middle and the largest width of each group (rows)."""
    groups = list(settings(results.runs, ("width",), "all"))[:4]
    columns = max(min(3, len(g)) for _, g in groups)
    figure = Figure(figsize=(4.5 * columns, 3.5 * len(groups)), layout="constrained")
    grid = figure.subplots(len(groups), columns, squeeze=False)
    curves = results.tables["curves"]
    for row, (label, group) in zip(grid, groups, strict=True):
        picks = group.iloc[sorted({0, len(group) // 2, len(group) - 1})]
        for ax, (_, run) in zip(row, picks.iterrows(), strict=False):
            for method, color in (("gd", "tab:blue"), ("gn", "tab:red")):
                c = curves[(curves.hash == run.hash) & (curves.method == method)]
                ax.plot(c.step, c.loss, "-", color=color, label=f"{method.upper()} measured")
                ax.plot(c.step, c.predicted_loss, "--", color=color, label=f"{method.upper()} NTK")
            ax.set(yscale="log", xlabel="step", ylabel="train loss",
                   title=f"{label}, width {int(run['config.width'])}")  # fmt: skip
    grid[0][0].legend(fontsize="small")
    return figure


def figures(results: Results) -> dict[str, Figure]:
    """``conditioning_vs_width``, ``jacobian_change_vs_width``, ``speedup_vs_width`` and
    ``loss_curves``, drawn from stored results."""
    return {
        "conditioning_vs_width": _conditioning_figure(results),
        "jacobian_change_vs_width": _jacobian_figure(results),
        "speedup_vs_width": _speedup_figure(results),
        "loss_curves": _loss_figure(results),
    }


def threshold_width(group: pd.DataFrame) -> float:
    """The smallest width from which on every run's shortfall is at most `WITHIN` (NaN if the
    widest run misses it). Runs sorted by width; several seeds: each width's worst run."""
    worst = group.groupby("config.width")["metrics.shortfall"].max().fillna(math.inf)
    good = (worst <= WITHIN)[::-1].cummin()[::-1]
    return float(good.index[good.to_numpy()].min()) if good.iloc[-1] else math.nan


def _off(shortfall: float) -> str:
    """A shortfall (measured / predicted GN-to-GD loss ratio) in words."""
    if shortfall >= 1:
        return f"{shortfall:.3g}× short of it"
    return f"{1 / shortfall:.3g}× better than predicted"


def _speedup_caption(runs: pd.DataFrame) -> str:
    parts = []
    for label, group in settings(runs, ("width",), "all"):
        width = threshold_width(group)
        smallest = group.iloc[0]
        reach = (f"from width {width:g} on" if math.isfinite(width)
                 else f"at no width up to {group['config.width'].max():g}")  # fmt: skip
        parts.append(
            f"{label}: GN reaches the predicted GN/GD loss ratio within {WITHIN:g}× {reach}; at "
            f"width {smallest['config.width']:g} it is {_off(smallest['metrics.shortfall'])} "
            f"(measured {smallest['metrics.ratio']:.2g}, predicted "
            f"{smallest['metrics.ratio_predicted']:.2g})"
        )
    return "; ".join(parts) + "."


def _extremes(runs: pd.DataFrame, metric: str) -> str:
    means = runs.groupby("config.width")[f"metrics.{metric}"].mean()
    return (f"{means.iloc[0]:.3g} at width {means.index[0]:g} to {means.iloc[-1]:.3g} at width "
            f"{means.index[-1]:g}")  # fmt: skip


def captions(results: Results) -> dict[str, str]:
    """What the stored runs say, with numbers computed from them (means over other settings)."""
    runs = results.runs
    gap = runs.assign(
        **{"metrics.gn_gap": runs["metrics.loss_gn"] / runs["metrics.predicted_loss_gn"]}
    )
    return {
        "conditioning_vs_width": "Condition number of the initial eNTK "
        f"{_extremes(runs, 'condition_init')}; smallest eigenvalue "
        f"{_extremes(runs, 'lambda_min_init')}.",
        "jacobian_change_vs_width": "Relative Jacobian change after GN "
        f"{_extremes(runs, 'jacobian_change_gn')}; after GD "
        f"{_extremes(runs, 'jacobian_change_gd')}.",
        "speedup_vs_width": _speedup_caption(runs),
        "loss_curves": "GN loss after the last step / its NTK prediction "
        f"{_extremes(gap, 'gn_gap')}.",
    }


def claims(results: Results) -> list[Claim]:
    """GN's shortfall (measured / predicted GN-to-GD loss ratio) narrow against wide."""
    runs = results.runs
    measured, finding, rule = closes_with_width(runs, np.log(runs["metrics.shortfall"]))
    return [
        Claim(
            "Gauss–Newton gets its predicted advantage over gradient descent only at large width",
            "Wenger, Dangel & Kristiadi 2023",
            f"log shortfall (log of measured / predicted GN-to-GD loss ratio), {measured}",
            finding,
            rule,
        )
    ]
