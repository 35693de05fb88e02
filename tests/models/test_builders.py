"""Model builders: parameterizations as in docs/conventions.md, and argument checks."""

from __future__ import annotations

import pytest
import torch

import ntkscope as ns
from ntkscope.models import Dense


def test_ntk_and_standard_compute_the_same_function_at_initialization():
    """Same seed, same draws: W_std = σ_w/√n · W_ntk exactly, so outputs agree to rounding
    (1e-5 relative: float32 with a different order of two multiplications)."""
    x = torch.randn(16, 7)
    for builder, inputs in ((ns.models.mlp, x), (ns.models.cnn, torch.randn(4, 2, 8, 8))):
        d_in = inputs.shape[1]
        kwargs = dict(sigma_w=1.3, sigma_b=0.4, seed=3)
        ntk = builder(d_in, 12, 2, 3, parameterization="ntk", **kwargs)
        std = builder(d_in, 12, 2, 3, parameterization="standard", **kwargs)
        torch.testing.assert_close(ntk(inputs), std(inputs), rtol=1e-5, atol=1e-6)


def test_parameter_distributions():
    """NTK: unit-variance W and b; standard: Var W = σ_w²/fan_in, Var b = σ_b².
    With 512·256 draws the sample std has relative error ~1/√(2·131072) ≈ 0.2%; 2% is 10σ."""
    ntk = Dense(256, 512, parameterization="ntk", sigma_w=1.5, sigma_b=0.5)
    std = Dense(256, 512, parameterization="standard", sigma_w=1.5, sigma_b=0.5)
    assert ntk.weight.std().item() == pytest.approx(1.0, rel=0.02)
    assert (ntk.weight_scale, ntk.bias_scale) == (1.5 / 16, 0.5)
    assert std.weight.std().item() == pytest.approx(1.5 / 16, rel=0.02)
    assert (std.weight_scale, std.bias_scale) == (1.0, 1.0)
    assert std.bias.std().item() == pytest.approx(0.5, rel=0.15)  # 512 draws: ~3% std error


def test_ntk_parameterization_scales_gradients_with_width():
    """NTK parameterization: E[(∂f/∂W¹_ij)²] ∝ 1/width, so the layer's share of the NTK stays
    O(1) as its entry count grows (docs/conventions.md). Averaged over 20 seeds the ratio of
    mean squares between widths 64 and 1024 is 1/16 up to ~10% seed noise: 25% tolerance."""
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    mean_squares = []
    for width in (64, 1024):
        values = []
        for seed in range(20):
            model = ns.models.mlp(8, width, 2, 1, seed=seed)
            model(x).sum().backward()
            values.append(model[0].weight.grad.pow(2).mean().item())
        mean_squares.append(sum(values) / len(values))
    assert mean_squares[1] / mean_squares[0] == pytest.approx(1 / 16, rel=0.25)


def test_mlp_structure_and_bias_defaults():
    model = ns.models.mlp(5, [7, 9], 2, 3, activation="tanh")
    dense = [m for m in model if isinstance(m, Dense)]
    assert [tuple(m.weight.shape) for m in dense] == [(7, 5), (9, 7), (3, 9)]
    assert all(m.bias is None for m in dense)  # NTK parameterization with σ_b = 0
    with_bias = ns.models.mlp(5, 7, 1, 3, sigma_b=0.1)
    assert all(m.bias is not None for m in with_bias if isinstance(m, Dense))
    standard = ns.models.mlp(5, 7, 1, 3, parameterization="standard")
    biases = [m.bias for m in standard if isinstance(m, Dense)]
    assert all(b is not None and b.requires_grad and not b.any() for b in biases)
    assert len(ns.models.mlp(5, 7, 0, 3)) == 1  # depth 0: a linear model
    assert ns.models.mlp(5, 7, 1, 3, activation=torch.sin)(torch.zeros(2, 5)).shape == (2, 3)


def test_cnn_shapes_and_pooling():
    model = ns.models.cnn(3, 8, 3, 10, pool_after=[0, 1])
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    pools = [m for m in model if isinstance(m, torch.nn.AvgPool2d)]
    assert len(pools) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(width=0), ValueError, "width: expected a positive int"),
        (dict(width=[4, -1]), ValueError, "width: expected a positive int"),
        (dict(width=[4]), ValueError, "width: got 1 per-layer widths for depth=2"),
        (dict(width=2.5), TypeError, "width: expected an int or a list"),
        (dict(depth=-1), ValueError, "depth: expected an int >= 0"),
        (dict(d_in=0), ValueError, "d_in: expected a positive int"),
        (dict(activation="swish"), ValueError, "activation: unknown name 'swish'"),
        (dict(activation=3), TypeError, "activation: expected a name or a callable"),
        (dict(parameterization="mup"), ValueError, "parameterization: expected one of"),
        (dict(sigma_w=-1.0), ValueError, "sigma_w: expected a finite real number >= 0"),
        (dict(sigma_b=float("nan")), ValueError, "sigma_b: expected a finite real number >= 0"),
    ],
)
def test_mlp_bad_arguments(kwargs, error, match):
    arguments = dict(d_in=4, width=8, depth=2, d_out=1) | kwargs
    with pytest.raises(error, match=match):
        ns.models.mlp(**arguments)


def test_cnn_flatten_readout():
    model = ns.models.cnn(3, 8, 3, 10, pool_after=[0], readout="flatten", image_size=(8, 4))
    assert model(torch.randn(2, 3, 8, 4)).shape == (2, 10)
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model)
    assert model[-1].weight.shape == (10, 8 * 4 * 2)  # fan-in C·H·W after one pooling
    gap = ns.models.cnn(3, 8, 3, 10, pool_after=[0], seed=0)
    assert isinstance(gap[-3], torch.nn.AdaptiveAvgPool2d) and gap[-1].weight.shape == (10, 8)


def test_cnn_bad_arguments():
    with pytest.raises(ValueError, match=r"pool_after: expected block indices in 0\.\.1"):
        ns.models.cnn(3, 8, 2, 10, pool_after=[2])
    with pytest.raises(ValueError, match="kernel_size: expected an odd size"):
        ns.models.cnn(3, 8, 2, 10, kernel_size=2)
    with pytest.raises(ValueError, match="readout: expected one of 'gap', 'flatten'"):
        ns.models.cnn(3, 8, 2, 10, readout="max")
    with pytest.raises(ValueError, match="image_size: required by readout='flatten'"):
        ns.models.cnn(3, 8, 2, 10, readout="flatten")
    with pytest.raises(ValueError, match="image_size: height and width must be divisible by 2"):
        ns.models.cnn(3, 8, 2, 10, readout="flatten", image_size=5)
