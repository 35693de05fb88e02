"""`monte_carlo_kernels`: means and errors over seeds, resuming, the 1/n extrapolation."""

from __future__ import annotations

import pytest
import torch

import ntkscope as ns


def inputs(n: int = 4, d: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def mlp(seed: int) -> torch.nn.Module:
    return ns.models.mlp(3, 16, 1, 2, seed=seed)


def test_means_and_errors_are_those_of_the_seeds():
    x = inputs()
    result = ns.monte_carlo_kernels(mlp, x, samples=3, seed=5)
    models = [mlp(s) for s in (5, 6, 7)]
    kernels = torch.stack([ns.empirical_ntk(m, x).double() for m in models])
    outputs = torch.stack([m(x).double() @ m(x).double().T / 2 for m in models]).detach()
    # the same float32 kernels averaged in float64: equal to rounding
    torch.testing.assert_close(result.ntk, kernels.mean(0), rtol=1e-12, atol=0)
    torch.testing.assert_close(result.ntk_se, kernels.std(0) / 3**0.5, rtol=1e-12, atol=0)
    torch.testing.assert_close(result.nngp, outputs.mean(0), rtol=1e-6, atol=1e-9)
    assert result.ntk_infinite is None and result.samples == 3


def test_width_extrapolation_recovers_the_infinite_ntk():
    """Θ∞ of the c/n fit over widths 16..64 (12 seeds each) agrees with
    `infinite_kernels` within its own standard error: every entry within 4.5 se (for 15
    entries with t-distributed errors of 11 degrees of freedom: a ~1% chance per seed set;
    the seeds are fixed, so the test is deterministic)."""
    x = inputs(5, 4, seed=1)

    def factory(width: int, seed: int):
        return ns.models.mlp(4, width, 2, 1, seed=seed)

    result = ns.monte_carlo_kernels(factory, x, samples=12, widths=[16, 32, 64])
    _, ntk = ns.infinite_kernels(x, depth=2)
    z = (result.ntk_infinite - ntk) / result.ntk_infinite_se
    assert z.abs().max() < 4.5
    assert result.widths == (16, 32, 64) and len(result.per_width) == 3
    assert result.fit_chi2 > 0


def test_a_rerun_with_the_store_computes_nothing(tmp_path):
    calls = []

    def counting(seed: int):
        calls.append(seed)
        return mlp(seed)

    store, x = tmp_path / "samples.npz", inputs()
    first = ns.monte_carlo_kernels(counting, x, samples=3, store=store)
    assert calls == [0, 1, 2]
    second = ns.monte_carlo_kernels(counting, x, samples=4, store=store)
    assert calls == [0, 1, 2, 3]  # only the new sample
    again = ns.monte_carlo_kernels(counting, x, samples=3, store=store)
    assert calls == [0, 1, 2, 3] and torch.equal(again.ntk, first.ntk)
    assert second.samples == 4
    with pytest.raises(ValueError, match=r"store: .* other inputs"):
        ns.monte_carlo_kernels(counting, inputs(seed=1), samples=3, store=store)


def test_bad_arguments_are_named():
    x = inputs()
    with pytest.raises(ValueError, match="samples"):
        ns.monte_carlo_kernels(mlp, x, samples=1)
    with pytest.raises(ValueError, match="widths"):
        ns.monte_carlo_kernels(mlp, x, samples=2, widths=[8, 8])
    with pytest.raises(ValueError, match=r"factory: widths were given.*`width`"):
        ns.monte_carlo_kernels(mlp, x, samples=2, widths=[8, 16])
    with pytest.raises(TypeError, match="factory"):
        ns.monte_carlo_kernels(3, x, samples=2)
