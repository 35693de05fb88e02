"""ntkscope's results in Jupyter: HTML for ``_repr_html_`` and the figures of ``.plot()``.

`Diagnosis`, `Trajectory` (the run of `ntkscope.train` or of a `ntkscope.Monitor`) and the
stored results of a study (`ntkscope.studies.Results`) render as one self-contained HTML
block: a card with the verdict (or the run's state), the numbers as a table, and the figures
inline as PNG (base64). Their ``.plot()`` returns the same figures as matplotlib ``Figure``
objects (no pyplot state), their ``.to_frame()`` the numbers as pandas.
"""

from __future__ import annotations

import base64
import html
import io

import pandas as pd
from matplotlib.figure import Figure

from ntkscope.diagnosis import Diagnosis, Verdict, describe
from ntkscope.dynamics import Trajectory
from ntkscope.report.diagnosis import FIGURES, LOSS_CURVES, criteria_table, curves
from ntkscope.studies import Results

_COLORS = {
    Verdict.KERNEL_REGIME: "#2e7d32",
    Verdict.PARTLY: "#ef6c00",
    Verdict.FEATURE_LEARNING: "#1565c0",
    Verdict.INCOMPLETE: "#6d6d6d",
    Verdict.DIVERGED: "#c62828",
}
_SHOWN_ROWS = 20
"""Rows of a records table shown inline (the rest: ``.to_frame()``)."""


def image(figure: Figure) -> str:
    """An ``<img>`` holding ``figure`` as an inline PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img style="max-width:100%" src="data:image/png;base64,{data}">'


def _card(title: str, text: str, color: str) -> str:
    return (
        f'<div style="border-left:6px solid {color};padding:4px 12px;margin:4px 0">'
        f'<b style="color:{color};font-size:1.2em">{html.escape(title)}</b>'
        f"<div>{html.escape(text)}</div></div>"
    )


def _table(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_html(index=index, border=0, float_format=lambda v: f"{v:.4g}", na_rep="")


def _block(*parts: str) -> str:
    return "<div>" + "\n".join(p for p in parts if p) + "</div>"


def trajectory_figures(trajectory: Trajectory) -> dict[str, Figure]:
    """The recorded curves: losses (network, linearized, predicted), kernel change,
    parameter change, network vs linearized network; only the groups that were recorded."""
    recorded = {k for row in trajectory.rows for k in row}
    groups = {
        "loss": LOSS_CURVES,
        "kernel": {"kernel_change": ("‖Θ̂_t − Θ̂_0‖ / ‖Θ̂_0‖", "C0", "-"),
                   "kernel_distance": ("S(Θ̂_t, Θ̂_0)", "C1", "--")},
        "parameters": {"param_change": ("‖θ_t − θ_0‖ / ‖θ_0‖", "C0", "-")},
        "linearized": {"linear_rmse": ("RMSE(f_t, f_lin,t)", "C0", "-"),
                       "linear_gap": ("RMSE(f_t, f_lin,t) / RMS(f_t − f_0)", "C1", "--")},
    }  # fmt: skip
    figures = {}
    for name, group in groups.items():
        if recorded & set(group):
            figure = Figure(figsize=(5, 3.2))
            curves(figure.subplots(), trajectory, group, log=name == "loss")
            figure.suptitle(name)
            figures[name] = figure
    return figures


def trajectory_html(trajectory: Trajectory) -> str:
    """The run's state, its last records and its figures."""
    state = trajectory.stopped or "finished"
    steps = len(trajectory.losses)
    card = _card(f"ntkscope run: {state}", f"{steps} optimizer steps, "
                 f"{len(trajectory.rows)} records", "#444")  # fmt: skip
    frame = trajectory.frame()
    shown = frame.tail(_SHOWN_ROWS)
    note = f"<p>last {_SHOWN_ROWS} of {len(frame)} records</p>" if len(frame) > _SHOWN_ROWS else ""
    figures = "".join(image(f) for f in trajectory_figures(trajectory).values())
    return _block(card, note, _table(shown), figures)


def diagnosis_html(diagnosis: Diagnosis) -> str:
    """The verdict card, the criteria, the notes, every number and the report's figures."""
    card = _card(
        f"ntkscope diagnosis: {describe(diagnosis.verdict, diagnosis.criteria)}",
        " ".join(diagnosis.notes),
        _COLORS[diagnosis.verdict],
    )
    numbers = pd.Series(diagnosis.numbers, name="value", dtype=object).to_frame()
    figures = "".join(image(draw(diagnosis)) for draw in FIGURES.values())
    folded = f"<details><summary>all numbers</summary>{_table(numbers)}</details>"
    return _block(card, _table(criteria_table(diagnosis), index=False), folded, figures)


def results_figures(results: Results) -> dict[str, Figure]:
    """The study's own figures of the stored runs (its ``figures`` function)."""
    from ntkscope import studies

    return studies.get(_study(results)).figures(results)


def _study(results: Results) -> str:
    names = results.runs["study"].unique() if "study" in results.runs else []
    if len(names) != 1:
        raise ValueError(f"results: expected the runs of one study, got studies {list(names)}")
    return str(names[0])


def results_html(results: Results) -> str:
    """The study, its runs' configs and metrics, and its figures."""
    runs = results.runs
    card = _card(f"ntkscope study: {_study(results)}", f"{len(runs)} stored runs", "#444")
    columns = [c for c in runs.columns if c.startswith(("config.", "metrics."))]
    table = _table(runs[columns].head(_SHOWN_ROWS), index=False)
    figures = "".join(image(f) for f in results_figures(results).values()) if len(runs) else ""
    return _block(card, table, figures)
