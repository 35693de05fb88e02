"""The result store: one SQLite database per results directory, arrays and tables beside it.

Layout of a results directory::

    ntkscope.sqlite              runs (config JSON, status, times, versions, error), metrics
    runs/<hash>/arrays.npz       the run's named arrays
    runs/<hash>/<table>.parquet  the run's named tables

Safe under interruption: the database is in WAL mode and is the record of truth. A finished
run's files are written to temporary names and renamed (``os.replace``, atomic), then its row
becomes ``done`` with its metrics in one transaction; a run killed before that commit stays
``running`` and is run again by the next sweep, which overwrites its files. Durability is
``synchronous=NORMAL``: nothing is lost when a process is killed; a power cut may roll back the
last commits but never corrupts the database. One sweep writes to a store at a time (a lock
file enforces it); readers (`load`, the report) may read while it runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd

from ntkscope.runner.task import Outcome

DATABASE = "ntkscope.sqlite"
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    hash TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL, finished REAL, seconds REAL,
    host TEXT, python TEXT, torch TEXT, numpy TEXT, ntkscope TEXT,
    tables TEXT NOT NULL DEFAULT '[]',
    arrays TEXT NOT NULL DEFAULT '[]',
    error TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    hash TEXT NOT NULL REFERENCES runs(hash),
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (hash, name)
);
"""
_VERSION_COLUMNS = ("host", "python", "torch", "numpy", "ntkscope")


class Status(StrEnum):
    """State of a run in the store.

    PENDING: known, never started. RUNNING: sent to a worker (or killed while in flight).
    DONE: finished; metrics, tables and arrays stored. FAILED: raised; ``error`` holds why.
    """

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def _connect(directory: Path, *, read_only: bool) -> sqlite3.Connection:
    path = directory / DATABASE
    if read_only and not path.is_file():
        raise ValueError(f"dir: no ntkscope store in {str(directory)!r} (no {DATABASE})")
    argument = "dir" if read_only else "out"
    try:
        return _open(path, read_only, argument)
    except sqlite3.DatabaseError as error:
        raise ValueError(
            f"{argument}: {str(path)!r} is not an ntkscope result store (not a readable SQLite "
            f"database: {error}); move it away or choose another directory"
        ) from None


def _open(path: Path, read_only: bool, argument: str) -> sqlite3.Connection:
    """The store's database, created with its schema unless ``read_only``."""
    if read_only:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    else:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, _SCHEMA_VERSION):
        raise ValueError(
            f"{argument}: store schema {version}, this ntkscope reads {_SCHEMA_VERSION}"
        )
    if not read_only:
        connection.executescript(_SCHEMA)  # idempotent
        connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
    connection.execute("SELECT count(*) FROM runs").fetchone()  # reads the tables
    return connection


def _atomic(path: Path, write) -> None:
    """``write(temporary_path)``, then rename it to ``path`` (atomic on POSIX)."""
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with path.open("wb") as file:  # a file object: np.savez would append ".npz" to a name
        np.savez(file, **arrays)


