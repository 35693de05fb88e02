"""Finite-width fluctuations: the eNTK and the output at initialization, and in training.

At finite width the empirical NTK Θ̂ of an MLP in NTK parameterization is random. Hanin &
Nica 2019 ("Finite depth and width corrections to the neural tangent kernel", ICLR 2020)
show for ReLU with σ_b = 0 and a scalar output that its diagonal has

    Var_θ[Θ̂(x, x)] / E_θ[Θ̂(x, x)]² ≈ exp(5β) − 1,   β = Σ_l 1/n_l = depth / width,

as widths and depth grow together: the fluctuations grow with depth and shrink with width.
One run is one (width, depth, activation) cell, with many independent initializations on
n probe inputs. It measures (docs/conventions.md, "Metrics"):

- the dispersion Var/E² over seeds of the diagonal and of the off-diagonal entries of Θ̂
  (mean over entries), against exp(5β) − 1; off-diagonal only over the pairs whose infinite
  NTK correlation is at least 0.1, where the mean (the denominator) is not near zero;
- the relative distance ‖Θ̂ − Θ‖_F / ‖Θ‖_F to the infinite NTK Θ of one seed's Θ̂ (mean
  over seeds; ∝ width^(-1/2)) and of the seed-mean Θ̂ (smaller: the mean converges);
- the output variance Var_θ[f(x)] over seeds against the NNGP diagonal Σ^{L+1}(x, x), and
  the excess kurtosis of f(x) (0 for the Gaussian process of infinite width);
- after a fixed short full-batch gradient descent on a Gaussian regression task, the
  relative kernel change ‖Θ̂_T − Θ̂_0‖_F / ‖Θ̂_0‖_F on the probe inputs.

Presets (sized by the quick preset's measurement): quick gives the dispersion ratio 0.574
[0.519, 0.628] over 20 cells, inside [1/2, 2] by one half-width, and the kernel change's
width slope −0.72 [−1.19, −0.25] over 4 depths (2 trained seeds each). The ratio's spread
is mostly between cells (small widths sit lower), so ``standard`` keeps the 20 cells,
doubles the draws per cell to 512 (each cell's Var/E² to ≈ 6%) and trains 8 seeds per
cell for the slope (~7 CPU-minutes estimated).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt
from scipy import stats

from ntkscope import metrics, models
from ntkscope.data import DatasetName, load
from ntkscope.dynamics import KernelRecorder, stability_limit, train
from ntkscope.kernels import empirical_ntk, infinite_kernels
from ntkscope.models import ActivationName
from ntkscope.studies._base import Progress, Result, Results, StudyConfig, settings
from ntkscope.studies._claims import Claim, below, estimate, within
from ntkscope.studies._cost import (
    Cost,
    cost_of,
    entk_floats,
    entk_flops,
    infinite_flops,
    mlp,
    task_shape,
    train_flops,
)

__all__ = [
    "PRESETS",
    "Config",
    "cost",
    "captions",
    "claims",
    "figures",
    "predicted_dispersion",
    "run",
]


class Config(StudyConfig):
    """One cell: an MLP family of one width, depth and activation, many initializations."""

    data: DatasetName = DatasetName.DIGITS
    """Built-in data set of the probe inputs ("digits" or "gaussian")."""
    n: PositiveInt = Field(8, ge=2)
    """Number of probe inputs (at least 2, for off-diagonal entries); the kernels are n × n."""
    width: PositiveInt = 64
    """Hidden width n_l of every layer."""
    depth: PositiveInt = 2
    """Hidden layers L of the MLP."""
    activation: ActivationName = ActivationName.RELU
    """Activation φ; relu, erf and identity have closed-form infinite kernels (fastest)."""
    sigma_w: NonNegativeFloat = math.sqrt(2.0)
    """Weight standard deviation σ_w."""
    sigma_b: NonNegativeFloat = 0.0
    """Bias standard deviation σ_b."""
    seeds: PositiveInt = Field(64, ge=4)
    """Independent initializations at which Θ̂ and f are drawn (at least 4, for the kurtosis)."""
    train_seeds: NonNegativeInt = 2
    """Initializations trained for the kernel change (0 skips training; the metric is NaN)."""
    train_n: PositiveInt = 32
    """Training examples of the Gaussian regression task (a linear teacher, see `load`)."""
    train_steps: PositiveInt = 100
    """Full-batch gradient descent steps on ½‖f(X) − Y‖² / N."""
    lr_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """Learning rate as a fraction of the stability limit 2N / λ_max(Θ(X, X)) of the
    infinite NTK on the training inputs, so every depth trains at the same relative rate."""
    seed: NonNegativeInt = 0
    """First initialization seed (seeds seed, seed + 1, ...); also the seed of the data."""


_PAPER_CELLS = [(d, w) for w in (16, 32, 64, 128, 256, 512, 1024, 2048)
                for d in (1, 2, 4, 8, 16, 32, 64, 128)
                if d <= w // 2 and d * w * w <= 2**28]  # fmt: skip
"""(depth, width) of the paper preset: depths up to width / 2 (β ≤ 1/2), and at most 2^28
(2.7e8) hidden weights, so a run fits 16 GB (8.8 GB estimated at width 2048, depth 64;
width 2048 × depth 128 peaked at 19 GB)."""

_MEANINGFUL = 0.1
"""Least infinite-NTK correlation |cos Θ| of an off-diagonal pair whose dispersion is measured."""

PRESETS = {
    "quick": {
        "fixed": {"n": 8, "seeds": 128, "train_seeds": 2},
        "product": {"depth": [1, 2, 4, 8], "width": [16, 32, 64, 128, 256]},
    },
    "standard": {
        "fixed": {"n": 8, "seeds": 512, "train_seeds": 8},
        "product": {"depth": [1, 2, 4, 8], "width": [16, 32, 64, 128, 256]},
    },
    "paper": {
        "fixed": {"n": 16, "seeds": 512, "train_seeds": 8, "train_steps": 500},
        "product": {"activation": ["relu", "tanh", "erf"]},
        "zip": [{"depth": [d for d, _ in _PAPER_CELLS], "width": [w for _, w in _PAPER_CELLS]}],
    },
}


def cost(config: Config) -> Cost:
    """Estimated time and peak memory of a run (`ntkscope.studies.Cost`): ``seeds`` eNTKs on
    the n probes; per trained seed, ``train_steps`` full-batch steps and two eNTKs."""
    net = mlp(task_shape(config.data, 16, None)[2], config.width, config.depth, 1)
    trained = train_flops(config.train_n, net, config.train_steps)
    trained += 2 * entk_flops(config.n, config.n, net)
    trained += infinite_flops(config.train_n, config.train_n, config.depth)
    work = config.seeds * entk_flops(config.n, config.n, net) + config.train_seeds * trained
    work += infinite_flops(config.n, config.n, config.depth)
    floats = 4 * net.params + entk_floats(config.train_n, net) + config.seeds * config.n**2
    return cost_of(
        "init_fluctuations",
        work,
        floats,
        entks=config.seeds + 2 * config.train_seeds,
        steps=config.train_seeds * config.train_steps,
    )


def predicted_dispersion(config: Config) -> float:
    """Hanin & Nica's exp(5β) − 1 with β = depth / width, for ReLU with σ_b = 0; else NaN.

    Their theorem is for σ_w² = 2; with σ_b = 0 a ReLU network in NTK parameterization is
    positively homogeneous in σ_w (every gradient carries σ_w^{L+1}), so the ratio Var/E²
    is the same for every σ_w (docs/conventions.md, order/chaos caution).
    """
    if config.activation != ActivationName.RELU or config.sigma_b != 0:
        return math.nan
    return math.expm1(5 * config.depth / config.width)


def _network(config: Config, d_in: int, seed: int) -> torch.nn.Module:
    """The float64 MLP of ``config`` with a scalar output, initialized by ``seed``."""
    return models.mlp(
        d_in, config.width, config.depth, 1, activation=config.activation,
        sigma_w=config.sigma_w, sigma_b=config.sigma_b, seed=seed,
    ).to(torch.float64)  # fmt: skip


def _infinite(config: Config, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ^{L+1}, Θ^{L+1}) on ``x``, float64."""
    return infinite_kernels(
        x, depth=config.depth, activation=config.activation, sigma_w=config.sigma_w,
        sigma_b=config.sigma_b,
    )  # fmt: skip


