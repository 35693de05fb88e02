"""Function-space Gauss–Newton (natural-gradient) steps through the empirical NTK.

For the MSE loss ``½‖f(X) − Y‖² / N`` with residuals r = f(X) − Y flattened over (example,
output) pairs and J = ∂f(X)/∂θ (N·O × P), the damped Gauss–Newton step is

    Δθ = −η Jᵀ (J Jᵀ + λ I)⁻¹ r,

the Levenberg–Marquardt step ``−η (JᵀJ/N + (λ/N) I)⁻¹ ∇L`` of the mean loss written in
function space (Woodbury), and the natural-gradient step for a Gaussian likelihood
(Martens 2020, "New insights and perspectives on the natural gradient method"). J Jᵀ is
the full eNTK Gram matrix Θ̂(X, X) reshaped to (N·O, N·O), so no Jacobian is formed: the
system is solved by a float64 Cholesky factorization, and Jᵀ v is one vector-Jacobian
product (one backward pass). This is the second-order method that Wenger, Dangel &
Kristiadi (2023), "On the disconnect between theory and practice of neural networks:
limits of the NTK perspective", compare with gradient descent.

Kernel regime: with J fixed (the linearized network), f_{t+1} − f_t = J Δθ, so

    r_{t+1} = (I − η Θ (Θ + λ I)⁻¹) r_t,

which multiplies the component of r along an eigenvector of Θ with eigenvalue μ by
(λ + (1 − η) μ) / (μ + λ) per step (λ / (μ + λ) for η = 1): every direction with μ ≫ λ is
fitted in one step, whatever the conditioning of Θ. `predict_gauss_newton` evaluates it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.func import vjp

from ntkscope._batch import Batch
from ntkscope._checks import finite, positive_real, tensor
from ntkscope.kernels import empirical_ntk
from ntkscope.kernels._functional import FunctionalModel
from ntkscope.metrics import flat_kernel


class GaussNewtonStep(NamedTuple):
    """One Gauss–Newton step.

    Attributes:
        delta: Δθ per trainable parameter name, in the parameters' dtype.
        kernel: J Jᵀ = Θ̂(X, X) as (N·O, N·O), float64, at the parameters of the step.
        residual: r = f(X) − Y, (N, O), float64, before the step.
    """

    delta: dict[str, torch.Tensor]
    kernel: torch.Tensor
    residual: torch.Tensor


def gauss_newton_step(
    model: nn.Module, x: Batch, y: torch.Tensor, *, damping: float, lr: float = 1.0
) -> GaussNewtonStep:
    """The damped Gauss–Newton step Δθ = −η Jᵀ (J Jᵀ + λ I)⁻¹ r (module docstring).

    Args:
        model: any module mapping (N, ...) inputs to (N, O) outputs; θ are its trainable
            parameters. It is not changed.
        x: the full training batch of N examples, in the model's dtype and device: a
            tensor (N, ...), a tuple or a mapping of tensors (`ntkscope.empirical_ntk`; token
            ids included).
        y: targets (N, O) (or (N,) for O = 1).
        damping: λ > 0, in the units of the kernel Θ̂ (λ/N on the mean loss).
        lr: step size η > 0; η = 1 is the full Gauss–Newton step.

    Returns:
        `GaussNewtonStep` (Δθ, the kernel J Jᵀ and the residual r).

    Raises:
        ValueError: for damping or lr ≤ 0, inputs the model cannot take, targets of another
            shape than the outputs, or a damping too small to factorize J Jᵀ + λ I.
    """
    damping, lr = positive_real(damping, "damping"), positive_real(lr, "lr")
    fm = FunctionalModel(model)
    x = fm.batch(x, "x")
    fm.check_inputs(x, "x")
    outputs, pullback = vjp(lambda theta: fm(theta, x), fm.theta)
    y = finite(tensor(y, "y"), "y").to(outputs)
    allowed = [tuple(outputs.shape)] + ([(len(outputs),)] if outputs.shape[1:] == (1,) else [])
    if tuple(y.shape) not in allowed:
        expected = " or ".join(map(str, allowed))
        raise ValueError(f"y: expected shape {expected} like the outputs, got {tuple(y.shape)}")
    residual = (outputs.detach() - y.reshape(outputs.shape)).double()
    kernel = flat_kernel(empirical_ntk(model, x, mode="full").double())
    shifted = (kernel + kernel.T) / 2 + damping * torch.eye(len(kernel), dtype=torch.float64)
    factor, info = torch.linalg.cholesky_ex(shifted)
    if info != 0:
        smallest = float(torch.linalg.eigvalsh(shifted)[0] - damping)
        raise ValueError(
            f"damping: {damping:g} is too small for this kernel (smallest eigenvalue "
            f"{smallest:.3g}, rounding of a rank-deficient J Jᵀ): J Jᵀ + λ I is not positive "
            "definite; use a damping well above the size of that eigenvalue"
        )
    v = torch.cholesky_solve(residual.reshape(-1, 1), factor).reshape(outputs.shape)
    (pulled,) = pullback(v.to(outputs.dtype))
    delta = {name: -lr * g for name, g in pulled.items()}
    return GaussNewtonStep(delta, kernel, residual)


class GaussNewton(torch.optim.Optimizer):
    """`gauss_newton_step` as a torch optimizer over ``model``'s trainable parameters.

    Full batch, MSE: every ``step()`` computes the step on the fixed (x, y) given here
    and adds it to the parameters; gradients in ``.grad`` are not used.

    Args:
        model: the network to train.
        x, y: the whole training set, as in `gauss_newton_step`.
        damping: λ > 0.
        lr: step size η > 0.

    Attributes:
        last: the latest `GaussNewtonStep` (its kernel and residual are those before it).
    """

    def __init__(
        self, model: nn.Module, x: Batch, y: torch.Tensor, *, damping: float, lr: float
    ) -> None:
        defaults = {"damping": positive_real(damping, "damping"), "lr": positive_real(lr, "lr")}
        self.model, self.x, self.y = model, x, y
        self.last: GaussNewtonStep | None = None
        super().__init__([p for p in model.parameters() if p.requires_grad], defaults)

    @torch.no_grad()
    def step(self, closure=None):
        group = self.param_groups[0]
        with torch.enable_grad():
            self.last = gauss_newton_step(
                self.model, self.x, self.y, damping=group["damping"], lr=group["lr"]
            )
        parameters = dict(self.model.named_parameters())
        for name, delta in self.last.delta.items():
            parameters[name].add_(delta)
        return None


def predict_gauss_newton(
    kernel: torch.Tensor,
    residual: torch.Tensor,
    steps: int | Sequence[int],
    *,
    damping: float,
    lr: float = 1.0,
) -> torch.Tensor:
    """Residuals of Gauss–Newton steps with a fixed kernel: (I − η Θ (Θ + λ I)⁻¹)^t r_0.

    Exact for the linearized network (and a linear model); NTK theory's prediction for a
    wide one.

    Args:
        kernel: Θ(X, X), full (N, N, O, O) or already flat (N·O, N·O).
        residual: r_0 = f_0(X) − Y, (N, O).
        steps: one step count t or several.
        damping: λ > 0.
        lr: step size η > 0.

    Returns:
        Residuals (T, N, O), float64.
    """
    damping, lr = positive_real(damping, "damping"), positive_real(lr, "lr")
    k = finite(tensor(kernel, "kernel"), "kernel").double()
    k = flat_kernel(k) if k.dim() == 4 else k
    r = finite(tensor(residual, "residual"), "residual").double()
    if k.dim() != 2 or k.shape != (r.numel(), r.numel()):
        raise ValueError(
            f"kernel: expected (N·O, N·O) = ({r.numel()}, {r.numel()}) or (N, N, O, O) for "
            f"residuals of shape {tuple(r.shape)}, got {tuple(kernel.shape)}"
        )
    times = torch.as_tensor(steps, dtype=torch.float64).reshape(-1)
    if (times < 0).any():
        raise ValueError(f"steps: expected step counts >= 0, got {steps!r}")
    eigenvalues, vectors = torch.linalg.eigh((k + k.T) / 2)
    eigenvalues = eigenvalues.clamp_min(0.0)
    factor = (damping + (1 - lr) * eigenvalues) / (eigenvalues + damping)
    coefficients = vectors.T @ r.reshape(-1)
    out = vectors @ (factor[None, :] ** times[:, None] * coefficients[None, :]).T
    return out.T.reshape(len(times), *r.shape)
