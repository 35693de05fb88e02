import sqlite3

import numpy as np
import pytest

from ntkscope import store
from ntkscope.runner import InlineExecutor, Store, expand, run_sweep


def test_load_returns_every_run(toy_store):
    runs = store.load(toy_store).set_index("config.value")
    assert list(runs.index) == [0, 1, 2, 3]
    assert list(runs.status) == ["done"] * 3 + ["failed"]
    assert list(runs["metrics.square"].iloc[:3]) == [0.0, 1.0, 4.0]
    assert np.isnan(runs.loc[3, "metrics.square"])
    assert runs.loc[1, "tables"] == ["values"] and runs.loc[1, "arrays"] == ["value"]
    assert (runs.loc[[0, 1, 2], "seconds"] >= 0).all() and set(runs.attempts) == {1}
    assert set(runs.torch) == {__import__("torch").__version__}


def test_failed_run_keeps_its_error(toy_store):
    failed = store.load(toy_store).query("status == 'failed'").iloc[0]
    assert "RuntimeError: toy failure for value 3" in failed.error
    assert "Traceback" in failed.error and failed.tables == []


def test_tables_and_arrays_round_trip(toy_store):
    table = store.load_table(toy_store, "values")
    assert sorted(table.double) == [0, 2, 4] and table.hash.nunique() == 3
    run = store.load(toy_store).iloc[2]
    assert store.load_arrays(toy_store, run.hash)["value"].tolist() == [2]


def test_rerun_skips_done_and_retries_failed(toy, toy_store):
    summary = run_sweep(expand({"study": toy, "product": {"value": [0, 1, 2, 4]}}), toy_store,
                        InlineExecutor())  # fmt: skip
    assert (summary.skipped, summary.done) == (3, 1)
    again = run_sweep(expand({"study": toy, "fixed": {"value": 3, "fail": True}}), toy_store,
                      InlineExecutor())  # fmt: skip
    assert (again.skipped, again.failed) == (0, 1)
    assert store.load(toy_store).set_index("config.value").attempts[3] == 2


def test_integrity_and_wal(toy_store):
    with sqlite3.connect(toy_store / "ntkscope.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_one_writer_at_a_time(toy_store):
    with Store(toy_store), pytest.raises(ValueError, match="out: another sweep is writing"):
        Store(toy_store)


def test_load_without_store(tmp_path):
    with pytest.raises(ValueError, match="dir: no ntkscope store"):
        store.load(tmp_path)
