"""`diagnose` and ``ntkscope kernel --model FILE.py:FN`` compare with the infinite NTK of
the user's own architecture (`ntkscope.infinite_width`), and say why when they cannot."""

from __future__ import annotations

import re

import torch
from torch import nn
from typer.testing import CliRunner

import ntkscope as ns
from ntkscope.cli import app
from ntkscope.diagnosis.infinite import infinite_reference

SMALL = dict(steps=10, n_train=48, n_test=32, probe=24, seeds=2, records=2)

USER_FILE = """
import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.norm = nn.Linear(64, 128), nn.LayerNorm(128)
        self.fc, self.out = nn.Linear(128, 128), nn.Linear(128, 10)

    def forward(self, x):
        h = self.inp(x)
        return self.out(h + self.fc(nn.functional.gelu(self.norm(h))))


def residual(seed):
    return Residual()


def softmax():
    return nn.Sequential(nn.Linear(64, 32), nn.Softmax(-1), nn.Linear(32, 10))
"""


def test_diagnose_reports_the_distance_for_a_user_model(tmp_path):
    (tmp_path / "user.py").write_text(USER_FILE)
    factory = ns.diagnosis.load_factory(f"{tmp_path / 'user.py'}:residual")
    diagnosis = ns.diagnose(factory, "digits", **SMALL)
    # standard parameterization at width 128: the eNTK is within O(1/√128) of Θ∞, and
    # a wrong program (a missed residual branch, a wrong fan-in) gives distances of order 1
    assert 0 < diagnosis.numbers["infinite_distance_single"] < 0.5
    program = diagnosis.settings["kernel_program"]
    assert "norm: LayerNorm" in program and "activation gelu" in program


def test_unsupported_model_says_why():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    kernels, why = infinite_reference(model, torch.randn(3, 4))
    assert kernels is None
    assert why.startswith("n/a: 1: layer BatchNorm1d") and "monte_carlo_kernels" in why


def test_kernel_command_with_a_user_model(tmp_path):
    (tmp_path / "user.py").write_text(USER_FILE)
    runner = CliRunner()
    env = {"COLUMNS": "200"}
    result = runner.invoke(
        app, ["kernel", "--model", f"{tmp_path / 'user.py'}:residual", "--n", "16"], env=env
    )
    assert result.exit_code == 0, result.output
    distance = re.search(
        r"‖Θ̂ − Θ‖/‖Θ‖\s*│ ([0-9.]+) \(infinite NTK of this architecture", result.output
    )
    assert distance and float(distance.group(1)) < 0.5, result.output
    assert (
        "kernel program of the infinite NTK" in result.output
        and "fc: Linear 128→128" in result.output
    )
    result = runner.invoke(
        app, ["kernel", "--model", f"{tmp_path / 'user.py'}:softmax", "--n", "16"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "n/a: 1: layer Softmax" in result.output
