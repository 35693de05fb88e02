"""Figures and captions of the `phase_diagram` study, drawn from stored results only.

Runs are grouped by every config field that varies apart from ``sigma_w2`` and ``depth``
(activation, parameterization, σ_b, width, ...); each group is one (σ_w², depth) grid. The
phases of a group are read from the stored χ_1: "ordered" is the σ_w² of smallest χ_1,
"chaotic" of largest, "EOC" the one closest to χ_1 = 1 (Schoenholz et al. 2017).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ntkscope.studies._base import Results, settings
from ntkscope.studies._claims import Claim, above, difference, estimate

QUANTITIES = {
    "dispersion": "dispersion Var/E² of Θ̂(x, x)",
    "kernel_change": "kernel change ‖Θ̂_T − Θ̂_0‖/‖Θ̂_0‖",
    "loss_decrease": "loss decrease 1 − L_T/L_0",
}
"""The stored metrics drawn in the heat maps and cuts, with their axis labels."""

_GRID = ("sigma_w2", "depth")


def _grid(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean of ``metrics.<metric>`` with depth as rows and σ_w² as columns."""
    return runs.pivot_table(index="config.depth", columns="config.sigma_w2",
                            values=f"metrics.{metric}", aggfunc="mean")  # fmt: skip


def _edge_position(runs: pd.DataFrame) -> float | None:
    """Column index (fractional) where the stored χ_1 crosses 1, None if it does not."""
    chi = runs.groupby("config.sigma_w2")["metrics.chi_1"].mean().to_numpy()
    if not chi.min() <= 1 <= chi.max() or len(chi) < 2:
        return None
    return float(np.interp(1.0, chi, np.arange(len(chi))))


def phases(runs: pd.DataFrame) -> dict[str, float]:
    """σ_w² of the ordered, EOC and chaotic cuts of one group (by the stored χ_1)."""
    chi = runs.groupby("config.sigma_w2")["metrics.chi_1"].mean()
    return {
        "ordered": float(chi.idxmin()),
        "EOC": float((chi - 1).abs().idxmin()),
        "chaotic": float(chi.idxmax()),
    }


def _heatmap(axes, runs: pd.DataFrame, metric: str) -> None:
    grid = _grid(runs, metric)
    image = axes.imshow(grid.to_numpy(), origin="lower", aspect="auto", cmap="viridis")
    axes.figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns])
    axes.set_yticks(range(grid.shape[0]), [str(v) for v in grid.index])
    edge = _edge_position(runs)
    if edge is not None:
        axes.axvline(edge, color="w", ls="--", lw=1.5, label="χ_1 = 1")
        axes.legend(fontsize="x-small", loc="upper left")
    axes.set(xlabel="σ_w²", ylabel="depth", title=QUANTITIES[metric])


def _panels(results: Results, draw) -> Figure:
    """One row per setting, one panel per quantity: ``draw(axes, runs, metric, label)``."""
    groups = settings(results.runs, _GRID)
    figure = Figure(figsize=(5 * len(QUANTITIES), 3.8 * len(groups)), layout="constrained")
    rows = figure.subplots(len(groups), len(QUANTITIES), squeeze=False)
    for (label, runs), row in zip(groups, rows, strict=True):
        for axes, metric in zip(row, QUANTITIES, strict=True):
            draw(axes, runs, metric, label)
    return figure


def _heatmap_figure(results: Results) -> Figure:
    """One row per setting, one heat map per quantity, each with the χ_1 = 1 line."""

    def draw(axes, runs: pd.DataFrame, metric: str, label: str) -> None:
        _heatmap(axes, runs, metric)
        if metric == next(iter(QUANTITIES)):
            axes.set_ylabel(f"{label}\ndepth" if label else "depth")

    return _panels(results, draw)


def _hanin_nica(axes, runs: pd.DataFrame) -> None:
    """Theory line exp(5 L/n) − 1 (Hanin & Nica 2019; ReLU, σ_w² = 2, σ_b = 0)."""
    depths = np.sort(runs["config.depth"].unique()).astype(float)
    width = float(runs["config.width"].iloc[0])
    axes.plot(
        depths, np.expm1(5 * depths / width), "k:", lw=1, label="exp(5L/n) − 1 (ReLU EOC, σ_b = 0)"
    )


def _cut_figure(results: Results) -> Figure:
    """Each quantity against depth at the ordered, EOC and chaotic σ_w² of every setting."""

    def draw(axes, runs: pd.DataFrame, metric: str, label: str) -> None:
        grid = _grid(runs, metric)
        chi = runs.groupby("config.sigma_w2")["metrics.chi_1"].mean()
        for phase, sigma_w2 in phases(runs).items():
            axes.plot(grid.index, grid[sigma_w2], "o-",
                      label=f"{phase}: σ_w²={sigma_w2:g}, χ_1={chi[sigma_w2]:.2f}")  # fmt: skip
        if metric == "dispersion" and (runs["config.activation"] == "relu").all():
            _hanin_nica(axes, runs)
        axes.set(xlabel="depth", ylabel=QUANTITIES[metric], title=label or None)
        axes.legend(fontsize="x-small")

    return _panels(results, draw)


