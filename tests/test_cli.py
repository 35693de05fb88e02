import json
import math
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from ntkscope.cli import app
from ntkscope.models import ActivationName

runner = CliRunner()
ENV = {"COLUMNS": "200"}  # rich wraps the table at the console width


def invoke(*args: str):
    return runner.invoke(app, list(args), env=ENV)


def row(output: str, label: str) -> str:
    """The value column of one row of the summary table."""
    match = re.search(rf"│ {re.escape(label)}\s*│ (.*?)\s*│", output)
    assert match, output
    return match.group(1)


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0 and "kernel" in result.output


def test_kernel_help_lists_every_activation():
    """Every name --activation accepts is in the help (it listed 6 of 16)."""
    help_text = " ".join(invoke("kernel", "--help").output.split())
    missing = [a.value for a in ActivationName if not re.search(rf"\b{a.value}\b", help_text)]
    assert not missing, help_text


def test_default_run_is_near_the_infinite_ntk():
    result = invoke("kernel")
    assert result.exit_code == 0, result.output
    assert row(result.output, "data") == "digits, N = 256"
    assert row(result.output, "eNTK").startswith("(256, 256) trace")
    assert row(result.output, "method") == "auto → structured"
    assert math.isfinite(float(row(result.output, "condition number")))
    # The eNTK fluctuates around the infinite NTK by O(1/√width): over 30 initializations
    # (digits, N = 256, depth 3) √width · distance averages 2.9 at width 128 and 3.2 at width
    # 512; at width 512 the distance has mean 0.14, sd 0.05, max 0.34. Seed 0 gives 0.145,
    # and 0.3 (mean + 3 sd) still fails for a wrong parameterization or output normalization,
    # which give distances of order 1.
    assert float(row(result.output, "‖Θ̂ − Θ‖/‖Θ‖").split()[0]) < 0.3


def test_standard_parameterization_is_not_compared():
    result = invoke("kernel", "--n", "16", "--width", "32", "--parameterization", "standard")
    assert result.exit_code == 0, result.output
    assert row(result.output, "‖Θ̂ − Θ‖/‖Θ‖") == "n/a (standard parameterization)"


def test_small_cnn():
    result = invoke("kernel", "--model", "cnn", "--width", "8", "--depth", "2", "--n", "12")
    assert result.exit_code == 0, result.output
    assert row(result.output, "model").startswith("cnn 1×8×8 → 8×2 → 10")
    assert row(result.output, "eNTK").startswith("(12, 12) trace")
    assert math.isfinite(float(row(result.output, "condition number")))


@pytest.mark.parametrize(("mode", "shape"), [("trace", (20, 20)), ("full", (20, 20, 10, 10))])
def test_out_writes_a_loadable_npz(tmp_path, mode, shape):
    path = tmp_path / "kernel.npz"
    result = invoke("kernel", "--n", "20", "--width", "16", "--mode", mode, "--out", str(path))
    assert result.exit_code == 0, result.output
    with np.load(path, allow_pickle=False) as saved:
        assert saved["kernel"].shape == shape and saved["kernel"].dtype == np.float32
        assert saved["nngp"].shape == saved["ntk"].shape == (20, 20)
        assert saved["ntk"].dtype == np.float64
        assert saved["y"].shape == (20,)
        settings = json.loads(str(saved["settings"]))
    assert settings["width"] == 16 and settings["mode"] == mode
    assert settings["method_used"] == "auto → structured"


def test_regression_data_without_infinite_kernel(tmp_path):
    path = tmp_path / "gaussian.npz"
    args = ["--data", "gaussian", "--n", "10", "--width", "8", "--dtype", "float64"]
    result = invoke("kernel", *args, "--parameterization", "standard", "--out", str(path))
    assert result.exit_code == 0, result.output
    assert row(result.output, "model").startswith("mlp 16 → 8×3 → 1")
    with np.load(path) as saved:
        assert set(saved.files) == {"kernel", "y", "settings"}
        assert saved["kernel"].dtype == np.float64 and saved["y"].dtype == np.float64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "0"], "width: expected a positive int"),
        (["--model", "rnn"], "model: expected one of 'mlp', 'cnn'"),
        (["--activation", "swish"], "activation: unknown name 'swish'"),
        (["--parameterization", "mup"], "parameterization: expected one of"),
        (["--data", "mnist"], "data: expected one of"),
        (["--n", "0"], "n: expected a positive int"),
        (["--n", "5000"], "n: 'digits' has 1797 examples"),
        (["--sigma-w", "-1"], "sigma_w: expected a finite real number >= 0"),
        (["--method", "magic"], "method: expected one of"),
        (["--mode", "diag"], "mode: expected one of"),
        (["--dtype", "float16"], "dtype: expected one of"),
        (["--memory-budget", "lots"], "memory_budget: expected a size"),
        (["--memory-budget", "10"], "memory_budget: 10 bytes is too small"),
        (["--model", "cnn", "--data", "gaussian"], "data: 'gaussian' has no image shape"),
        (["--out", "/nonexistent/dir/k.npz"], "out: directory '/nonexistent/dir' does not exist"),
        (["--out", "k.txt"], "out: expected a .npz file name"),  # issue 18, defect 5
    ],
)
def test_bad_input_gives_one_error_line(args, message):
    result = invoke("kernel", "--n", "8", "--width", "8", *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stdout.strip() == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr


def test_depth_0_is_a_model_without_hidden_layers():
    """Regression (issue 18, defect 5): the summary printed "64×0"."""
    result = invoke("kernel", "--n", "8", "--width", "64", "--depth", "0")
    assert result.exit_code == 0, result.output
    assert "no hidden layer" in result.stdout and "64×0" not in result.stdout


def test_unparsable_number_is_a_usage_error():
    result = invoke("kernel", "--width", "abc")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value for '--width'" in result.stderr
