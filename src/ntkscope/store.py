"""Reading a results directory: ``ntkscope.store.load(dir)`` returns a DataFrame of every run;
``ntkscope.store.results(dir, study)`` the finished runs of one study as
`ntkscope.studies.Results` (which render in Jupyter and draw the study's figures).

The store itself (layout, atomicity) is described in `ntkscope.runner.store`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ntkscope.runner.store import Status, load, load_arrays, load_table
from ntkscope.studies import Results

__all__ = ["Status", "load", "load_arrays", "load_table", "results"]


def finished(directory: str | Path, done: pd.DataFrame) -> Results:
    """``done`` (finished runs of one study, as `load` gives them) with their tables and
    arrays."""
    names = sorted({name for names in done.tables for name in names})
    tables = {name: load_table(directory, name, done.hash) for name in names}
    return Results(done.reset_index(drop=True), tables, lambda h: load_arrays(directory, h))


def results(directory: str | Path, study: str) -> Results:
    """The finished runs of ``study`` in ``directory``.

    Raises:
        ValueError: when ``directory`` holds no store, or no finished run of ``study``.
    """
    runs = load(directory)
    done = runs[(runs.study == study) & (runs.status == Status.DONE)]
    if not len(done):
        raise ValueError(
            f"study: no finished run of {study!r} in {directory}; "
            f"stored studies: {sorted(runs.study.unique())}"
        )
    return finished(directory, done)
