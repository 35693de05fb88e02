"""How far the Jacobian moves in training: the "stable Jacobian" condition of NTK theory.

NTK theory needs the Jacobian J = ∂f(X)/∂θ (N·O × P) to stay close to J_0 during
training (Liu, Zhu & Belkin 2020, "On the linearity of large non-linear models"; Lee et
al. 2019); in NTK parameterization ‖J_t − J_0‖_F / ‖J_0‖_F is O(1/√width). The eNTK
J Jᵀ alone cannot give it (it is invariant to rotations of J), but a cross-parameter
kernel can:

    ‖J_t − J_0‖²_F = tr(J_t J_tᵀ) + tr(J_0 J_0ᵀ) − 2 tr(J_t J_0ᵀ),

where tr(J_t J_0ᵀ) = Σ_{n,o} ⟨∂f_o(x_n; θ_t)/∂θ, ∂f_o(x_n; θ_0)/∂θ⟩. `jacobian_change`
computes the three traces with the eNTK's own per-example features, evaluated at θ_t
and at θ_0 and paired across the two: per-layer activations and output gradients for
networks of dense and convolutional layers (the structured method, about the cost of the
eNTK's diagonal), per-example Jacobians otherwise. Everything is accumulated in float64;
the subtraction loses about log10(1/change²) digits, so with float32 parameters
changes below ~1e-3 are not resolved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ntkscope._checks import finite_batch, memory_bytes, positive_int
from ntkscope.dynamics.state import Recorder, TrainState
from ntkscope.kernels import Method
from ntkscope.kernels._functional import FunctionalModel
from ntkscope.kernels._generic import JacobianStrategy
from ntkscope.kernels._structured import StructuredStrategy
from ntkscope.kernels.empirical import _strategy

DEFAULT_BUDGET = 2**28
"""Default working memory of `jacobian_change` in bytes (256 MiB)."""


def _strategies(model: nn.Module, x: torch.Tensor, reference: Mapping[str, torch.Tensor]):
    """Trace-mode eNTK strategies at θ and at θ_0 whose ``pair`` of one's features with the
    other's is J(θ) J(θ_0)ᵀ: structured where it applies, per-example Jacobians otherwise
    (NTK-vector products take inputs as features, so cannot pair two parameter sets)."""
    now = FunctionalModel(model)
    if not isinstance(reference, Mapping):
        raise TypeError(
            f"reference: expected a mapping name -> tensor, got {type(reference).__name__}"
        )
    if set(reference) != set(now.theta):
        raise ValueError("reference: expected a value for every trainable parameter")
    for name, value in reference.items():
        if not isinstance(value, torch.Tensor) or value.shape != now.theta[name].shape:
            raise ValueError(
                f"reference: {name!r} must be a tensor of shape {tuple(now.theta[name].shape)}"
            )
    before = FunctionalModel(model, reference)
    n_out = now.check_inputs(x, "x")
    n = len(x)
    # features at θ are paired with features at θ_0: no shortcut that assumes one θ
    method, strategy = _strategy(Method.AUTO, now, x, n, n, n_out, False, DEFAULT_BUDGET, False)
    if method is Method.NTVP:  # its features are the inputs: per-example Jacobians instead
        strategy = JacobianStrategy(now, n_out, False)
    if isinstance(strategy, StructuredStrategy):  # the same plan: features that pair
        return strategy, strategy.twin(before)
    return strategy, type(strategy)(before, n_out, False)


def jacobian_change(
    model: nn.Module,
    x: torch.Tensor,
    reference: Mapping[str, torch.Tensor],
    *,
    memory_budget: int | str = DEFAULT_BUDGET,
) -> float:
    """``‖J(θ) − J(θ_0)‖_F / ‖J(θ_0)‖_F`` on inputs ``x``, θ the model's parameters.

    Args:
        model: the network (not changed).
        x: inputs (N, ...) in the model's dtype and device.
        reference: θ_0, the values of the trainable parameters by name (all of them).
        memory_budget: bytes (or a string such as "512MB") for the features of a block of
            examples; at least one example is processed at a time.

    Returns:
        The relative change, a float (module docstring for its precision).

    Raises:
        ValueError: for a ``reference`` without exactly the trainable parameters and their
            shapes, or whose Jacobian J(θ_0) on ``x`` is zero.
    """
    x = finite_batch(x, "x").detach()
    now, before = _strategies(model, x, reference)
    per_example = max(now.feature_bytes, 1)
    block = max(1, memory_bytes(memory_budget, "memory_budget") // (4 * per_example))
    traces = torch.zeros(3, dtype=torch.float64)  # tr J_t J_tᵀ, tr J_0 J_0ᵀ, tr J_t J_0ᵀ
    with torch.enable_grad():
        for chunk in x.split(block):
            f_now, f_before = now.features(chunk), before.features(chunk)
            traces += torch.stack([
                now.diagonal(f_now).double().sum(),
                before.diagonal(f_before).double().sum(),
                now.pair(f_now, f_before).double().diagonal().sum(),
            ])  # fmt: skip
    if traces[1] == 0:
        raise ValueError(
            "reference: the Jacobian at the reference parameters is zero on these inputs, so "
            "its relative change is undefined"
        )
    change = float(traces[0] + traces[1] - 2 * traces[2])
    return math.sqrt(max(change, 0.0) / float(traces[1]))


class JacobianRecorder(Recorder):
    """``jacobian_change`` ‖J_t − J_0‖_F / ‖J_0‖_F on a probe set (see `jacobian_change`).

    Args:
        probe_x: probe inputs; None: the first ``probe_size`` training inputs.
        every: steps between records (each costs about two eNTK diagonals of the probe).
        probe_size: probe size when ``probe_x`` is None.
        memory_budget: passed to `jacobian_change`.
    """

    def __init__(
        self,
        probe_x: torch.Tensor | None = None,
        every: int = 50,
        *,
        probe_size: int = 256,
        memory_budget: int | str = DEFAULT_BUDGET,
    ) -> None:
        self.probe_x = None if probe_x is None else finite_batch(probe_x, "probe_x")
        self.every, self.probe_size = (
            positive_int(every, "every"),
            positive_int(probe_size, "probe_size"),
        )
        self.memory_budget = memory_budget
        self.initial: dict[str, torch.Tensor] = {}

    def start(self, state: TrainState) -> dict[str, float]:
        x = state.train.x[: self.probe_size] if self.probe_x is None else self.probe_x
        self.probe_x = x.to(state.train.x)
        self.initial = {
            n: p.detach().clone() for n, p in state.model.named_parameters() if p.requires_grad
        }
        return {"jacobian_change": 0.0}

    def record(self, state: TrainState) -> dict[str, float]:
        value = jacobian_change(
            state.model, self.probe_x, self.initial, memory_budget=self.memory_budget
        )
        return {"jacobian_change": value}
