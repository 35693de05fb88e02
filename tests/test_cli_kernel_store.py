"""``ntkscope kernel --store``: a user's model into a store, resumed, ridge on it; errors."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import ntkscope as ns
from interrupts import interruptible
from ntkscope import kernel_store
from ntkscope._cli_kernel_store import dataset
from ntkscope.cli import app
from ntkscope.runner import tiled

MODEL = """
import torch
from torch import nn

def make_model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
"""


def invoke(*args: str):
    return CliRunner().invoke(app, ["kernel", *args])


@pytest.fixture
def model_file(tmp_path):
    file = tmp_path / "user_model.py"
    file.write_text(MODEL)
    return f"{file}:make_model"


def test_user_model_into_a_store_then_ridge(tmp_path, model_file):
    store = tmp_path / "k.zarr"
    args = ["--model", model_file, "--data", "digits", "--n", "120", "--store", str(store)]
    result = invoke(*args, "--memory-budget", "100KB")
    assert result.exit_code == 0, result.output
    assert "0 already stored" in result.output and "0 failed" in result.output
    stored = kernel_store.open(store)
    assert stored.identity["kind"] == "entk" and stored.targets.shape == (120,)
    again = invoke(*args, "--memory-budget", "100KB")
    assert again.exit_code == 0 and "0 computed" in again.output, again.output
    float64 = invoke(*args[:-1], str(tmp_path / "k64.zarr"), "--dtype", "float64")
    assert float64.exit_code == 0, float64.output
    assert kernel_store.open(tmp_path / "k64.zarr").identity["dtype"] == "float64"
    ridge = invoke("--store", str(store), "--ridge", "1e-3", "--n-test", "20")
    assert ridge.exit_code == 0, ridge.output
    assert "cholesky" in ridge.output and "test accuracy" in ridge.output


def test_infinite_kind_of_the_builtin_mlp(tmp_path):
    store = tmp_path / "i.zarr"
    args = ["--kind", "infinite", "--depth", "2", "--n", "40", "--store", str(store)]
    assert invoke(*args).exit_code == 0
    x = dataset("digits", 40, 0, torch.float64).x  # the examples the command draws
    nngp, ntk = ns.infinite_kernels(x, depth=2)
    stored = kernel_store.open(store)
    assert torch.equal(torch.from_numpy(stored.arrays["nngp"].compute()), nngp)
    assert torch.equal(torch.from_numpy(stored.arrays["ntk"].compute()), ntk)


@pytest.mark.parametrize(
    ("model", "shape", "function"),
    [("mlp", (12, 5), ns.infinite_kernels), ("cnn", (12, 2, 4, 4), ns.infinite_cnn_kernels)],
)
def test_infinite_kind_reads_float64_data_in_float64(tmp_path, model, shape, function):
    """A float64 .npz gives the kernels of its own values: the store equals the in-memory
    function on the float64 data to 1e-14 relative (the same float64 operations, only the
    tiles' order of rounding may differ), while the data rounded to float32 change the
    kernels by ~1e-8 relative, far above that (checked, so that the test can fail)."""
    x = np.random.default_rng(0).standard_normal(shape)  # float64, not float32-representable
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12) % 3)
    store = tmp_path / "i.zarr"
    args = ["--model", model, "--kind", "infinite", "--depth", "2", "--activation", "tanh"]
    result = invoke(*args, "--data", str(tmp_path / "d.npz"), "--n", "12", "--store", str(store))
    assert result.exit_code == 0, result.output
    drawn = torch.randperm(12, generator=torch.Generator().manual_seed(0))  # --data-seed 0
    data = torch.from_numpy(x)[drawn]
    stored = kernel_store.open(store)
    for name, exact, rounded in zip(
        ("nngp", "ntk"),
        function(data, depth=2, activation="tanh"),
        function(data.float(), depth=2, activation="tanh"),
        strict=True,
    ):
        kernel = torch.from_numpy(stored.arrays[name].compute())
        torch.testing.assert_close(kernel, exact, rtol=1e-14, atol=0)
        assert (rounded - exact).abs().max() > 1e-9 * exact.abs().max()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--store", "{tmp}/no/k.zarr"], "store: directory"),
        (["--store", "{tmp}/k.zarr", "--n", "0"], "n: "),
        (["--store", "{tmp}/k.zarr", "--kind", "ntk"], "kind: "),
        (["--store", "{tmp}/k.zarr", "--memory-budget", "10B"], "memory_budget: "),
        (["--store", "{tmp}/k.zarr", "--dask-local", "1", "--scheduler", "tcp://x:1"], "not both"),
        (["--store", "{tmp}/k.zarr", "--ridge", "1", "--n-test", "20"], "n_test: the kernel"),
        (
            ["--store", "{tmp}/k.zarr", "--ridge", "-1"],
            "ridge: expected a finite real number >= 0, got -1.0",
        ),
        (
            ["--store", "{tmp}/k.zarr", "--scheduler", "nonsense"],
            "scheduler: cannot connect to 'nonsense'",
        ),
        (
            ["--store", "{tmp}/k.zarr", "--kind", "infinite"],
            "width: does not apply to --kind infinite",
        ),
        (
            ["--store", "{tmp}/k.zarr", "--data", "{tmp}/d.npz", "--n", "60"],
            "50 examples, 60 needed (--n)",
        ),
        (["--kind", "infinite"], "kind: needs --store"),
        (["--ridge", "1"], "ridge: needs --store"),
        (["--dask-local", "2"], "dask-local: needs --store"),
    ],
)
def test_bad_options_give_one_error_line(tmp_path, extra, message):
    np.savez(tmp_path / "d.npz", x=np.zeros((50, 3), np.float32), y=np.zeros(50, np.int64))
    result = invoke("--n", "20", "--width", "8", *[e.format(tmp=tmp_path) for e in extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "option", [["--parameterization", "standard"], ["--dtype", "float64"], ["--mode", "full"],
               ["--seed", "5"], ["--method", "jacobian"]],
)  # fmt: skip
def test_infinite_kind_refuses_the_options_of_a_finite_network(tmp_path, option):
    store = tmp_path / "i.zarr"
    result = invoke("--kind", "infinite", "--n", "20", "--store", str(store), *option)
    assert result.exit_code == 2, result.output
    assert f"{option[0][2:]}: does not apply to --kind infinite" in result.output
    assert not store.exists()


def test_a_store_of_another_job_names_each_difference_once(tmp_path):
    args = ["--n", "20", "--width", "8", "--depth", "1", "--store", str(tmp_path / "k.zarr")]
    assert invoke(*args).exit_code == 0
    result = invoke(*args, "--dtype", "float64")
    assert result.exit_code == 2, result.output
    assert "holds a different job" in result.output
    assert result.output.count("dtype (store:") == 1, result.output


TILED = ["--n", "400", "--width", "64", "--depth", "1", "--memory-budget", "400KB"]
"""36 tiles of the digits' eNTK, ~0.1 s each on a quiet core: Ctrl-C finds tiles to do."""


def test_ctrl_c_says_how_many_tiles_are_stored_and_the_same_command_resumes(tmp_path):
    """Regression: Ctrl-C of an inline ``--store`` run exited 130 without a word. Now one line
    (tiles stored, how to resume), exit 130, no traceback; the re-run completes the store
    with exactly the bytes of an uninterrupted run."""
    store = tmp_path / "k.zarr"
    src = str(Path(ns.__file__).resolve().parents[1])
    env = os.environ | {"PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "ntkscope.cli", "kernel", *TILED, "--store", str(store)]
    child = subprocess.Popen(
        command, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible
    )
    deadline = time.monotonic() + 300  # a busy machine imports slowly
    while not _stored(store) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    stderr = child.communicate(timeout=120)[1]
    assert child.returncode == 130 and "Traceback" not in stderr, stderr
    found = re.search(r"interrupted: (\d+) of 36 tiles stored in '(.*?)'; run the same "
                      "command again to resume", " ".join(stderr.split()))  # fmt: skip
    assert found and found[2] == str(store), stderr
    stored = int(found[1])
    assert 1 <= stored < 36, stderr
    resumed = invoke(*TILED, "--store", str(store))
    assert resumed.exit_code == 0 and f"{stored} already stored" in resumed.output, resumed.output
    whole = invoke(*TILED, "--store", str(tmp_path / "whole.zarr"))
    assert whole.exit_code == 0, whole.output
    a, b = (kernel_store.open(p).kernel.compute() for p in (store, tmp_path / "whole.zarr"))
    assert a.tobytes() == b.tobytes()


def _stored(store: Path) -> int:
    """Tiles flagged done in the store (0 before it exists)."""
    try:
        return len(tiled.done_tiles(store))
    except FileNotFoundError:
        return 0