def _draw(config: Config, x: torch.Tensor, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Θ̂ (S, n, n) and f(x) (S, n) at ``config.seeds`` independent initializations."""
    kernels, outputs = [], []
    for k in range(config.seeds):
        model = _network(config, x.shape[1], config.seed + k)
        kernels.append(empirical_ntk(model, x, mode="trace").numpy())
        with torch.no_grad():
            outputs.append(model(x)[:, 0].numpy())
        progress(k + 1, config.seeds + config.train_seeds)
    return np.stack(kernels), np.stack(outputs)


def dispersion(values: np.ndarray) -> float:
    """Var/E² over seeds of each column of ``values`` (S, m), averaged over the m columns.

    The variance is the unbiased sample variance; its relative standard error is about
    √(2/S) for Gaussian draws and larger for heavy-tailed ones (√((2 + κ)/S), κ the excess
    kurtosis of the entry).
    """
    return float(np.mean(values.var(axis=0, ddof=1) / values.mean(axis=0) ** 2))


def _distance(kernel: np.ndarray, reference: np.ndarray) -> float:
    return metrics.relative_distance(torch.from_numpy(kernel), torch.from_numpy(reference))


def _kernel_change(config: Config, x: torch.Tensor, seed: int) -> float:
    """‖Θ̂_T − Θ̂_0‖_F / ‖Θ̂_0‖_F on ``x`` after ``train_steps`` of full-batch GD."""
    data = load(
        DatasetName.GAUSSIAN, config.train_n, seed=config.seed + 1, dtype=torch.float64,
        d=x.shape[1],
    )  # fmt: skip
    _, ntk = _infinite(config, data.x)
    lr = config.lr_fraction * stability_limit(ntk)  # 2N/λ_max of the infinite NTK
    recorder = KernelRecorder(x, every=config.train_steps)
    model = _network(config, x.shape[1], seed)
    trajectory = train(model, data, lr=lr, steps=config.train_steps, recorders=[recorder])
    return trajectory.last("kernel_change")


def _training(config: Config, x: torch.Tensor, progress: Progress) -> pd.DataFrame:
    """Kernel change per trained seed: columns seed, kernel_change."""
    rows = []
    for k in range(config.train_seeds):
        seed = config.seed + k
        rows.append((seed, _kernel_change(config, x, seed)))
        progress(config.seeds + k + 1, config.seeds + config.train_seeds)
    return pd.DataFrame(rows, columns=["seed", "kernel_change"])


def _draws_table(config: Config, kernels: np.ndarray, outputs: np.ndarray) -> pd.DataFrame:
    """One row per seed and probe input: seed, input, ntk_diagonal Θ̂(x, x), output f(x)."""
    s, n = outputs.shape
    return pd.DataFrame({
        "seed": np.repeat(np.arange(config.seed, config.seed + s), n),
        "input": np.tile(np.arange(n), s),
        "ntk_diagonal": np.einsum("sii->si", kernels).ravel(),
        "output": outputs.ravel(),
    })  # fmt: skip


def _meaningful_pairs(ntk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The off-diagonal pairs (i < j) whose infinite-NTK correlation |cos Θ| =
    |Θ(x_i, x_j)| / √(Θ(x_i, x_i) Θ(x_j, x_j)) is at least `_MEANINGFUL`: elsewhere the seed
    mean of Θ̂(x_i, x_j), the denominator of Var/E², is near zero (deep erf/tanh networks
    decorrelate their inputs: |cos Θ| ≤ 0.005 on digits at depth 32), and Var/E² explodes."""
    i, j = np.triu_indices(len(ntk), 1)
    scale = np.sqrt(np.diag(ntk))
    keep = np.abs(ntk[i, j]) >= _MEANINGFUL * scale[i] * scale[j]
    return i[keep], j[keep]


def _statistics(config, kernels, outputs, nngp, ntk) -> dict[str, float]:
    """The initialization metrics of `run` from the draws and the infinite kernels."""
    i, j = _meaningful_pairs(ntk)
    diagonal = dispersion(np.einsum("sii->si", kernels))
    predicted = predicted_dispersion(config)
    return {
        "beta": config.depth / config.width,
        "dispersion_diagonal": diagonal,
        "dispersion_off_diagonal": dispersion(kernels[:, i, j]) if len(i) else math.nan,
        "off_diagonal_pairs": 2 * len(i) / (config.n * (config.n - 1)),
        "predicted_dispersion": predicted,
        "dispersion_ratio": diagonal / predicted,
        "distance_single": float(np.mean([_distance(k, ntk) for k in kernels])),
        "distance_mean": _distance(kernels.mean(axis=0), ntk),
        "output_variance_ratio": float(np.mean(outputs.var(axis=0, ddof=1) / np.diag(nngp))),
        "excess_kurtosis": float(np.mean(stats.kurtosis(outputs, axis=0))),
    }


def run(config: Config, progress: Progress) -> Result:
    """Draw Θ̂ and f at every seed, compare with the infinite kernels, train a few seeds.

    Returns:
        metrics: ``beta``; ``dispersion_diagonal``, ``dispersion_off_diagonal`` (over the
        pairs with |cos Θ| ≥ 0.1, NaN if none) and ``off_diagonal_pairs`` (their fraction),
        ``predicted_dispersion`` (exp(5β) − 1, NaN off its setting) and ``dispersion_ratio``
        (diagonal / predicted); ``distance_single`` (mean over seeds) and ``distance_mean``
        (of the seed-mean Θ̂); ``output_variance_ratio`` (mean over inputs of
        Var[f(x)] / Σ^{L+1}(x, x)); ``excess_kurtosis`` (mean over inputs);
        ``kernel_change`` (mean over trained seeds, NaN if none).
        tables: ``draws`` (seed, input, ntk_diagonal, output), ``training`` (seed,
        kernel_change). arrays: ``kernels`` (S, n, n), ``outputs`` (S, n), ``ntk`` and
        ``nngp`` (n, n) infinite kernels.
    """
    x = load(config.data, config.n, seed=config.seed, dtype=torch.float64).x
    nngp, ntk = (k.numpy() for k in _infinite(config, x))
    kernels, outputs = _draw(config, x, progress)
    training = _training(config, x, progress)
    change = training.kernel_change.mean() if len(training) else math.nan
    return Result(
        metrics=_statistics(config, kernels, outputs, nngp, ntk) | {"kernel_change": change},
        tables={"draws": _draws_table(config, kernels, outputs), "training": training},
        arrays={"kernels": kernels, "outputs": outputs, "ntk": ntk, "nngp": nngp},
    )


def _slope(group: pd.DataFrame, metric: str) -> float:
    """Least-squares slope of log(metric) against log(width) (NaN under two measured widths)."""
    group = group[np.isfinite(group[f"metrics.{metric}"])]
    widths, values = group["config.width"].to_numpy(float), group[f"metrics.{metric}"]
    if np.unique(widths).size < 2:
        return math.nan
    return float(np.polyfit(np.log(widths), np.log(values.to_numpy(float)), 1)[0])


def _axes(xlabel: str, ylabel: str, title: str, yscale: str = "log"):
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.subplots()
    axes.set(xscale="log", yscale=yscale, xlabel=xlabel, ylabel=ylabel, title=title)
    return figure, axes


def _dispersion_figure(results: Results) -> Figure:
    """Diagonal dispersion against β, one marker series per group, and exp(5β) − 1."""
    figure, axes = _axes("β = depth / width", "Var[Θ̂(x,x)] / E[Θ̂(x,x)]²", "eNTK dispersion")
    for label, group in settings(results.runs, ("width",), "all"):
        axes.plot(group["metrics.beta"], group["metrics.dispersion_diagonal"], "o", label=label)
    beta = np.geomspace(results.runs["metrics.beta"].min(), results.runs["metrics.beta"].max())
    axes.plot(beta, np.expm1(5 * beta), "k--", lw=1, label="exp(5β) − 1 (Hanin & Nica)")
    axes.legend(fontsize="small")
    return figure


def _width_figure(results: Results, metric: str, ylabel: str, title: str, yscale: str) -> Figure:
    """``metric`` against width, one line per group (depth included): on log axes with the
    fitted slope in the legend, on a linear axis with the Gaussian value 0 dashed."""
    figure, axes = _axes("width", ylabel, title, yscale)
    for label, group in settings(results.runs, ("width",), "all"):
        slope = f" (slope {_slope(group, metric):.2f})" if yscale == "log" else ""
        axes.plot(group["config.width"], group[f"metrics.{metric}"], "o-", label=label + slope)
    widths = np.unique(results.runs["config.width"])
    axes.set_xticks(widths, [str(w) for w in widths])
    axes.xaxis.set_minor_locator(NullLocator())
    if yscale == "linear":
        axes.axhline(0.0, color="k", ls="--", lw=1, label="Gaussian (infinite width)")
    axes.legend(fontsize="small")
    return figure


def figures(results: Results) -> dict[str, Figure]:
    """``dispersion_vs_beta``, ``distance_vs_width``, ``kurtosis_vs_width`` and
    ``kernel_change_vs_width``, drawn from stored results."""
    return {
        "dispersion_vs_beta": _dispersion_figure(results),
        "distance_vs_width": _width_figure(
            results, "distance_single", "‖Θ̂ − Θ‖_F / ‖Θ‖_F (one seed)",
            "eNTK to infinite NTK", "log",
        ),
        "kurtosis_vs_width": _width_figure(
            results, "excess_kurtosis", "excess kurtosis of f(x)", "Output at initialization",
            "linear",
        ),
        "kernel_change_vs_width": _width_figure(
            results, "kernel_change", "‖Θ̂_T − Θ̂_0‖_F / ‖Θ̂_0‖_F", "Kernel change in training",
            "log",
        ),
    }  # fmt: skip


def _span(values: pd.Series) -> str:
    return f"{values.min():.2f} to {values.max():.2f}"


def _with_width(runs: pd.DataFrame, metric: str) -> str:
    """How |``metric``| changes with width, each setting (activation, depth, ...: the config
    fields other than width that vary) compared only with itself, between the narrowest and
    the widest width it was run at. Never a mean over settings: a deep cell that exists only
    at large widths would make a mean over depths rise with width although every cell falls."""
    ratios = []
    for _, group in settings(runs, ("width",), "all"):
        means = group.groupby("config.width")[f"metrics.{metric}"].mean().dropna().abs()
        if len(means) >= 2:
            ratios.append(means.iloc[-1] / means.iloc[0])
    if not ratios:
        return "not measured at two widths in any setting"
    ratios = pd.Series(ratios)
    falls = f"falls with width in {(ratios < 1).sum()} of {len(ratios)} settings"
    return f"{falls} (each widest / narrowest: {_span(ratios)}, median {ratios.median():.2f})"


def _off_diagonal_caption(runs: pd.DataFrame) -> str:
    """Off-diagonal / diagonal dispersion, over the runs that measured off-diagonal pairs
    whose mean is not near zero (``off_diagonal_pairs`` > 0; see `_statistics`)."""
    if "metrics.off_diagonal_pairs" not in runs:
        return "off-diagonal dispersion not shown (runs stored before its pairs were screened)"
    measured = runs[runs["metrics.off_diagonal_pairs"] > 0]
    off = (measured["metrics.dispersion_off_diagonal"]
           / measured["metrics.dispersion_diagonal"]).dropna()  # fmt: skip
    skipped = f"; {len(runs) - len(off)} runs without such pairs" if len(off) < len(runs) else ""
    if off.empty:
        return f"off-diagonal dispersion not shown: no pair with |cos Θ| ≥ {_MEANINGFUL}{skipped}"
    return (f"off-diagonal / diagonal dispersion {_span(off)} over pairs with "
            f"|cos Θ| ≥ {_MEANINGFUL} ({len(off)} runs{skipped})")  # fmt: skip


def _dispersion_caption(runs: pd.DataFrame) -> str:
    ratio = runs["metrics.dispersion_ratio"].dropna()
    small = runs.loc[runs["metrics.beta"] <= 0.5, "metrics.dispersion_ratio"].dropna()
    law = (f"Dispersion / (exp(5β) − 1) at β ≤ 0.5: {_span(small)} over {len(small)} runs "
           f"(median {small.median():.2f}; all β: {_span(ratio)})" if len(small)
           else "No run at β ≤ 0.5 in Hanin & Nica's setting (ReLU, σ_b = 0)")  # fmt: skip
    return f"{law}; {_off_diagonal_caption(runs)}."


def _distance_caption(runs: pd.DataFrame) -> str:
    slopes = pd.Series(
        [_slope(group, "distance_single") for _, group in settings(runs, ("width",), "all")]
    )
    ratio = runs["metrics.distance_mean"] / runs["metrics.distance_single"]
    return (f"Single-seed distance: fitted slopes {_span(slopes.dropna())} (theory −1/2); the "
            f"seed-mean eNTK is {_span(ratio)} times as far from the infinite NTK.")  # fmt: skip


def captions(results: Results) -> dict[str, str]:
    """What the stored runs say, with numbers computed from them."""
    runs = results.runs
    variance = runs["metrics.output_variance_ratio"]
    kurtosis = _with_width(runs, "excess_kurtosis")
    return {
        "dispersion_vs_beta": _dispersion_caption(runs),
        "distance_vs_width": _distance_caption(runs),
        "kurtosis_vs_width": f"|Excess kurtosis| of f(x) {kurtosis}; "
        f"Var[f(x)] / NNGP diagonal {_span(variance)} (median {variance.median():.2f}).",
        "kernel_change_vs_width": "Relative kernel change after training "
        f"{_with_width(runs, 'kernel_change')}."
        if runs["metrics.kernel_change"].notna().any()
        else "No run trained a network (train_seeds = 0).",
    }  # fmt: skip


def claims(results: Results) -> list[Claim]:
    """Hanin & Nica's dispersion law (ReLU, σ_b = 0, β ≤ 0.5), and the kernel's change in
    training shrinking with width (one log-log slope per setting)."""
    runs = results.runs
    ratio = estimate(runs.loc[runs["metrics.beta"] <= 0.5, "metrics.dispersion_ratio"])
    slope = estimate(
        _slope(group, "kernel_change") for _, group in settings(runs, ("width",), "all")
    )
    falls = Claim(
        "the kernel moves less in training as width grows (lazy training at large width)",
        "Jacot et al. 2018; Lee et al. 2019",
        f"log-log slope of the relative kernel change against width {slope}",
        below(slope, 0.0),
        "reproduced if the 95% interval of the mean slope over settings lies below 0; not "
        "reproduced if above",
    )
    return [
        Claim(
            "the eNTK's seed dispersion at initialization is exp(5β) − 1, β = depth / width (ReLU)",
            "Hanin & Nica 2019",
            f"measured / predicted dispersion at β ≤ 0.5 {ratio}",
            within(ratio, 0.5, 2.0),
            "reproduced if the 95% interval of the mean ratio over runs lies in [1/2, 2] "
            "(the law within a factor 2); not reproduced if it lies outside",
        ),
        falls,
    ]
