"""Diagnose a network that is not built with ntkscope.models: a small residual MLP with
LayerNorm. Every layer of it has a rule in the structured eNTK (LayerNorm included), so
``ns.kernels.resolve_method(make_model(0), x)`` is "structured", as the report says.

From the command line:

    ntkscope diagnose examples/diagnose_custom_model.py:make_model --data digits

or run this file, which does the same through the library and prints the verdict.
"""

import torch
from torch import nn

import ntkscope as ns
from ntkscope.report.diagnosis import write_report


class ResidualMLP(nn.Module):
    """x -> Linear -> [LayerNorm -> Linear -> GELU] + skip -> Linear, on flat 8×8 digits."""

    def __init__(self, d_in: int = 64, width: int = 256, d_out: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.norm = nn.LayerNorm(width)
        self.hidden = nn.Linear(width, width)
        self.readout = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = h + nn.functional.gelu(self.hidden(self.norm(h)))
        return self.readout(h)


def make_model(seed: int) -> nn.Module:
    """The factory ntkscope calls, once per seed."""
    torch.manual_seed(seed)
    return ResidualMLP()


if __name__ == "__main__":
    diagnosis = ns.diagnose(make_model, "digits", steps=300)
    print(f"verdict: {diagnosis.verdict.value}")
    for criterion in diagnosis.criteria:
        print(f"  {criterion.name}: {criterion.value:.4g} ({criterion.status})")
    print(f"report: {write_report(diagnosis, 'ntkscope-diagnosis')}")
