"""A sweep killed by SIGKILL part-way and restarted stores every run exactly once."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import ntkscope
from ntkscope import store

RUNS = 24


def python_env() -> dict[str, str]:
    """Environment of a subprocess that imports this ntkscope and the toy study."""
    src = str(Path(ntkscope.__file__).resolve().parents[1])
    return os.environ | {"PYTHONPATH": os.pathsep.join([os.environ["PYTHONPATH"], src])}


def start(sweep, out):
    command = [sys.executable, "-m", "ntkscope.cli", "sweep", str(sweep), "--out", str(out),
               "--workers", "2"]  # fmt: skip
    return subprocess.Popen(command, env=python_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def done_count(database) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM runs WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def test_killed_sweep_resumes_without_loss_or_duplicates(toy, tmp_path):
    sweep, out = tmp_path / "sweep.toml", tmp_path / "out"
    sweep.write_text(
        f'study = "{toy}"\n[fixed]\nsleep = 0.25\n[product]\nvalue = {{ range = [0, {RUNS}] }}\n'
    )
    process = start(sweep, out)
    deadline = time.monotonic() + 120
    while done_count(out / "ntkscope.sqlite") < 4:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no run finished in 120 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the runner and its workers, mid-sweep
    process.wait()
    killed_at = done_count(out / "ntkscope.sqlite")
    assert 4 <= killed_at < RUNS

    restarted = start(sweep, out)
    stdout, stderr = restarted.communicate(timeout=300)
    assert restarted.returncode == 0, stderr.decode()
    assert f"{RUNS} configs, {killed_at} already done" in stdout.decode()

    with sqlite3.connect(out / "ntkscope.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        metric_rows = db.execute("SELECT count(*) FROM metrics").fetchone()[0]
    runs = store.load(out)
    assert len(runs) == RUNS and runs.hash.is_unique
    assert (runs.status == "done").all()
    assert sorted(runs["config.value"]) == list(range(RUNS))
    assert metric_rows == 2 * RUNS  # square and draw, once per run
    assert (runs["metrics.square"] == runs["config.value"] ** 2).all()
    for run_hash, value in zip(runs.hash, runs["config.value"], strict=True):
        assert store.load_arrays(out, run_hash)["value"].tolist() == [value]  # files complete
    table = store.load_table(out, "values")
    assert sorted(table.value) == list(range(RUNS)) and table.hash.is_unique
    assert not list(out.glob("runs/*/.*.tmp"))