def _variance_figure(results: Results) -> Figure:
    """Output variance over seeds after training: NTK prediction against measurement."""
    figure = Figure(figsize=(5, 4.5), layout="constrained")
    axes = figure.subplots()
    runs = results.runs
    for phase, sign in (("ordered", -1), ("EOC", 0), ("chaotic", 1)):
        chosen = runs[runs["metrics.phase"] == sign]
        axes.plot(chosen["metrics.output_variance"], chosen["metrics.output_variance_predicted"],
                  "o", label=phase)  # fmt: skip
    span = runs[["metrics.output_variance", "metrics.output_variance_predicted"]].to_numpy()
    limits = [span[span > 0].min(), span.max()]
    axes.plot(limits, limits, "k--", lw=1, label="prediction = measurement")
    axes.set(xscale="log", yscale="log", xlabel="measured Var_s[f_T(x)]",
             ylabel="NTK-predicted Var_s[f_T(x)]")  # fmt: skip
    axes.legend(fontsize="small")
    return figure


def figures(results: Results) -> dict[str, Figure]:
    """``heatmaps``, ``cuts`` and ``output_variance``, drawn from stored results."""
    return {
        "heatmaps": _heatmap_figure(results),
        "cuts": _cut_figure(results),
        "output_variance": _variance_figure(results),
    }


def _at(runs: pd.DataFrame, metric: str, depth: int) -> str:
    """``chaotic a, EOC b, ordered c`` for one metric at one depth."""
    grid = _grid(runs, metric)
    chosen = phases(runs)
    return ", ".join(f"{p} {grid.loc[depth, chosen[p]]:.3g}" for p in ("chaotic", "EOC", "ordered"))


def _trend(runs: pd.DataFrame, metric: str, phase: str) -> str:
    """``a → b`` of one metric from the shallowest to the deepest run of one phase."""
    column = _grid(runs, metric)[phases(runs)[phase]]
    return f"{column.iloc[0]:.3g} → {column.iloc[-1]:.3g}"


def captions(results: Results) -> dict[str, str]:
    """What the stored runs say, per phase, for the first setting (numbers from the store)."""
    label, runs = settings(results.runs, _GRID)[0]
    setting = f" ({label})" if label else ""
    deepest = int(runs["config.depth"].max())
    depths = f"depth {int(runs['config.depth'].min())} → {deepest}"
    return {
        "heatmaps": f"At depth {deepest}{setting}: dispersion {_at(runs, 'dispersion', deepest)}; "
        f"kernel change {_at(runs, 'kernel_change', deepest)}; "
        f"loss decrease {_at(runs, 'loss_decrease', deepest)}.",
        "cuts": f"{depths}{setting}: chaotic dispersion {_trend(runs, 'dispersion', 'chaotic')}, "
        f"kernel change {_trend(runs, 'kernel_change', 'chaotic')}; ordered loss decrease "
        f"{_trend(runs, 'loss_decrease', 'ordered')}, kernel change "
        f"{_trend(runs, 'kernel_change', 'ordered')}.",
        "output_variance": f"NTK-predicted / measured output variance at depth {deepest}"
        f"{setting}: {_at(runs, 'output_variance_ratio', deepest)}.",
    }


def _angle_dispersions(runs: pd.DataFrame, sigma_w2: float, depth: int) -> pd.Series:
    """The seed dispersions at each probe angle of the run at (σ_w², depth)."""
    run = runs[(runs["config.sigma_w2"] == sigma_w2) & (runs["config.depth"] == depth)]
    return run.filter(regex=r"^metrics\.dispersion_\d+$").iloc[0]


def claims(results: Results) -> list[Claim]:
    """The chaotic phase's random eNTK, at the deepest depth of the first setting."""
    label, runs = settings(results.runs, _GRID)[0]
    deepest, chosen = int(runs["config.depth"].max()), phases(runs)
    chaotic, ordered = (
        _angle_dispersions(runs, chosen[p], deepest) for p in ("chaotic", "ordered")
    )
    gap = difference(chaotic, ordered)
    setting = f", {label}" if label else ""
    return [
        Claim(
            "the eNTK is random at initialization in the chaotic phase (deep networks), "
            "near-deterministic in the ordered phase",
            "Seleznova & Kutyniok 2022",
            f"seed dispersion at depth {deepest}{setting}: chaotic {estimate(chaotic)}, ordered "
            f"{estimate(ordered)}; chaotic − ordered {gap}",
            above(gap, 0.0),
            "over the probe angles, reproduced if the Welch 95% interval of the dispersion "
            "difference chaotic − ordered at the deepest depth lies above 0; not reproduced if "
            "below",
        )
    ]
