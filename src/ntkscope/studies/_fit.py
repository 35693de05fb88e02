"""Full-batch gradient descent on MSE with a stopping rule that does not depend on width.

The loss is ``L = ½ Σ_i ‖f(x_i) − y_i‖² / N`` (or, given ``arms``, ``½ Σ_i (f_{a_i}(x_i) −
y_i)² / N``, one chosen output per example). The learning rate is ``η = c · N / λ_max(Θ̂_0)``,
Θ̂_0 the trace eNTK of the network on the training inputs before this fit, as
`ntkscope.diagnose` sets it (c = 1 is half the stability limit 2N/λ_max of gradient descent
on the linearized network). Training stops at the first step whose loss is at most
``tolerance`` times the initial loss, or after ``max_steps`` steps. Under this rule every
eigendirection of Θ̂_0 converges at rate c·λ_i/λ_max per step whatever the width, so wide
networks are trained as far as narrow ones (a fixed step count under-trains whichever
network's kernel is worse conditioned).

The parameters are trained in their own dtype (the studies train float32 copies on CPU,
about three times faster than float64, and evaluate in float64).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from ntkscope.studies._training import relative_learning_rate


@dataclass(frozen=True)
class FitRule:
    """Learning-rate scale c, relative loss tolerance and step cap (module docstring)."""

    lr_scale: float
    tolerance: float
    max_steps: int

    def learning_rate(self, kernel: torch.Tensor) -> float:
        """c · N / λ_max(K) for the (N, N) trace eNTK K on the training inputs."""
        return relative_learning_rate(kernel, self.lr_scale)


@dataclass(frozen=True)
class Fit:
    """Steps taken and the final loss relative to the initial one."""

    steps: int
    relative_loss: float


def fit(
    model: torch.nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    kernel: torch.Tensor,
    rule: FitRule,
    arms: torch.Tensor | None = None,
) -> Fit:
    """Train ``model`` in place by the rule of the module docstring.

    Args:
        model: network mapping (N, d) to (N, O).
        x: inputs (N, d); targets: (N, O), or (N,) with ``arms``.
        kernel: Θ̂_0(X, X), (N, N), the network's trace eNTK on ``x`` now.
        rule: the `FitRule`.
        arms: optional int64 (N,) output of each example that the loss sees.
    """
    like = next(model.parameters())
    x, targets = x.to(like), targets.to(like)
    optimizer = torch.optim.SGD(model.parameters(), lr=rule.learning_rate(kernel))
    for step in itertools.count():
        optimizer.zero_grad(set_to_none=True)
        outputs = model(x) if arms is None else model(x).gather(1, arms[:, None])[:, 0]
        loss = 0.5 * (outputs - targets).pow(2).sum() / len(x)
        if step == 0:
            initial = max(loss.item(), 1e-30)
        if loss.item() <= rule.tolerance * initial or step == rule.max_steps:
            return Fit(step, loss.item() / initial)
        loss.backward()
        optimizer.step()
