import math

import numpy as np
import pytest
import torch
from scipy import stats

from ntkscope.kernels import GaussianProcess, GPHyperparameters, infinite_kernels

TOL = 1e-10
"""float64 on problems of ≤ 12 points with condition numbers ≤ 1e4: rounding ≈ 1e-12."""


def _problem(n=8, m=4, o=3, seed=0):
    """A ReLU NTK on random inputs: train kernel, test-train, test diagonal, targets, means."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + m, 5, generator=g, dtype=torch.float64)
    _, k = infinite_kernels(x, depth=2)
    y = torch.randn(n, o, generator=g, dtype=torch.float64)
    mean = torch.randn(n + m, o, generator=g, dtype=torch.float64)
    return k[:n, :n], k[n:, :n], k[n:, n:].diagonal(), y, mean[:n], mean[n:]


def _explicit(k, ks, kss, y, m_train, m_test, s, noise):
    """Textbook GP posterior with np.linalg.inv (Rasmussen & Williams 2006, eq. 2.23–2.24)."""
    k, ks, kss, y, m_train, m_test = (np.asarray(a) for a in (k, ks, kss, y, m_train, m_test))
    c_inv = np.linalg.inv(s * k + noise * np.eye(len(k)))
    mean = m_test + s * ks @ c_inv @ (y - m_train)
    latent = s * kss - s**2 * np.einsum("mn,nk,mk->m", ks, c_inv, ks)
    return mean, latent


@pytest.mark.parametrize(("s", "noise"), [(1.0, 0.1), (0.3, 2.0), (5.0, 1e-3)])
def test_posterior_equals_explicit_inverse(s, noise):
    k, ks, kss, y, m_train, m_test = _problem()
    gp = GaussianProcess(k, y, prior_mean=m_train)
    pred = gp.predict(ks, kss, GPHyperparameters(s, noise), prior_mean_test=m_test)
    mean, latent = _explicit(k, ks, kss, y, m_train, m_test, s, noise)
    np.testing.assert_allclose(pred.mean.numpy(), mean, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(pred.latent_variance.numpy(), latent, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(pred.variance.numpy(), latent + noise, rtol=TOL, atol=TOL)


def test_zero_prior_mean_is_the_default():
    k, ks, kss, y, _, _ = _problem(o=1)
    pred = GaussianProcess(k, y[:, 0]).predict(ks, kss, GPHyperparameters(2.0, 0.5))
    zeros = np.zeros((len(ks), 1))
    mean, _ = _explicit(k, ks, kss, y, np.zeros_like(y), zeros, 2.0, 0.5)
    np.testing.assert_allclose(pred.mean.numpy(), mean, rtol=TOL, atol=TOL)


def test_log_marginal_likelihood_equals_multivariate_normal():
    k, _, _, y, m_train, _ = _problem(n=12)
    h = GPHyperparameters(0.7, 0.2)
    cov = h.prior_scale * k.numpy() + h.noise * np.eye(12)
    expected = sum(
        stats.multivariate_normal(m_train[:, o].numpy(), cov).logpdf(y[:, o].numpy())
        for o in range(y.shape[1])
    )
    value = GaussianProcess(k, y, prior_mean=m_train).log_marginal_likelihood(h)
    assert value == pytest.approx(expected, rel=TOL, abs=TOL)


def _gp_samples(n, o, s, noise, seed=1):
    """Inputs' ReLU NTK (depth 1) and o target columns drawn from N(0, s K + σ² I)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    _, k = infinite_kernels(x, depth=1)
    cov = s * k + noise * torch.eye(n, dtype=torch.float64)
    return k, torch.linalg.cholesky(cov) @ torch.randn(n, o, generator=g, dtype=torch.float64)


def test_hyperparameters_recovered_from_gp_samples():
    """Data drawn from the GP with s = 2, σ² = 0.1: N = 200 points, O = 20 outputs.

    The ML-II estimates have relative errors of a few percent at 4,000 targets (measured
    over 5 data seeds: s within 3 %, σ² within 8 %, sd of log σ² ≈ 0.06), so 25 % is > 4 sd.
    """
    k, y = _gp_samples(200, 20, 2.0, 0.1)
    fitted = GaussianProcess(k, y).fit_hyperparameters()
    assert fitted.prior_scale == pytest.approx(2.0, rel=0.25)
    assert fitted.noise == pytest.approx(0.1, rel=0.25)


