"""``ntkscope diagnose`` from the command line: the example, bad input, divergence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ntkscope.cli import app

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
    ],
)
def test_bad_input_gives_one_error_line_and_exit_2(models_file, tmp_path, spec, extra, message):
    result = invoke(spec.format(file=models_file), "--out", str(tmp_path / "r"), *FAST, *extra)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output, result.output
    assert "Traceback" not in result.output


def test_divergence_is_reported_with_exit_1(models_file, tmp_path):
    result = invoke(f"{models_file}:fine", "--lr", "1e5", "--out", str(tmp_path), *FAST)
    assert result.exit_code == 1, result.output
    assert "verdict: diverged" in result.output and "error: training diverged" in result.output
    assert (tmp_path / "index.html").is_file()
