"""The report of `ntkscope.diagnose`: ``summary.json``, PNG figures and ``index.html``.

Figures (drawn from the `Diagnosis` alone, on matplotlib `Figure` objects (no pyplot state)):
``loss.png`` (training/test loss of the network, its linearization and the NTK-predicted
curves), ``kernel.png`` (kernel change, distance and velocity over training),
``linearized.png`` (network vs linearized outputs), ``spectrum.png`` (eNTK eigenvalues at
initialization and at the end).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from matplotlib.figure import Figure

from ntkscope.diagnosis import Diagnosis
from ntkscope.dynamics import Trajectory

_LOSS_CURVES = {
    "train_loss": ("network, train", "C0", "-"),
    "test_loss": ("network, test", "C1", "-"),
    "linear_train_loss": ("linearized, train", "C0", ":"),
    "linear_test_loss": ("linearized, test", "C1", ":"),
    "predicted_train_loss": ("NTK prediction (eNTK at t=0), train", "C2", "--"),
    "predicted_test_loss": ("NTK prediction (eNTK at t=0), test", "C3", "--"),
    "predicted_train_loss_infinite": ("NTK prediction (infinite NTK), train", "C4", "-."),
    "predicted_test_loss_infinite": ("NTK prediction (infinite NTK), test", "C5", "-."),
}


def _curves(ax, trajectory: Trajectory, curves: dict, log: bool = False) -> None:
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
    _curves(ax, diagnosis.trajectory, _LOSS_CURVES, log=True)
    ax.set_ylabel(f"{diagnosis.settings['loss']} loss")
    ax.set_title("Loss: network vs linearized vs NTK prediction")
    return fig


def kernel_figure(diagnosis: Diagnosis) -> Figure:
    """Kernel change, distance to Θ̂_0 and kernel velocity over training."""
    fig = Figure(figsize=(13, 4))
    change, distance, velocity = fig.subplots(1, 3)
    trajectory = diagnosis.trajectory
    _curves(change, trajectory, {"kernel_change": ("‖Θ̂_t − Θ̂_0‖ / ‖Θ̂_0‖", "C0", "-")})
    change.axhline(0.1, color="grey", lw=0.8, ls=":")
    change.set_title("Kernel change (dotted: kernel-regime threshold)")
    _curves(distance, trajectory, {"kernel_distance": ("S(Θ̂_t, Θ̂_0)", "C1", "-")}, log=True)
    distance.set_title("Kernel distance to Θ̂_0 (Fort et al. 2020)")
    _curves(velocity, trajectory, {"kernel_velocity": ("S(Θ̂_t, Θ̂_t') / Δt", "C2", "-")}, log=True)
    velocity.set_title("Kernel velocity")
    fig.tight_layout()
    return fig


def linearized_figure(diagnosis: Diagnosis) -> Figure:
    """Network/linearized RMSE over training, and gap relative to the function's change."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    _curves(ax, diagnosis.trajectory, {
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


def _page(diagnosis: Diagnosis) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{c.value:.4g}</td><td>&lt; {c.lazy_below:g}</td>"
        f"<td>&gt; {c.rich_above:g}</td><td>{html.escape(c.status)}</td>"
        f"<td>{html.escape(c.meaning)}</td></tr>"
        for c in diagnosis.criteria
    )
    numbers = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{'n/a' if v is None else f'{v:.4g}'}</td></tr>"
        for k, v in diagnosis.numbers.items()
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in diagnosis.notes)
    images = "".join(
        f'<figure><img src="{name}.png" alt="{name}"><figcaption>{html.escape(f.__doc__)}'
        "</figcaption></figure>"
        for name, f in FIGURES.items()
    )
    settings = html.escape(json.dumps(diagnosis.settings, indent=1))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ntkscope diagnosis</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td,th{{padding:2px 8px;border-bottom:1px solid #ddd}} img{{max-width:100%}}</style></head>
<body><h1>ntkscope diagnosis: {html.escape(diagnosis.verdict.value)}</h1>
<ul>{notes}</ul>
<h2>Criteria</h2><table><tr><th>criterion</th><th>value</th><th>kernel regime</th>
<th>feature learning</th><th>status</th><th>meaning</th></tr>{rows}</table>
<h2>Figures</h2>{images}
<h2>All numbers</h2><table>{numbers}</table>
<h2>Settings</h2><pre>{settings}</pre></body></html>
"""


def write_report(diagnosis: Diagnosis, out: str | Path) -> Path:
    """Write ``summary.json``, the figures and ``index.html`` into ``out``; return the page."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(diagnosis.summary(), indent=2))
    for name, draw in FIGURES.items():
        fig = draw(diagnosis)
        fig.savefig(out / f"{name}.png", dpi=100)
    page = out / "index.html"
    page.write_text(_page(diagnosis))
    return page