def test_fit_maximizes_the_evidence():
    """An interior maximum: no 5 % step in either coordinate raises the evidence (beyond
    1e-9 relative, the L-BFGS-B stopping tolerance)."""
    gp = GaussianProcess(*_gp_samples(40, 3, 0.5, 0.3, seed=3))
    best = gp.fit_hyperparameters()
    top = gp.log_marginal_likelihood(best)
    s, noise = best.prior_scale, best.noise
    for factor in (0.95, 1.05):
        for h in (GPHyperparameters(s * factor, noise), GPHyperparameters(s, noise * factor)):
            assert gp.log_marginal_likelihood(h) <= top + 1e-9 * abs(top)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel": torch.ones(3, 2)}, "kernel: expected a square"),
        ({"y": torch.ones(4, 1)}, "y: expected"),
        ({"prior_mean": torch.ones(3, 2)}, "prior_mean: expected shape"),
        ({"kernel": torch.full((3, 3), math.nan)}, "kernel: contains NaN"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, message):
    args = {"kernel": torch.eye(3), "y": torch.ones(3, 1)} | kwargs
    with pytest.raises(ValueError, match=message):
        GaussianProcess(**args)


@pytest.mark.parametrize(
    ("s", "noise", "name"),
    [(0.0, 1.0, "prior_scale"), (1.0, -1.0, "noise"), (math.inf, 1.0, "prior_scale")],
)
def test_hyperparameters_must_be_positive(s, noise, name):
    with pytest.raises(ValueError, match=f"{name}: expected > 0"):
        GPHyperparameters(s, noise)


def test_hyperparameters_accept_numpy_reals_and_refuse_bools():
    # np.float32 used to be refused while True passed as 1
    h = GPHyperparameters(np.float32(0.5), np.int64(2))
    assert (h.prior_scale, h.noise) == (0.5, 2.0) and type(h.prior_scale) is float
    with pytest.raises(TypeError, match="prior_scale"):
        GPHyperparameters(True, 1.0)
    with pytest.raises(TypeError, match="noise"):
        GPHyperparameters(1.0, "1")


def test_prior_mean_test_is_required_exactly_with_a_prior_mean():
    # m(x*) used to be silently dropped (or added to a zero-mean process)
    k, ks, kss, y, m_train, m_test = _problem()
    h = GPHyperparameters(1.0, 0.1)
    with pytest.raises(ValueError, match="prior_mean_test: the process was built with a prior"):
        GaussianProcess(k, y, prior_mean=m_train).predict(ks, kss, h)
    with pytest.raises(ValueError, match="prior_mean_test: the process was built without"):
        GaussianProcess(k, y).predict(ks, kss, h, prior_mean_test=m_test)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_kernel_gives_the_cpu_posterior_on_cuda():
    k, ks, kss, y, m_train, m_test = _problem()
    h = GPHyperparameters(0.7, 0.2)
    cpu = GaussianProcess(k, y, prior_mean=m_train).predict(ks, kss, h, prior_mean_test=m_test)
    gp = GaussianProcess(k.cuda(), y.cuda(), prior_mean=m_train.cuda())
    assert gp.log_marginal_likelihood(h) == pytest.approx(
        GaussianProcess(k, y, prior_mean=m_train).log_marginal_likelihood(h), rel=TOL
    )
    gpu = gp.predict(ks.cuda(), kss.cuda(), h, prior_mean_test=m_test.cuda())
    for a, b in zip(gpu, cpu, strict=True):
        # the eigendecompositions differ by rounding on the two devices
        assert a.is_cuda and torch.allclose(a.cpu(), b, rtol=TOL, atol=TOL)


def test_prediction_shapes_checked():
    gp = GaussianProcess(torch.eye(3), torch.ones(3, 2))
    h = GPHyperparameters(1.0, 1.0)
    with pytest.raises(ValueError, match="kernel_test_train: expected"):
        gp.predict(torch.ones(2, 4), torch.ones(2), h)
    with pytest.raises(ValueError, match="kernel_test_diagonal: expected"):
        gp.predict(torch.ones(2, 3), torch.ones(3), h)
