"""Width convergence: the eNTK approaches the infinite-width NTK as width^(-1/2).

At initialization the empirical NTK Θ̂ of an MLP in NTK parameterization fluctuates around
the infinite-width NTK Θ with a standard deviation of order 1/√width (Jacot et al. 2018;
Hanin & Nica 2019), so the relative distance ‖Θ̂ − Θ‖_F / ‖Θ‖_F (docs/conventions.md) falls as
width^(-1/2). For each width the distance is averaged over independent initializations, and
the exponent is the least-squares slope of log(mean distance) against log(width).

Presets (sized by the quick preset's measurement, 2-core machine): quick's 6 runs already
put the mean exponent at −0.513 [−0.563, −0.463], inside the claim's [−0.75, −0.25] by more
than 4 half-widths, so ``standard`` spends its minutes on breadth (tanh, widths to 2048,
n = 64, 6 seeds: 9 runs, ~2 CPU-minutes estimated), not on more seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from ntkscope import models
from ntkscope.data import DatasetName, load
from ntkscope.kernels import empirical_ntk, infinite_kernels
from ntkscope.models import ActivationName
from ntkscope.studies._base import Progress, Result, Results, StudyConfig
from ntkscope.studies._claims import Claim, estimate, within
from ntkscope.studies._cost import (
    Cost,
    cost_of,
    entk_floats,
    entk_flops,
    infinite_flops,
    mlp,
    task_shape,
)

EXPECTED_SLOPE = -0.5
"""The exponent that NTK theory predicts for the distance against width."""


class Config(StudyConfig):
    """One width scan: an MLP family on one data sample, several initializations per width."""

    data: DatasetName = DatasetName.DIGITS
    """Built-in data set of the probe inputs ("digits" or "gaussian")."""
    n: PositiveInt = 32
    """Number of probe inputs; the kernels are n × n."""
    depth: NonNegativeInt = 2
    """Hidden layers L of the MLP."""
    activation: ActivationName = ActivationName.RELU
    """Activation φ; relu, erf and identity have closed-form infinite kernels (fastest)."""
    sigma_w: NonNegativeFloat = math.sqrt(2.0)
    """Weight standard deviation σ_w."""
    sigma_b: NonNegativeFloat = 0.0
    """Bias standard deviation σ_b."""
    widths: tuple[PositiveInt, ...] = Field((64, 128, 256, 512), min_length=2)
    """Hidden widths scanned (at least two distinct, for the fit)."""
    seeds: PositiveInt = 3
    """Independent initializations per width: seeds seed, seed + 1, ..."""
    seed: NonNegativeInt = 0
    """First initialization seed; also the seed of the data sample."""


PRESETS = {
    "quick": {
        "fixed": {"n": 32, "widths": [64, 128, 256, 512, 1024], "seeds": 4},
        "product": {"depth": [1, 2, 3], "activation": ["relu", "erf"]},
    },
    "standard": {
        "fixed": {"n": 64, "widths": [64, 128, 256, 512, 1024, 2048], "seeds": 6},
        "product": {"depth": [1, 2, 3], "activation": ["relu", "erf", "tanh"]},
    },
    "paper": {
        "fixed": {"n": 256, "widths": [128, 256, 512, 1024, 2048, 4096, 8192], "seeds": 16},
        "product": {"depth": [1, 2, 3, 4, 5], "activation": ["relu", "erf", "tanh"]},
    },
}


def cost(config: Config) -> Cost:
    """Estimated time and peak memory of a run (`ntkscope.studies.Cost`): the infinite NTK
    once, one scalar-output eNTK on the n probes per width and seed."""
    d = task_shape(config.data, 16, None)[2]
    work = infinite_flops(config.n, config.n, config.depth) + sum(
        config.seeds * entk_flops(config.n, config.n, mlp(d, w, config.depth, 1))
        for w in set(config.widths)
    )
    widest = mlp(d, max(config.widths), config.depth, 1)
    return cost_of(
        "width_convergence",
        work,
        2 * widest.params + entk_floats(config.n, widest),
        entks=len(set(config.widths)) * config.seeds,
    )


def _distance(config: Config, x: torch.Tensor, ntk: torch.Tensor, width: int, seed: int) -> float:
    """‖Θ̂ − Θ‖_F / ‖Θ‖_F for one initialization (float64 throughout)."""
    model = models.mlp(
        x.shape[1],
        width,
        config.depth,
        1,
        activation=config.activation,
        sigma_w=config.sigma_w,
        sigma_b=config.sigma_b,
        seed=seed,
    ).to(torch.float64)
    kernel = empirical_ntk(model, x, mode="trace")
    return float(torch.linalg.norm(kernel - ntk) / torch.linalg.norm(ntk))


def run(config: Config, progress: Progress) -> Result:
    """Distances for every width and seed, and the fitted log-log slope.

    Returns:
        metrics: ``slope`` (≈ −1/2), ``intercept`` (log distance at width 1), ``distance_at_widest``
        (mean over seeds). tables: ``distances`` (width, seed, distance). arrays: ``widths``,
        ``mean_distance``.
    """
    x = load(config.data, config.n, seed=config.seed, dtype=torch.float64).x
    _, ntk = infinite_kernels(
        x, depth=config.depth, activation=config.activation, sigma_w=config.sigma_w,
        sigma_b=config.sigma_b,
    )  # fmt: skip
    widths = sorted(set(config.widths))
    seeds = range(config.seed, config.seed + config.seeds)
    rows = []
    for width in widths:
        for seed in seeds:
            rows.append((width, seed, _distance(config, x, ntk, width, seed)))
            progress(len(rows), len(widths) * len(seeds))
    table = pd.DataFrame(rows, columns=["width", "seed", "distance"])
    mean = table.groupby("width")["distance"].mean()
    slope, intercept = np.polyfit(np.log(mean.index.to_numpy(float)), np.log(mean.to_numpy()), 1)
    return Result(
        metrics={"slope": slope, "intercept": intercept, "distance_at_widest": mean.iloc[-1]},
        tables={"distances": table},
        arrays={"widths": mean.index.to_numpy(), "mean_distance": mean.to_numpy()},
    )


def _distance_figure(results: Results) -> Figure:
    """Mean distance against width per run, log-log, with the fitted lines and width^(-1/2)."""
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.subplots()
    distances = results.tables["distances"]
    for (_, run), label in zip(results.runs.iterrows(), results.labels(), strict=True):
        stats = distances[distances.hash == run.hash].groupby("width")["distance"]
        mean, sd = stats.mean(), stats.std()
        line = axes.errorbar(mean.index, mean, yerr=sd, fmt="o", capsize=2, label=label)
        fit = np.exp(run["metrics.intercept"]) * mean.index.to_numpy(float) ** run["metrics.slope"]
        axes.plot(mean.index, fit, color=line[0].get_color(), lw=1)
    widths = distances.width.unique()
    anchor = distances.groupby("width").distance.mean().iloc[0]
    reference = anchor * (widths / widths.min()) ** EXPECTED_SLOPE
    axes.plot(widths, reference, "k--", lw=1, label="∝ width^(-1/2)")
    axes.set(xscale="log", yscale="log", xlabel="width", ylabel="‖Θ̂ − Θ‖_F / ‖Θ‖_F")
    axes.set_title("eNTK to infinite NTK (mean ± sd over seeds)")
    axes.legend(fontsize="small")
    return figure


def _slope_figure(results: Results) -> Figure:
    """Fitted exponent per run against the predicted −1/2."""
    figure = Figure(figsize=(6, 3.5), layout="constrained")
    axes = figure.subplots()
    labels = results.labels()
    axes.plot(results.runs["metrics.slope"], range(len(labels)), "o", color="tab:blue")
    axes.axvline(EXPECTED_SLOPE, color="k", ls="--", lw=1, label="theory: −1/2")
    axes.set_yticks(range(len(labels)), labels, fontsize="small")
    axes.set(xlabel="fitted slope of log distance vs log width")
    axes.legend(fontsize="small")
    return figure


def figures(results: Results) -> dict[str, Figure]:
    """``distance_vs_width`` and ``slopes``, drawn from stored results."""
    return {"distance_vs_width": _distance_figure(results), "slopes": _slope_figure(results)}


def captions(results: Results) -> dict[str, str]:
    """What the stored runs say: the fitted exponents against the predicted −1/2."""
    slopes = results.runs["metrics.slope"]
    pairs = ", ".join(f"{label} {v:.2f}" for label, v in zip(results.labels(), slopes, strict=True))
    widest = results.runs["metrics.distance_at_widest"]
    return {
        "distance_vs_width": f"Fitted exponents {slopes.min():.2f} to {slopes.max():.2f} "
        f"(theory −1/2); distance at the widest width {widest.min():.3g} to {widest.max():.3g}.",
        "slopes": f"Fitted exponent per run: {pairs}.",
    }


def claims(results: Results) -> list[Claim]:
    """The 1/√width rate: the mean fitted exponent over runs, against −1/2."""
    slope = estimate(results.runs["metrics.slope"])
    return [
        Claim(
            "the eNTK's distance to the infinite NTK falls as width^(−1/2)",
            "Jacot et al. 2018; Hanin & Nica 2019",
            f"fitted exponent {slope}",
            within(slope, -0.75, -0.25),
            "reproduced if the 95% interval of the mean exponent over runs lies in "
            "[−0.75, −0.25]; not reproduced if it lies outside",
        )
    ]
