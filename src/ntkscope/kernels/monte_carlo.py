"""`monte_carlo_kernels`: the mean eNTK and output covariance over fresh initializations.

For any architecture (including those `infinite_width` refuses): S models from a factory,
each with its own seed, give

    Θ̄ = (1/S) Σ_s Θ̂_s(x, x')     (trace mode: the mean over outputs, docs/conventions.md)
    Σ̄ = (1/S) Σ_s (1/O) f_s(x)·f_s(x')   (the NNGP estimate: E[f(x) f(x')] at init)

with standard errors std_s / √S. With ``widths``, the factory is called with ``width=n``
and the means at each width are extrapolated entrywise by weighted least squares
(weights 1/se²) to Θ̄(n) = Θ∞ + c/n, the leading finite-width correction of the NTK
(Hanin & Nica 2019; Dyer & Gur-Ari 2019): Θ∞, its standard error from the fit's
covariance, and χ²/dof of the fit (≈ 1 when c/n describes the means within their errors;
NaN with two widths) are reported.

Resumable: with ``store`` (a ``.npz`` path) every finished sample's kernels are saved as
it completes (written to a temporary file, then renamed); a rerun with the same inputs
loads them and computes only the missing ones.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ntkscope._checks import finite_batch, positive_int
from ntkscope.kernels.empirical import empirical_ntk

Factory = Callable[..., nn.Module]


@dataclass(frozen=True)
class MonteCarloKernels:
    """Means over initializations, with standard errors (float64).

    Attributes:
        ntk, ntk_se: mean eNTK (trace mode) and its standard error, (N1, N2): at the
            largest width when ``widths`` were given.
        nngp, nngp_se: mean output second moment (1/O) f(x)·f(x') and its standard error.
        samples: initializations per width.
        widths: the widths (empty without ``widths``).
        per_width: (ntk, ntk_se) at each width.
        ntk_infinite, ntk_infinite_se: Θ∞ of the fit Θ̄(n) = Θ∞ + c/n, or None.
        fit_chi2: χ²/dof of that fit (NaN with two widths), or None.
    """

    ntk: torch.Tensor
    ntk_se: torch.Tensor
    nngp: torch.Tensor
    nngp_se: torch.Tensor
    samples: int
    widths: tuple[int, ...] = ()
    per_width: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    ntk_infinite: torch.Tensor | None = None
    ntk_infinite_se: torch.Tensor | None = None
    fit_chi2: float | None = None


def _build(factory: Factory, seed: int, width: int | None) -> nn.Module:
    """``factory(seed)`` / ``factory(width=n, seed=s)``; without a seed parameter, the seed
    goes to ``torch.manual_seed`` before the call (the convention of `ntkscope.diagnose`)."""
    if not callable(factory):
        raise TypeError(f"factory: expected a callable, got {type(factory).__name__}")
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    kwargs: dict[str, int] = {} if width is None else {"width": width}
    if width is not None and "width" not in parameters:
        raise ValueError("factory: widths were given, so it must take a `width` argument")
    torch.manual_seed(seed)
    try:
        if "seed" in parameters:
            model = factory(seed=seed, **kwargs)
        elif width is None and parameters:
            model = factory(seed)
        else:
            model = factory(**kwargs)
    except Exception as error:  # the user's code failed
        raise ValueError(f"factory: raised {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise TypeError(f"factory: expected a torch.nn.Module, got {type(model).__name__}")
    return model


class _Store:
    """Finished samples in one .npz, keyed by width and seed; tied to the inputs."""

    def __init__(self, path: str | os.PathLike | None, inputs: str) -> None:
        self.path = None if path is None else Path(path)
        self.arrays: dict[str, np.ndarray] = {}
        if self.path is not None and not self.path.parent.is_dir():
            raise FileNotFoundError(f"store: no such folder {str(self.path.parent)!r}")
        if self.path is not None and self.path.exists():
            with np.load(self.path) as saved:
                self.arrays = dict(saved)
            if str(self.arrays.get("inputs")) != inputs:
                raise ValueError(f"store: {str(self.path)!r} holds samples of other inputs")
        self.arrays["inputs"] = np.array(inputs)

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        if f"{key}/ntk" not in self.arrays:
            return None
        return self.arrays[f"{key}/ntk"], self.arrays[f"{key}/nngp"]

    def put(self, key: str, ntk: np.ndarray, nngp: np.ndarray) -> None:
        self.arrays[f"{key}/ntk"], self.arrays[f"{key}/nngp"] = ntk, nngp
        if self.path is None:
            return
        temporary = self.path.with_name(self.path.name + ".part.npz")
        np.savez(temporary, **self.arrays)
        os.replace(temporary, self.path)


def _fingerprint(x1: torch.Tensor, x2: torch.Tensor | None) -> str:
    digest = hashlib.sha256(x1.numpy().tobytes())
    if x2 is not None:
        digest.update(x2.numpy().tobytes())
    return digest.hexdigest()


def _sample(model: nn.Module, x1, x2, memory_budget) -> tuple[np.ndarray, np.ndarray]:
    """(eNTK in trace mode, (1/O) f(x1) f(x2)ᵀ) of one model, float64."""
    like = next(iter(model.parameters()))
    a = x1.to(like)
    b = a if x2 is None else x2.to(like)
    ntk = empirical_ntk(model, a, None if x2 is None else b, memory_budget=memory_budget)
    with torch.no_grad():
        f1, f2 = model(a).double().flatten(1), model(b).double().flatten(1)
    return ntk.double().cpu().numpy(), (f1 @ f2.T / f1.shape[1]).cpu().numpy()


def _moments(values: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    stack = torch.as_tensor(np.stack(values))
    return stack.mean(0), stack.std(0, correction=1) / math.sqrt(len(values))


def _fit(widths: Sequence[int], means, errors) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Entrywise weighted least squares of Θ̄(n) = Θ∞ + c/n: (Θ∞, its se, χ²/dof)."""
    design = torch.tensor([[1.0, 1.0 / n] for n in widths], dtype=torch.float64)
    y = torch.stack(means)  # (W, N1, N2)
    weight = 1.0 / torch.stack(errors).clamp_min(1e-300).square()
    # normal equations per entry: (Aᵀ W A) β = Aᵀ W y
    a = torch.einsum("wi,wj,w...->...ij", design, design, weight)
    rhs = torch.einsum("wi,w...->...i", design, weight * y)
    beta = torch.linalg.solve(a, rhs.unsqueeze(-1)).squeeze(-1)
    se = torch.linalg.inv(a)[..., 0, 0].sqrt()
    residual = y - torch.einsum("wi,...i->w...", design, beta)
    dof = (len(widths) - 2) * residual[0].numel()
    chi2 = float((weight * residual.square()).sum() / dof) if dof else math.nan
    return beta[..., 0], se, chi2


def monte_carlo_kernels(
    factory: Factory,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    samples: int,
    widths: Sequence[int] | None = None,
    seed: int = 0,
    memory_budget: int | str | None = None,
    store: str | os.PathLike | None = None,
) -> MonteCarloKernels:
    """Mean eNTK and output covariance over ``samples`` fresh initializations, with errors.

    Formulas, the width extrapolation and resuming: see the module docstring.

    Args:
        factory: returns a fresh model; called as ``factory(seed)`` (or ``factory()`` after
            ``torch.manual_seed(seed)``), or ``factory(width=n, seed=s)`` with ``widths``.
        x1: inputs (N1, ...) as the model takes them.
        x2: inputs (N2, ...), or None for x2 = x1.
        samples: initializations per width (≥ 2, for the standard errors).
        widths: widths n for the extrapolation Θ̄(n) = Θ∞ + c/n (≥ 2 distinct).
        seed: seeds are seed, seed + 1, ..., seed + samples − 1.
        memory_budget: of each eNTK (`ntkscope.empirical_ntk`'s tiling).
        store: a ``.npz`` path where finished samples are saved and found on a rerun.

    Returns:
        `MonteCarloKernels`.

    Raises:
        TypeError, ValueError: naming the offending argument.
    """
    if positive_int(samples, "samples") < 2:
        raise ValueError(f"samples: expected at least 2 (for standard errors), got {samples}")
    sizes: list[int | None] = [None]
    if widths is not None:
        sizes = sorted({positive_int(n, "widths") for n in widths})
        if len(sizes) < 2:
            raise ValueError(f"widths: expected at least two distinct widths, got {widths}")
    x1 = finite_batch(x1, "x1").detach().cpu()
    x2 = None if x2 is None else finite_batch(x2, "x2").detach().cpu()
    saved = _Store(store, _fingerprint(x1, x2))
    per_width, covariances = [], []
    for width in sizes:
        kernels, outputs = [], []
        for s in range(seed, seed + samples):
            key = f"{width}/{s}"
            found = saved.get(key)
            if found is None:
                found = _sample(_build(factory, s, width), x1, x2, memory_budget)
                saved.put(key, *found)
            kernels.append(found[0])
            outputs.append(found[1])
        per_width.append(_moments(kernels))
        covariances.append(_moments(outputs))
    (ntk, ntk_se), (nngp, nngp_se) = per_width[-1], covariances[-1]
    if widths is None:
        return MonteCarloKernels(ntk, ntk_se, nngp, nngp_se, samples)
    infinite, infinite_se, chi2 = _fit(sizes, *zip(*per_width, strict=True))
    return MonteCarloKernels(
        ntk,
        ntk_se,
        nngp,
        nngp_se,
        samples,
        tuple(sizes),
        tuple(per_width),
        infinite,
        infinite_se,
        chi2,
    )
