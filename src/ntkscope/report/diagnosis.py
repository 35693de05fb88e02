"""The report of `ntkscope.diagnose`: ``summary.json``, PNG figures and ``index.html``.

Figures (drawn from the `Diagnosis` alone, on matplotlib `Figure` objects (no pyplot state)):
``loss`` (training/test loss of the network, its linearization and the NTK-predicted
curves), ``kernel`` (kernel change, distance and velocity over training), ``linearized``
(network vs linearized outputs), ``spectrum`` (eNTK eigenvalues at initialization and at
the end); saved as PNG files in ``images/`` by `ntkscope.report.html.write_page`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ntkscope.diagnosis import Diagnosis, describe
from ntkscope.dynamics import Trajectory
from ntkscope.report.html import Section, write_page

LOSS_CURVES = {
    "train_loss": ("network, train", "C0", "-"),
    "test_loss": ("network, test", "C1", "-"),
    "linear_train_loss": ("linearized, train", "C0", ":"),
    "linear_test_loss": ("linearized, test", "C1", ":"),
    "predicted_train_loss": ("NTK prediction (eNTK at t=0), train", "C2", "--"),
    "predicted_test_loss": ("NTK prediction (eNTK at t=0), test", "C3", "--"),
    "predicted_train_loss_infinite": ("NTK prediction (infinite NTK), train", "C4", "-."),
    "predicted_test_loss_infinite": ("NTK prediction (infinite NTK), test", "C5", "-."),
}


def curves(ax, trajectory: Trajectory, curves: dict, log: bool = False) -> None:
    """Draw the recorded ``curves`` ({name: (label, color, style)}) against the step."""
    recorded = {k for row in trajectory.rows for k in row}
    drawn = [name for name in curves if name in recorded]
    positive = False
    for name in drawn:
        label, color, style = curves[name]
        steps, values = trajectory.series(name)
        ax.plot(steps, values, style, color=color, label=label)
        positive |= max(values) > 0  # log axes mask the zeros at step 0
    ax.set_xlabel("step")
    if log and drawn and positive:
        ax.set_yscale("log")
    if drawn:
        ax.legend(fontsize=7)


def loss_figure(diagnosis: Diagnosis) -> Figure:
    """Loss of the network, of its linearization and as NTK theory predicts it."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    curves(ax, diagnosis.trajectory, LOSS_CURVES, log=True)
    ax.set_ylabel(f"{diagnosis.settings['loss']} loss")
    ax.set_title("Loss: network vs linearized vs NTK prediction")
    return fig


def kernel_figure(diagnosis: Diagnosis) -> Figure:
    """Kernel change, distance to Θ̂_0 and kernel velocity over training."""
    fig = Figure(figsize=(13, 4))
    change, distance, velocity = fig.subplots(1, 3)
    trajectory = diagnosis.trajectory
    curves(change, trajectory, {"kernel_change": ("‖Θ̂_t − Θ̂_0‖ / ‖Θ̂_0‖", "C0", "-")})
    threshold = next(c.lazy_below for c in diagnosis.criteria if c.name == "kernel change")
    change.axhline(threshold, color="grey", lw=0.8, ls=":")
    change.set_title("Kernel change (dotted: kernel-regime threshold)")
    curves(distance, trajectory, {"kernel_distance": ("S(Θ̂_t, Θ̂_0)", "C1", "-")}, log=True)
    distance.set_title("Kernel distance to Θ̂_0 (Fort et al. 2020)")
    curves(velocity, trajectory, {"kernel_velocity": ("S(Θ̂_t, Θ̂_t') / Δt", "C2", "-")}, log=True)
    velocity.set_title("Kernel velocity")
    fig.tight_layout()
    return fig


def linearized_figure(diagnosis: Diagnosis) -> Figure:
    """Network/linearized RMSE over training, and gap relative to the function's change."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    curves(ax, diagnosis.trajectory, {
        "linear_rmse": ("RMSE(f_t, f_lin,t)", "C0", "-"),
        "linear_gap": ("RMSE(f_t, f_lin,t) / RMS(f_t − f_0)", "C1", "--"),
    })  # fmt: skip
    ax.set_title("Network vs linearized network on test inputs")
    return fig


def spectrum_figure(diagnosis: Diagnosis) -> Figure:
    """eNTK eigenvalues on the probe set at initialization and at the end."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, values in diagnosis.spectra.items():
        positive = values[values > 0]
        ax.loglog(range(1, len(positive) + 1), positive.numpy(), label=name)
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue")
    ax.set_title("eNTK spectrum on the probe set")
    ax.legend()
    return fig


FIGURES = {
    "loss": loss_figure,
    "kernel": kernel_figure,
    "linearized": linearized_figure,
    "spectrum": spectrum_figure,
}


def criteria_table(diagnosis: Diagnosis) -> pd.DataFrame:
    """The criteria, one row each: value, thresholds, status, meaning."""
    return pd.DataFrame(
        {
            "criterion": c.name,
            "value": c.value,
            "kernel regime below": c.lazy_below,
            "feature learning above": c.rich_above,
            "status": c.status,
            "meaning": c.meaning,
        }
        for c in diagnosis.criteria
    )


def _rule(diagnosis: Diagnosis) -> str:
    """The verdict rule in words, with the thresholds of the criteria it was decided by."""
    lazy = " and ".join(f"{c.name} below {c.lazy_below:g}" for c in diagnosis.criteria)
    rich = " or ".join(
        f"{c.name} above {c.rich_above:g}" for c in diagnosis.criteria if c.rich_above < math.inf
    )
    return (
        f"Kernel regime: {lazy}. Feature learning: {rich}. Partly: anything in between. "
        "Incomplete: no sign of feature learning, but a criterion could not be measured."
    )


def write_report(diagnosis: Diagnosis, out: str | Path) -> Path:
    """Write ``summary.json``, ``index.html`` and its figures (in ``images/``) into ``out``.

    Returns:
        The page's path.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(diagnosis.summary(), indent=2))
    numbers = {k: "n/a" if v is None else f"{v:.4g}" for k, v in diagnosis.numbers.items()}
    sections = [
        Section("Criteria", text="\n\n".join(diagnosis.notes),
                tables={"measured criteria and their thresholds": criteria_table(diagnosis)}),
        *(Section(name, text=draw.__doc__, figures={name: draw(diagnosis)})
          for name, draw in FIGURES.items()),
        Section("All numbers", facts=numbers),
        Section("Settings", facts=diagnosis.settings),
    ]  # fmt: skip
    title = f"ntkscope diagnosis: {describe(diagnosis.verdict, diagnosis.criteria)}"
    return write_page(out / "index.html", title, sections, text=_rule(diagnosis))
