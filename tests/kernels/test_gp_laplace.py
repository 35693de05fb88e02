"""Cross-check with laplace-torch's functional (GP) Laplace, when it is installed."""

import numpy as np
import pytest
import torch

from ntkscope.kernels import GaussianProcess, GPHyperparameters, empirical_ntk

laplace = pytest.importorskip("laplace")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_latent_variance_equals_functional_laplace():
    """Linearized Laplace with prior N(0, s I) and noise σ² on a scalar-output network is the
    GP with kernel s·J Jᵀ (Immer et al. 2021), so the two variances agree to float64
    rounding (1e-10 on 10 training points)."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    ).double()
    x, xs = (torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (10, 5))
    y = torch.randn(10, 1, generator=g, dtype=torch.float64)
    s, noise = 0.5, 0.2
    la = laplace.FunctionalLaplace(
        model, "regression", n_subset=10, sigma_noise=noise**0.5, prior_precision=1 / s,
        backend=laplace.curvature.CurvlinopsGGN,
    )  # fmt: skip
    la.fit(DataLoader(TensorDataset(x, y), batch_size=10))
    _, variance = la(xs, pred_type="gp")
    with torch.no_grad():
        f, fs = model(x), model(xs)
    gp = GaussianProcess(empirical_ntk(model, x), y, prior_mean=f)
    ours = gp.predict(
        empirical_ntk(model, xs, x), empirical_ntk(model, xs, diagonal=True),
        GPHyperparameters(s, noise), prior_mean_test=fs,
    )  # fmt: skip
    np.testing.assert_allclose(
        ours.latent_variance.numpy(), variance.flatten().numpy(), rtol=1e-10, atol=1e-12
    )
