"""Checks of an eNTK method on probe examples before it is trusted with the whole kernel.

For a random output direction v, ``vᵀ Θ̂(x_i, x_j) v = ∇_θ (v · f(x_i)) · ∇_θ (v · f(x_j))``:
one plain autograd backward pass per example gives the right-hand side, whatever the
model, so a method whose values on the probe examples differ (a rule that does not fit the
layer, a vmap or forward-mode rule that is wrong, a model that reorders the examples of
its batch inside) is caught at the cost of one or two examples.
"""

from __future__ import annotations

import torch

from ntkscope import _batch
from ntkscope._batch import Batch
from ntkscope.kernels._functional import FunctionalModel

TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-3}
"""Relative tolerance of the probe by dtype: a few thousand roundings of float32's epsilon
(sums over parameters in a different order); 1e-2 for half precision. float64 models get
1e-6, not float64's own ~1e-12: their layers may compute in float32 inside (Llama's and
T5's norms cast to float32), where the two orders differ by ~1e-8 (measured: 2–5e-9),
while what the probe is for (a term missing, examples mixed up) changes the value by
orders of magnitude more."""


HALF = (torch.float16, torch.bfloat16)
"""The half-precision dtypes, whose range (float16: 65,504) a kernel's entries can exceed
while the model's outputs and gradients are finite."""


def beyond_range(dtype: torch.dtype, where: str = "") -> str:
    """The end of a message for a kernel whose entries exceed ``dtype``'s range (``where``
    said after the range)."""
    return (
        f"exceed the range of {dtype} (max {torch.finfo(dtype).max:.6g}){where}; compute it "
        "in float32 (model.float() and float32 inputs)"
    )


def probe_direction(fm: FunctionalModel, n_out: int) -> torch.Tensor:
    """The fixed random direction v (seed 0), in the model's dtype and device."""
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(n_out, generator=generator, dtype=torch.float64)
    return v.to(dtype=fm.dtype, device=fm.device)


def autograd_gram(fm: FunctionalModel, x: Batch, v: torch.Tensor, count: int) -> torch.Tensor:
    """``∇_θ (v · f(x_i)) · ∇_θ (v · f(x_j))`` for the first ``count`` examples of ``x``, by
    one backward pass each (``count`` examples' gradients held): (count, count) float64."""
    theta = {name: t.clone().requires_grad_(True) for name, t in fm.theta.items()}
    grads, gram = [], torch.zeros(count, count, dtype=torch.float64)
    for i in range(count):
        with torch.enable_grad():
            value = fm(theta, _batch.take(x, slice(i, i + 1)))[0] @ v
            grads.append(torch.autograd.grad(value, list(theta.values()), allow_unused=True))
        for j in range(i + 1):
            pairs = zip(grads[i], grads[j], strict=True)
            dot = sum(float((a * b).sum()) for a, b in pairs if a is not None and b is not None)
            gram[i, j] = gram[j, i] = dot
    return gram


def gram_disagreement(
    fm: FunctionalModel, values: torch.Tensor, reference: torch.Tensor
) -> str | None:
    """None if the method's ``vᵀ Θ̂(x_i, x_j) v`` (``values``) agree with autograd's
    (``reference``, `autograd_gram`) to `TOLERANCE` of the largest; otherwise the worst pair,
    or, in float16 or bfloat16, that the method's values overflowed the dtype."""
    reference = reference.to(torch.float64)
    if not bool(torch.isfinite(reference).all()):  # the gradients themselves: on the kernel
        return None
    scale = max(float(reference.abs().max()), 1e-30)
    if fm.dtype in HALF and not bool(torch.isfinite(values).all()):
        where = f" on the probe examples, where autograd's reach {scale:.6g}"
        return "its entries " + beyond_range(fm.dtype, where)
    gaps = (values.to(torch.float64).cpu() - reference).abs()
    worst = divmod(int(gaps.argmax()), gaps.shape[1])
    if float(gaps[worst]) <= TOLERANCE.get(fm.dtype, 1e-2) * scale:
        return None
    pair = "a probe example" if values.numel() == 1 else f"probe examples {worst}"
    return (
        f"{float(values[worst]):.6g} vs {float(reference[worst]):.6g} from autograd on {pair}, "
        f"a relative gap of {float(gaps[worst]) / scale:.2g} (tolerance "
        f"{TOLERANCE.get(fm.dtype, 1e-2):g})"
    )


def disagreement(fm: FunctionalModel, theta00: torch.Tensor, x: Batch) -> str | None:
    """None if Θ̂(x₀, x₀) (O, O) agrees with autograd on x₀ (`gram_disagreement`)."""
    v = probe_direction(fm, theta00.shape[0])
    value = (v @ theta00 @ v).reshape(1, 1)
    return gram_disagreement(fm, value, autograd_gram(fm, x, v, 1))


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
