"""Figures and captions of the scaling_laws study, drawn from stored results only.

``loss_vs_n``: Vyas et al. (2022) Figure 1A per run: test loss against n, log-log, for the
network, the eNTK at initialization, the infinite NTK and the after-kernels K_m (seed means,
with the fitted power laws; exponents and 95% intervals in the legend).
``after_kernel_vs_m``: test loss of K_m at the largest n against m, with the network and the
eNTK at initialization (K_0) as reference lines.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ntkscope.studies._base import Results
from ntkscope.studies._claims import MIN_RUNS, Claim, Estimate, effect, minus

_LABELS = {"network": "network", "entk_init": "eNTK at init", "ntk": "infinite NTK",
           "nngp": "NNGP"}  # fmt: skip
_SHOWN = ("network", "entk_init", "ntk")
"""Curves of loss_vs_n besides the after-kernels (the NNGP is in the captions and tables)."""


def _after_sizes(losses: pd.DataFrame) -> list[int]:
    methods = losses.method.unique()
    return sorted(int(m.removeprefix("after_")) for m in methods
                  if m.startswith("after_") and not m.endswith("_ridgeless"))  # fmt: skip


def _label(method: str) -> str:
    return _LABELS.get(method) or f"after-kernel K_{method.removeprefix('after_')}"


def _alpha(run: pd.Series, method: str) -> Estimate:
    """A run's fitted exponent with its bootstrap 95% interval (n: the run's seeds)."""
    a, low, high = (float(run[f"metrics.alpha_{method}{s}"]) for s in ("", "_low", "_high"))
    return Estimate(a, low, high, int(run.get("config.seeds", MIN_RUNS)))


def _exponent(run: pd.Series, method: str) -> str:
    a = _alpha(run, method)
    return f"α = {a.mean:.2f} [{a.low:.2f}, {a.high:.2f}]"


def _runs(results: Results):
    """(label, run row, its losses table) per stored run; the label is the task when the
    tasks tell the runs apart, else the config fields that differ."""
    losses, runs = results.tables["losses"], results.runs
    labels = results.labels()
    if "config.task" in runs and runs["config.task"].nunique() == len(runs) > 1:
        labels = "task=" + runs["config.task"].astype(str)
    for (_, run), label in zip(runs.iterrows(), labels, strict=True):
        yield label, run, losses[losses.hash == run.hash]


def _loss_panel(axes, label: str, run: pd.Series, losses: pd.DataFrame) -> None:
    methods = [*_SHOWN, *(f"after_{m}" for m in _after_sizes(losses))]
    for method in methods:
        mean = losses[losses.method == method].groupby("n").test_loss.mean()
        line = axes.plot(mean.index, mean, "o", ms=4,
                         label=f"{_label(method)}: {_exponent(run, method)}")  # fmt: skip
        n = mean.index.to_numpy(float)
        fit = np.exp(run[f"metrics.intercept_{method}"]) * n ** -run[f"metrics.alpha_{method}"]
        axes.plot(n, fit, color=line[0].get_color(), lw=1)
    axes.set(xscale="log", yscale="log", xlabel="training examples n", ylabel="test MSE")
    axes.set_title(label, fontsize="small")
    axes.legend(fontsize="x-small")


def _figure(count: int) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(6 * count, 4.5), layout="constrained")
    return figure, np.atleast_1d(figure.subplots(1, count))


def loss_figure(results: Results) -> Figure:
    """Test loss against n per run (see the module docstring)."""
    figure, axes = _figure(len(results.runs))
    for ax, (label, run, losses) in zip(axes, _runs(results), strict=True):
        _loss_panel(ax, label, run, losses)
    return figure


def _at_largest(losses: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds of each method's test loss at the largest n."""
    largest = losses[losses.n == losses.n.max()]
    return largest.groupby("method").test_loss.agg(["mean", "std"])


