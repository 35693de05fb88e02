"""``ntkscope diagnose`` from the command line: the example, bad input, divergence."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import ntkscope as ns
from ntkscope.cli import app
from ntkscope.diagnosis import load_factory

EXAMPLE = Path(__file__).parents[1] / "examples" / "diagnose_custom_model.py"
FAST = ["--steps", "10", "--n-train", "32", "--n-test", "16", "--probe", "16", "--seeds", "2"]


def invoke(*args: str):
    return CliRunner().invoke(app, ["diagnose", *args])


def test_the_example_end_to_end(tmp_path):
    """The example's model has a LayerNorm (on the structured eNTK since issue 13)."""
    result = invoke(f"{EXAMPLE}:make_model", "--out", str(tmp_path), *FAST)
    assert result.exit_code == 0, result.output
    assert re.search(r"verdict: (kernel regime|partly|feature learning)", result.output)
    for name in ("index.html", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert len(list((tmp_path / "images").glob("*.png"))) == 4


def test_the_example_says_which_method_its_model_runs_on():
    """Regression (u3): its docstring said that LayerNorm sent it to a generic method."""
    example = load_factory(f"{EXAMPLE}:make_model")
    x = ns.data.load("digits", 4, seed=0).x
    assert ns.kernels.resolve_method(example(0), x) == "structured"
    doc = sys.modules[example.__module__].__doc__
    assert 'resolve_method(make_model(0), x)`` is "structured"' in doc and "generic" not in doc


@pytest.fixture
def models_file(tmp_path) -> Path:
    file = tmp_path / "user_models.py"
    file.write_text(
        "import torch\n"
        "def wrong_width():\n    return torch.nn.Linear(3, 10)\n"
        "def not_a_module():\n    return 42\n"
        "def nan_model():\n"
        "    m = torch.nn.Linear(64, 10)\n    torch.nn.init.constant_(m.bias, float('nan'))\n"
        "    return m\n"
        "def fine(seed):\n    torch.manual_seed(seed)\n    return torch.nn.Linear(64, 10)\n"
        "def never_built():\n    raise AssertionError('lr must be checked first')\n"
        "def with_dropout():\n"  # left in training mode, as every new module is
        "    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Dropout(0.5),\n"
        "                               torch.nn.Linear(32, 10))\n"
    )
    return file


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ("missing.py:make", [], "no such file"),
        ("{file}:nothing", [], "has no function 'nothing'"),
        ("{file}:not_a_module", [], "expected it to return a torch.nn.Module"),
        ("{file}:wrong_width", [], "data: the model does not accept"),
        ("{file}:nan_model", [], "loss at initialization is nan"),
        ("{file}:fine", ["--data", "cifar"], "data: expected a built-in name"),
        ("{file}:fine", ["--optimizer", "rmsprop"], "optimizer: expected one of"),
        ("{file}:never_built", ["--lr", "0"], "lr: expected a positive learning rate, got 0"),
        ("{file}:never_built", ["--lr", "-1"], "lr: expected a positive learning rate, got -1"),
    ],
)
def test_bad_input_gives_one_error_line_and_exit_2(models_file, tmp_path, spec, extra, message):
    result = invoke(spec.format(file=models_file), "--out", str(tmp_path / "r"), *FAST, *extra)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output, result.output
    assert "Traceback" not in result.output


def test_a_factory_in_training_mode_runs(models_file, tmp_path):
    """Regression (u3): the kernels at initialization refused a model in training mode with
    Dropout; they are taken in eval mode (`tests/diagnosis/test_diagnose.py` checks the
    numbers)."""
    result = invoke(f"{models_file}:with_dropout", "--out", str(tmp_path), *FAST)
    assert result.exit_code == 0, result.output
    assert re.search(r"verdict: (kernel regime|partly|feature learning)", result.output)
    assert "distance to the infinite NTK at init: one seed" in result.output


def test_divergence_is_reported_with_exit_1(models_file, tmp_path):
    result = invoke(f"{models_file}:fine", "--lr", "1e5", "--out", str(tmp_path), *FAST)
    assert result.exit_code == 1, result.output
    assert "verdict: diverged" in result.output and "error: training diverged" in result.output
    assert (tmp_path / "index.html").is_file()
    rows = [line for line in result.output.splitlines() if "kernel change" in line]
    assert rows and "n/a (diverged)" in rows[0], result.output  # not "kernel" (issue 18)


def _bad_npz_files(folder: Path) -> dict[str, str]:
    """Bad ``--data`` files (issue 18, defect 2), each with what its error must say."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 64)), rng.integers(0, 10, 60)
    files = {
        "lengths.npz": (dict(x=x, y=y[:50]), "array 'y' of .* has 50 rows but 'x' has 60"),
        "features.npz": (
            dict(x=x, y=y, x_test=x[:10, :32], y_test=y[:10]),
            r"array 'x_test' of .* has examples of shape \(32,\), 'x' has \(64,\)",
        ),
        "nan.npz": (dict(x=np.where(x > 2, np.nan, x), y=y), "array 'x' of .* contains NaN"),
    }
    expected = {}
    for name, (arrays, message) in files.items():
        np.savez(folder / name, **arrays)
        expected[name] = message
    (folder / "text.npz").write_text("x,y\n1,2\n")
    expected["text.npz"] = "is not a .npz file of arrays written by numpy.savez"
    return expected


def test_bad_npz_data_gives_one_line_naming_key_and_file(models_file, tmp_path):
    for name, message in _bad_npz_files(tmp_path).items():
        path = tmp_path / name
        result = invoke(f"{models_file}:fine", "--data", str(path), "--out", str(tmp_path), *FAST)
        assert result.exit_code == 2, (name, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: data: "), result.output
        assert re.search(message, lines[0]) and name in lines[0], result.output
