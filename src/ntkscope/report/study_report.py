"""``ntkscope report DIR``: one HTML page of every study in a result store.

Per study: its figures (drawn by the study from the stored results), each under its caption
computed from the results (the study's ``captions``), the tables behind them,
the configs and metrics of every run, failed runs with their errors, versions and run times.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pandas as pd

from ntkscope import studies
from ntkscope.report.html import Section, write_page
from ntkscope.runner.store import Status, load, load_arrays, load_table
from ntkscope.studies import Results

REPORT = Path("report") / "index.html"
"""Where the page goes, relative to the results directory."""


def _short(runs: pd.DataFrame) -> pd.Series:
    return runs.hash.str[:12]


def _config_table(runs: pd.DataFrame) -> pd.DataFrame:
    config = runs.filter(like="config.").dropna(axis=1, how="all")  # other studies' fields
    config = config.rename(columns=lambda c: c.removeprefix("config."))
    return config.astype(str).assign(status=runs.status).set_index(_short(runs)).reset_index()


def _metrics_table(runs: pd.DataFrame) -> pd.DataFrame:
    metrics = runs.filter(like="metrics.").dropna(axis=1, how="all")
    metrics = metrics.rename(columns=lambda c: c.removeprefix("metrics."))
    return metrics.assign(seconds=runs.seconds).set_index(_short(runs)).reset_index()


def _failures(runs: pd.DataFrame) -> pd.DataFrame:
    failed = runs[runs.status == Status.FAILED]
    last_line = failed.error.fillna("").map(lambda e: e.strip().splitlines()[-1] if e else "")
    return pd.DataFrame({"hash": _short(failed), "error": last_line})


def _facts(runs: pd.DataFrame) -> dict[str, object]:
    counts = runs.status.value_counts()
    finished = runs[runs.status == Status.DONE]
    versions = finished[["python", "torch", "numpy", "ntkscope"]].drop_duplicates()
    return {
        "runs": ", ".join(f"{counts.get(s, 0)} {s}" for s in Status),
        "run time": f"{finished.seconds.sum():.1f} s in all, {finished.seconds.median():.2f} s "
        "median per run",
        "hosts": ", ".join(sorted(finished.host.dropna().unique())),
        "versions": "; ".join(
            f"python {v.python}, torch {v.torch}, numpy {v.numpy}, ntkscope {v.ntkscope}"
            for v in versions.itertuples()
        ),
    }


def _results(directory: Path, done: pd.DataFrame) -> Results:
    names = sorted({name for names in done.tables for name in names})
    tables = {name: load_table(directory, name, done.hash) for name in names}
    return Results(done.reset_index(drop=True), tables, lambda h: load_arrays(directory, h))


def _study_section(directory: Path, name: str, runs: pd.DataFrame) -> Section:
    done = runs[runs.status == Status.DONE]
    text, figures, captions = "", {}, {}
    try:
        study = studies.get(name)
        text = study.description
        results = _results(directory, done)
        if len(done):
            figures, captions = study.figures(results), study.captions(results)
        tables = dict(results.tables)
    except Exception as error:  # a report shows what it can
        text += f"\n\nFigures not drawn: {type(error).__name__}: {error}"
        tables = {}
    tables = {"configs": _config_table(runs), "metrics": _metrics_table(done)} | tables
    failures = _failures(runs)
    if len(failures):
        tables["failed runs"] = failures
    panels = [Section(f, text=captions.get(f, ""), figures={f: fig}) for f, fig in figures.items()]
    data = Section("tables behind the figures", tables=tables)
    return Section(name, text=text, facts=_facts(runs), sections=[*panels, data])


def write_report(directory: str | Path) -> Path:
    """Render the store in ``directory`` to ``directory/report/index.html``; returns its path.

    Raises:
        ValueError: when ``directory`` holds no store.
    """
    directory = Path(directory)
    runs = load(directory)
    sections = [_study_section(directory, n, r) for n, r in runs.groupby("study", sort=True)]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"Result store {directory.resolve()}: {len(runs)} runs, rendered {now}."
    return write_page(directory / REPORT, "ntkscope report", sections, text=text)
