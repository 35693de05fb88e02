"""``ntkscope kernel --store``: a user's model into a store, resumed, ridge on it; errors."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import ntkscope as ns
from ntkscope import kernel_store
from ntkscope._cli_kernel_store import dataset
from ntkscope.cli import app

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