def after_kernel_figure(results: Results) -> Figure:
    """K_m's test loss at the largest n against m, per run."""
    figure, axes = _figure(len(results.runs))
    for ax, (label, _, losses) in zip(axes, _runs(results), strict=True):
        stats, sizes = _at_largest(losses), _after_sizes(losses)
        after = stats.loc[[f"after_{m}" for m in sizes]]
        ax.errorbar(sizes, after["mean"], yerr=after["std"], fmt="o-", capsize=2, label="K_m")
        for method, style, label_ in (("network", "--", "network"),
                                      ("entk_init", ":", "eNTK at init (K_0)")):  # fmt: skip
            ax.axhline(stats.loc[method, "mean"], ls=style, color="k", lw=1, label=label_)
        ax.set(xscale="log", xlabel="m (training examples of the after-kernel)",
               ylabel=f"test MSE at n = {int(losses.n.max())}")  # fmt: skip
        ax.set_title(label, fontsize="small")
        ax.legend(fontsize="small")
    return figure


def figures(results: Results) -> dict[str, Figure]:
    """``loss_vs_n`` and ``after_kernel_vs_m``, drawn from stored results."""
    return {"loss_vs_n": loss_figure(results), "after_kernel_vs_m": after_kernel_figure(results)}


def _versus(run: pd.Series, a: str, b: str) -> str:
    """How the 95% interval of a's exponent lies against b's: above, below or overlapping."""
    if run[f"metrics.alpha_{a}_low"] > run[f"metrics.alpha_{b}_high"]:
        return "above"
    if run[f"metrics.alpha_{a}_high"] < run[f"metrics.alpha_{b}_low"]:
        return "below"
    return "overlapping"


def _loss_caption(label: str, run: pd.Series) -> str:
    parts = [f"{_label(m)} {_exponent(run, m)}" for m in ("network", "entk_init", "ntk", "nngp")]
    verdicts = [f"{_versus(run, 'network', m)} {_label(m)}'s" for m in ("entk_init", "ntk")]
    return f"{label}: {'; '.join(parts)}; the network's interval is {' and '.join(verdicts)}."


def _after_caption(label: str, run: pd.Series, losses: pd.DataFrame) -> str:
    stats, sizes = _at_largest(losses), _after_sizes(losses)
    means = [stats.loc[f"after_{m}", "mean"] for m in sizes]
    trend = " → ".join(f"{v:.3g} (m = {m})" for m, v in zip(sizes, means, strict=True))
    improves = all(b < a for a, b in itertools.pairwise(means))
    exponents = ", ".join(f"K_{m} {_exponent(run, f'after_{m}')}" for m in sizes)
    return (
        f"{label}: at n = {int(losses.n.max())}, K_m test MSE {trend}: "
        f"{'decreases' if improves else 'does not decrease'} with m, against "
        f"{stats.loc['entk_init', 'mean']:.3g} for the eNTK at init and "
        f"{stats.loc['network', 'mean']:.3g} for the network; exponents {exponents}."
    )


def captions(results: Results) -> dict[str, str]:
    """The exponents with their intervals, whether the network's interval overlaps the
    kernels', and whether K_m improves with m, per run."""
    runs = list(_runs(results))
    return {
        "loss_vs_n": " ".join(_loss_caption(label, run) for label, run, _ in runs),
        "after_kernel_vs_m": " ".join(_after_caption(*r) for r in runs),
    }


GAIN = 0.05
"""The smallest gain of the network's exponent over its kernel's that bears out "a better
data-scaling exponent" (`ntkscope.studies._claims.effect`): 0.05, a tenth to a fifth of the
exponents these tasks measure."""


def claims(results: Results) -> list[Claim]:
    """Finding (a): the network's exponent against its kernels', one claim per run (task),
    since tasks differ in which side wins."""
    rows = []
    for kernel in ("ntk", "entk_init"):
        for label, run, _ in _runs(results):
            gain = minus(_alpha(run, "network"), _alpha(run, kernel))
            rows.append(
                Claim(
                    f"a network has a better data-scaling exponent than its {_label(kernel)} "
                    f"({label})",
                    "Vyas, Bansal & Nakkiran 2022",
                    f"network {_exponent(run, 'network')}, {_label(kernel)}'s "
                    f"{_exponent(run, kernel)}; gain {gain}",
                    effect(gain, GAIN),
                    "reproduced if the interval of the gain α_network − α_kernel (the "
                    "bootstrap 95% intervals' half-widths added in quadrature) lies above 0; "
                    f"not reproduced if it lies below {GAIN:g}",
                )
            )
    return rows
