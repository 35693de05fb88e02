import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from interrupts import interruptible
from ntkscope import store, studies
from ntkscope.cli import app

ENV = {"COLUMNS": "200"}
EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "width_convergence.toml")


def invoke(*args):
    return CliRunner().invoke(app, list(args), env=ENV)


def test_help_lists_the_new_commands():
    result = invoke("--help")
    for command in ("kernel", "study", "sweep", "report", "reproduce"):
        assert command in result.output


def test_study_list():
    result = invoke("study", "list")
    assert result.exit_code == 0 and "width_convergence" in result.output
    assert "widths=[64, 128, 256, 512]" in result.output
    assert "quick, standard, paper" in result.output


def test_study_run_prints_metrics():
    result = invoke("study", "run", "width_convergence", "--set", "n=8", "--set", "widths=[8,16]")
    assert result.exit_code == 0, result.output
    assert "slope" in result.output and "distance_at_widest" in result.output


def test_study_run_into_a_store_then_skips(tmp_path):
    args = ["study", "run", "width_convergence", "--set", "n=8", "--set", "widths=[8, 16]"]
    assert invoke(*args, "--out", str(tmp_path)).exit_code == 0
    again = invoke(*args, "--out", str(tmp_path))
    assert again.exit_code == 0 and "already done" in again.output
    runs = store.load(tmp_path)
    assert len(runs) == 1 and runs.status[0] == "done" and runs["config.n"][0] == 8


def test_study_run_failure_exits_1(toy):
    result = invoke("study", "run", toy, "--set", "fail=true")
    assert result.exit_code == 1 and "RuntimeError: toy failure" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["study", "run", "nope"], "study: unknown study 'nope'"),
        (["study", "run", "width_convergence", "--set", "depthh=1"], "depthh: Extra inputs"),
        (["study", "run", "width_convergence", "--set", "depth"], "set: expected field=value"),
        (["reproduce", "--preset", "huge"], "preset: expected one of 'quick', 'standard', 'paper'"),
        (["sweep", "missing.toml", "--out", "x"], "sweep: cannot read 'missing.toml'"),
        (
            [
                "sweep",
                EXAMPLE,
                "--out",
                "x",
                "--workers",
                "2",
                "--dask-local",
                "2",
            ],
            "dask-local: give only one of",
        ),
        (
            ["sweep", EXAMPLE, "--out", "x", "--workers", "0"],
            "workers: expected a positive int",
        ),
        (["study", "run", "width_convergence", "--threads", "0"], "threads: expected a positive"),
    ],
)
def test_bad_input_gives_one_error_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr


