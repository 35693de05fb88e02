"""Jupyter rendering (``_repr_html_``), ``.plot()`` and ``.to_frame()`` of a run, a diagnosis
and stored study results; the example notebook executed end to end."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

import ntkscope as ns
from ntkscope.report.diagnosis import FIGURES

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "ntk_in_a_notebook.ipynb"


@pytest.fixture(scope="module")
def trajectory():
    data = ns.data.load("digits", 64, seed=0)
    model = ns.models.mlp(64, 32, 1, 10, seed=0)
    recorders = [ns.KernelRecorder(data.x[:16], 2), ns.ParameterRecorder(2), ns.LossRecorder(2),
                 ns.LinearizedRecorder(every=2)]  # fmt: skip
    return ns.train(model, data, lr=0.5, steps=4, batch_size=16, recorders=recorders)


def test_a_run_renders_its_records_and_curves(trajectory):
    html = trajectory._repr_html_()
    assert "ntkscope run: finished" in html and "kernel_change" in html
    figures = trajectory.plot()
    assert set(figures) == {"loss", "kernel", "parameters", "linearized"}
    assert all(isinstance(f, Figure) and f.axes[0].lines for f in figures.values())
    assert html.count("<img") == len(figures)
    pd.testing.assert_frame_equal(trajectory.to_frame(), trajectory.frame())


def test_a_diagnosis_renders_its_verdict_criteria_and_report_figures(trajectory):
    monitor = ns.Monitor(trajectory.model, trajectory.recorders[0].probe_x, every=1)
    monitor.start()
    diagnosis = monitor.diagnosis()
    html = diagnosis._repr_html_()
    assert (
        "ntkscope diagnosis: incomplete (not measured: linearization gap, init dispersion)" in html
    )
    assert html.count("<img") == len(FIGURES)
    assert set(diagnosis.plot()) == set(FIGURES)
    frame = diagnosis.to_frame()
    assert list(frame["criterion"]) == ["kernel change", "linearization gap", "init dispersion"]
    assert frame["value"].iloc[0] == 0.0


def test_stored_results_render_the_study_and_its_figures(toy_store):
    results = ns.store.results(toy_store, "_toy_study")
    assert len(results.to_frame()) == 3  # the failed run is not a result
    assert set(results.plot()) == {"squares"}
    html = results._repr_html_()
    assert "ntkscope study: _toy_study" in html and html.count("<img") == 1
    with pytest.raises(ValueError, match="study: no finished run of 'other'"):
        ns.store.results(toy_store, "other")


def test_the_example_notebook_runs(tmp_path):
    """Executed by a real Jupyter kernel (``python3``); it is checked in without outputs."""
    nbclient, nbformat = pytest.importorskip("nbclient"), pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    html = [o["data"]["text/html"] for c in notebook.cells for o in c.get("outputs", [])
            if "text/html" in o.get("data", {})]  # fmt: skip
    assert any("ntkscope run:" in h for h in html)
    assert any("ntkscope diagnosis:" in h for h in html)