class Store:
    """Writer of one results directory (see the module docstring); a context manager."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = (self.directory / ".lock").open("w")
        except OSError as error:
            raise ValueError(f"out: cannot write to {str(directory)!r}: {error.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ValueError(f"out: another sweep is writing to {str(directory)!r}") from None
        try:
            self._db = _connect(self.directory, read_only=False)
        except ValueError:
            self._lock.close()
            raise
        for stale in self.directory.glob("runs/*/.*.tmp"):
            stale.unlink()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database and release the lock."""
        self._db.close()
        self._lock.close()

    def add(self, study: str, configs: Mapping[str, str]) -> list[str]:
        """Register ``{hash: config JSON}`` as pending (known ones kept); the hashes not done."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO runs (hash, study, config, status) VALUES (?, ?, ?, ?)",
                [(h, study, c, Status.PENDING) for h, c in configs.items()],
            )
        done = {h for (h,) in self._db.execute("SELECT hash FROM runs WHERE status = 'done'")}
        return [h for h in configs if h not in done]

    def mark_running(self, hashes: Iterable[str]) -> None:
        """Runs sent to workers."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE runs SET status = ?, attempts = attempts + 1 WHERE hash = ?",
                [(Status.RUNNING, h) for h in hashes],
            )

    def record(self, outcome: Outcome) -> None:
        """Store a finished or failed run: files first, then its row in one transaction."""
        tables, arrays = [], []
        if outcome.result is not None:
            tables, arrays = self._write_files(outcome)
        status = Status.DONE if outcome.ok else Status.FAILED
        versions = [outcome.versions.get(c) for c in _VERSION_COLUMNS]
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE runs SET status = ?, started = ?, finished = ?, seconds = ?, host = ?, "
                "python = ?, torch = ?, numpy = ?, ntkscope = ?, tables = ?, arrays = ?, error = ? "
                "WHERE hash = ?",
                (status, outcome.started, outcome.finished, outcome.finished - outcome.started,
                 *versions, json.dumps(tables), json.dumps(arrays), outcome.error, outcome.hash),
            )  # fmt: skip
            self._db.execute("DELETE FROM metrics WHERE hash = ?", (outcome.hash,))
            if outcome.result is not None:
                self._db.executemany(
                    "INSERT INTO metrics (hash, name, value) VALUES (?, ?, ?)",
                    [(outcome.hash, k, v) for k, v in outcome.result.metrics.items()],
                )

    def _write_files(self, outcome: Outcome) -> tuple[list[str], list[str]]:
        folder = self.directory / "runs" / outcome.hash
        folder.mkdir(parents=True, exist_ok=True)
        result = outcome.result
        for name, table in result.tables.items():
            _atomic(folder / f"{name}.parquet", lambda p, t=table: t.to_parquet(p, index=False))
        if result.arrays:
            _atomic(folder / "arrays.npz", lambda p: _save_npz(p, result.arrays))
        return list(result.tables), list(result.arrays)


def load(directory: str | Path) -> pd.DataFrame:
    """Every run in a results directory, one row each.

    Columns: ``hash``, ``study``, ``status``, ``attempts``, ``config.<field>`` for every config
    field, ``metrics.<name>`` for every metric, ``started``, ``finished`` (UTC timestamps),
    ``seconds``, ``host``, ``python``, ``torch``, ``numpy``, ``ntkscope``, ``tables`` and
    ``arrays`` (names, see `load_table` and `load_arrays`), ``error``.

    Raises:
        ValueError: when ``directory`` holds no store.
    """
    with closing(_connect(Path(directory), read_only=True)) as db:
        runs = pd.read_sql_query("SELECT * FROM runs ORDER BY rowid", db)
        metrics = pd.read_sql_query("SELECT * FROM metrics", db)
    configs = pd.json_normalize([json.loads(c) for c in runs.pop("config")]).add_prefix("config.")
    values = metrics.pivot(index="hash", columns="name", values="value").add_prefix("metrics.")
    for column in ("tables", "arrays"):
        runs[column] = runs[column].map(json.loads)
    for column in ("started", "finished"):
        runs[column] = pd.to_datetime(runs[column], unit="s", utc=True)
    head = runs[["hash", "study", "status", "attempts"]]
    frame = pd.concat([head, configs.set_index(runs.index)], axis=1)
    frame = frame.join(values, on="hash")
    return pd.concat([frame, runs.drop(columns=head.columns)], axis=1)


def load_table(
    directory: str | Path, name: str, hashes: Iterable[str] | None = None
) -> pd.DataFrame:
    """Table ``name`` of every run that has one (or of ``hashes``), concatenated, with ``hash``."""
    runs = load(directory)
    runs = runs[runs.tables.map(lambda names: name in names)]
    if hashes is not None:
        runs = runs[runs.hash.isin(set(hashes))]
    parts = [
        pd.read_parquet(Path(directory) / "runs" / h / f"{name}.parquet").assign(hash=h)
        for h in runs.hash
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"hash": []})


def load_arrays(directory: str | Path, run_hash: str) -> dict[str, np.ndarray]:
    """The named arrays of one run (empty when it stored none)."""
    path = Path(directory) / "runs" / run_hash / "arrays.npz"
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as arrays:
        return dict(arrays)