@pytest.mark.slow
def test_reproduce_quick_end_to_end(tmp_path):
    """The README's main job: every study's quick sweep, then the report."""
    result = invoke("reproduce", "--preset", "quick", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    runs = store.load(tmp_path)
    assert (runs.status == "done").all() and len(runs) >= 6
    assert (tmp_path / "report" / "index.html").is_file()
    # the findings table leads the output and the page: a row for every study's claims
    assert "published claims tested" in result.output
    findings = pd.read_csv(tmp_path / "report" / "findings.csv")
    assert set(findings.study) == set(studies.names()), findings
    assert set(findings.verdict) <= {"reproduced", "not reproduced", "inconclusive"}
    # The published finding (docs/conventions.md, 1/√width): each run's fitted slope lies within
    # 0.25 of −1/2; over 10 data/initialization seeds the slope's sd is 0.06-0.07 at these
    # sizes (depth 1-2, widths 64-1024, 4 seeds), so 0.25 is > 3.5 sd.
    slopes = runs[runs.study == "width_convergence"]["metrics.slope"]
    assert slopes.between(-0.75, -0.25).all(), slopes


def test_store_and_sweep_file_errors_name_the_file(tmp_path, monkeypatch):
    """Regression (issue 18, defect 5): DatabaseError and utf-8 tracebacks, a repeated --set."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ntkscope.sqlite").write_bytes(b"not a database" * 100)
    (tmp_path / "binary.toml").write_bytes(bytes(range(256)))
    cases = [
        (["report", "bad"], "dir: 'bad/ntkscope.sqlite' is not an ntkscope result store"),
        (["sweep", EXAMPLE, "--out", "bad"], "out: 'bad/ntkscope.sqlite' is not an ntkscope"),
        (["sweep", "binary.toml", "--out", "x"], "sweep: 'binary.toml' is not a text"),
        (["study", "run", "width_convergence", "--set", "n=8", "--set", "n=9"],
         "set: 'n' is given twice"),
    ]  # fmt: skip
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr


def test_ctrl_c_during_a_sweep_says_what_is_done_and_how_to_resume(toy, tmp_path):
    """Regression (issue 18, defect 5): SIGINT to ``ntkscope sweep`` exited 130 silently."""
    sweep_file = tmp_path / "slow.toml"
    sweep_file.write_text(
        f'study = "{toy}"\n[fixed]\nsleep = 0.5\n[product]\nvalue = [0, 1, 2, 3, 4, 5, 6, 7]\n'
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ntkscope.cli", "sweep", str(sweep_file), "--out", str(out)]
    process = subprocess.Popen(
        [*command, "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=interruptible,
    )  # fmt: skip
    deadline = time.monotonic() + 300  # a busy machine starts the worker slowly
    while not _done(out) and time.monotonic() < deadline:  # wait for a first finished run
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    message = " ".join(stderr.split())
    assert re.search(r"interrupted: _toy_study: [0-7] of 8 runs done; the store is consistent",
                     message), stderr  # fmt: skip
    assert f"Resume with: ntkscope sweep {sweep_file} --out {out}" in message, stderr
    resumed = invoke("sweep", str(sweep_file), "--out", str(out), "--workers", "1")
    assert resumed.exit_code == 0 and _done(out) == 8, resumed.output


def _done(out: Path) -> int:
    """Runs done in the store at ``out`` (0 before it exists)."""
    try:
        return int((store.load(out).status == "done").sum())
    except ValueError:
        return 0


@pytest.mark.parametrize("preset", ["quick", "standard", "paper", "full"])
def test_reproduce_plan_prints_every_study_and_runs_nothing(preset, tmp_path):
    result = invoke("reproduce", "--preset", preset, "--plan", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    for name in (*studies.names(), "total"):
        assert re.search(rf"│ {name} +│ +\d+ │", result.output), (name, result.output)
    memory = "16 GB" if preset in ("paper", "full") else "10 GB"
    assert f"over {memory}" in result.output and "wall time on" in result.output
    assert "Estimates, not measurements" in result.output
    assert not (tmp_path / "out").exists()


def test_sweep_refuses_configs_over_the_worker_memory_before_running(toy, tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'study = "{toy}"\n[product]\nvalue = [0, 20000]\n')  # MB by its plan
    args = ["sweep", str(sweep), "--workers", "1", "--out"]

    planned = invoke(*args, str(tmp_path / "plan"), "--plan")
    assert planned.exit_code == 0, planned.output
    assert re.search(r"│ _toy_study +│ +2 │.*│ +20 GB │ +1 │", planned.output), planned.output

    refused = invoke(*args, str(tmp_path / "refused"))
    assert refused.exit_code == 2, refused.output
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("error: worker_memory: 1 configs are estimated to need more than "
                               "16.0 GB per worker: _toy_study "), lines  # fmt: skip
    assert "--allow-over-memory" in lines[0] and not (tmp_path / "refused").exists()

    for extra in (["--worker-memory", "32GB"], ["--allow-over-memory"]):
        ran = invoke(*args, str(tmp_path / extra[0]), *extra)
        assert ran.exit_code == 0, ran.output
        assert len(store.load(tmp_path / extra[0])) == 2
