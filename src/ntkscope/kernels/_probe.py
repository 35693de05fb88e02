"""Checks of an eNTK method on one probe example before it is trusted with the whole kernel.

For a random output direction v, ``vᵀ Θ̂(x₀, x₀) v = ‖∇_θ (v · f(x₀))‖²``: one plain
autograd backward pass gives the right-hand side, whatever the model, so a method whose
value on x₀ differs (a rule that does not fit the layer, a vmap or forward-mode rule that
is wrong) is caught at the cost of one example.
"""

from __future__ import annotations

import math

import torch

from ntkscope import _batch
from ntkscope._batch import Batch
from ntkscope.kernels._functional import FunctionalModel

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-3}
"""Relative tolerance of the probe by dtype: a few thousand roundings of the dtype's
epsilon (sums over parameters in a different order); 1e-2 for half precision."""


def probe_direction(fm: FunctionalModel, n_out: int) -> torch.Tensor:
    """The fixed random direction v (seed 0), in the model's dtype and device."""
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(n_out, generator=generator, dtype=torch.float64)
    return v.to(dtype=fm.dtype, device=fm.device)


def autograd_quadratic(fm: FunctionalModel, x: Batch, v: torch.Tensor) -> float:
    """``‖∇_θ (v · f(x₀))‖²`` for the first example x₀ of ``x``, by one backward pass."""
    theta = {name: t.clone().requires_grad_(True) for name, t in fm.theta.items()}
    with torch.enable_grad():
        value = fm(theta, _batch.take(x, slice(0, 1)))[0] @ v
        grads = torch.autograd.grad(value, list(theta.values()), allow_unused=True)
    return sum(float((g * g).sum()) for g in grads if g is not None)


def disagreement(fm: FunctionalModel, theta00: torch.Tensor, x: Batch) -> str | None:
    """None if Θ̂(x₀, x₀) (O, O) agrees with autograd on x₀; otherwise the two values."""
    v = probe_direction(fm, theta00.shape[0])
    value = float(v @ theta00 @ v)
    reference = autograd_quadratic(fm, x, v)
    tolerance = TOLERANCE.get(fm.dtype, 1e-2)
    if not math.isfinite(reference):  # the gradients themselves: reported on the kernel
        return None
    if abs(value - reference) <= tolerance * max(abs(reference), 1e-30):
        return None
    return f"{value:.6g} vs {reference:.6g} from autograd on a probe example"


def check_independent(fm: FunctionalModel, x: Batch, argument: str) -> None:
    """Refuse a model whose output for an example depends on the rest of the batch.

    Compares f(x)[:1] with f(x[:1]) on up to 3 examples; they differ when the model couples
    the examples (``x - x.mean(0)``, batch statistics) or is random (dropout in training
    mode), and then no per-example eNTK exists. Tolerance: `TOLERANCE` of the dtype,
    relative to the largest output of the n examples (batched and single GEMMs round
    differently; one example's output alone may be near zero).

    Raises:
        ValueError: naming ``model``.
    """
    n = min(_batch.size(x), 3)
    if n < 2:
        return
    with torch.no_grad():
        batched = fm(fm.theta, _batch.take(x, slice(0, n)))
        together = batched[:1]
        alone = fm(fm.theta, _batch.take(x, slice(0, 1)))
    scale = float(batched.abs().max())  # of all n examples: one output may be near 0
    gap = float((together - alone).abs().max())
    if gap > TOLERANCE.get(fm.dtype, 1e-2) * max(scale, 1e-30):
        raise ValueError(
            f"model: its output for the first example of {argument} changes by {gap:.3g} when "
            f"evaluated with {n - 1} more examples: the model couples the examples of a batch "
            "(e.g. x - x.mean(0), batch statistics) or is random (dropout in training mode), "
            "so it has no per-example eNTK; call model.eval() or remove the coupling"
        )
