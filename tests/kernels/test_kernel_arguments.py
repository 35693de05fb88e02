"""Bad arguments of the infinite-width and Monte-Carlo kernels are refused by name.

Each case returned kernels (or failed deep inside) before: inputs the model cannot take,
a ``diagonal`` that is not a bool, a single int for ``pool_after``, a bad memory budget
and a store in a missing folder.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntkscope as ns


def _mlp(inputs: int = 5) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize(
    ("model", "x", "message"),
    [
        (
            _mlp(5),
            torch.randn(3, 4),
            r"x1: the model fails on one example of shape \(4,\).*1x4 and 5x8",
        ),
        (
            ns.models.cnn(2, 8, 2, 3, image_size=6, readout="flatten", seed=0),
            torch.randn(3, 3, 6, 6),
            r"x1: the model fails on one example of shape \(3, 6, 6\)",
        ),
        (
            ns.models.cnn(2, 8, 2, 3, image_size=6, readout="flatten", seed=0),
            torch.randn(3, 2, 8, 8),
            r"x1: the model fails on one example of shape \(2, 8, 8\)",
        ),
        (
            nn.Sequential(nn.Conv2d(1, 4, 1), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4, 2)),
            torch.randn(3, 1, 1, 1),
            r"x1: the model fails on one example of shape \(1, 1, 1\)",
        ),
    ],
)
def test_inputs_the_model_cannot_take_are_refused(model, x, message):
    with pytest.raises(ValueError, match=message):
        ns.infinite_width(model)(x)


def test_inputs_the_model_takes_still_give_kernels():
    nngp, ntk = ns.infinite_width(_mlp(4))(torch.randn(3, 4), torch.randn(2, 4))
    assert nngp.shape == ntk.shape == (3, 2)


@pytest.mark.parametrize("budget", ["lots", -3, 0, True])
def test_memory_budget_is_checked_when_built(budget):
    with pytest.raises((TypeError, ValueError), match="memory_budget"):
        ns.infinite_width(_mlp(), memory_budget=budget)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ns.infinite_kernels(torch.randn(4, 5), depth=2, diagonal="no"),
        lambda: ns.infinite_cnn_kernels(torch.randn(3, 1, 4, 4), depth=2, diagonal="no"),
        lambda: ns.infinite_width(_mlp())(torch.randn(4, 5), diagonal="no"),
        lambda: ns.infinite_width(_mlp())(torch.randn(4, 5), diagonal=1),
    ],
)
def test_diagonal_must_be_a_bool(call):
    with pytest.raises(TypeError, match="diagonal: expected True or False"):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: ns.infinite_cnn_kernels(torch.randn(3, 1, 4, 4), depth=2, pool_after=1),
        lambda: ns.models.cnn(2, 8, 1, 2, image_size=4, pool_after=1),
    ],
)
def test_pool_after_must_be_a_list(call):
    with pytest.raises(TypeError, match=r"pool_after: expected a list .*\[1\]"):
        call()


def test_monte_carlo_store_in_a_missing_folder_is_refused_before_computing(tmp_path):
    def factory(seed):
        raise AssertionError("computed before the store was checked")

    with pytest.raises(FileNotFoundError, match="store: no such folder"):
        ns.monte_carlo_kernels(
            factory, torch.randn(3, 4), samples=2, store=tmp_path / "missing" / "mc.npz"
        )
