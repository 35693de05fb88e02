"""A user's activation evaluated where the numerical rules need it, refused where not finite.

The series duals (`ntkscope.kernels._series_rules`) and the order/chaos moments
(`ntkscope.kernels.order_chaos`) evaluate φ and φ' at Gaussian pre-activations u = √q z
on quadrature nodes. A callable that returns NaN or ±inf there (``torch.sqrt`` or
``torch.log`` below 0, an exponential that overflows) would make every kernel entry NaN
or infinite; it is refused instead, with a ValueError naming ``activation`` and saying
where it is not finite. The built-in activations are finite everywhere and are not
checked (no cost).

On the hot path (the Hermite coefficients, once per variance) only the second moments
E[f(√q z)²] = Σ_m w_m f(u_m)² are checked (`check_moments`): the weights are positive, so
a NaN or ±inf value makes them non-finite, and the values themselves are examined only
then. Checking every value there cost 1.25× the time of the coefficients of a cheap
callable (tanh, 320 variances, one thread); the moments, 0.99–1.00× (measured, alternating).
The rare rules at |ρ| = 1 and the 2-D rule check their values (`evaluate`).
"""

from __future__ import annotations

import torch

from ntkscope.models.activations import Activation

Pair = tuple[torch.Tensor, torch.Tensor]


def evaluate(act: Activation, u: torch.Tensor, *, derivative: bool = False) -> torch.Tensor:
    """φ(u), or φ'(u) with ``derivative``; for a user's callable, refused unless finite.

    Raises:
        ValueError: naming ``activation``, the values (nan, inf) and the pre-activations
            where they occur.
    """
    values = (act.derivative if derivative else act.fn)(u)
    if act.builtin is None and not bool(torch.isfinite(values).all()):
        function = f"the derivative of {act.name} (autograd)" if derivative else act.name
        if not bool(torch.isfinite(u).all()):
            raise ValueError(
                f"activation: {function} is evaluated at infinite pre-activations: a variance "
                "overflowed float64 in an earlier layer"
            )
        raise ValueError(f"activation: {function} returns {_where(u, values)}")
    return values


def check_moments(act: Activation, q: torch.Tensor, z: torch.Tensor, moments: torch.Tensor) -> None:
    """Refuse second moments (2, n), E[φ(√q z)²] and E[φ'(√q z)²] at the variances q (n,)
    by the nodes z, that are not finite: φ or φ' is not finite at some node u = √q z (said
    where by `evaluate`), or is but its square overflows float64."""
    if act.builtin is not None or bool(torch.isfinite(moments).all()):
        return
    bad = ~torch.isfinite(moments)
    both(act, q[bad.any(0)].sqrt()[:, None] * z)  # raises where φ or φ' is not finite
    moment = f"E[{act.name}(u)²]" if bool(bad[0].any()) else f"E[{act.name}'(u)²]"
    raise ValueError(
        f"activation: {moment} overflows float64 at the variance q = "
        f"{float(q[bad.any(0)].min()):.3g} of u (the function grows too fast)"
    )


def both(act: Activation, u: torch.Tensor) -> Pair:
    """(φ(u), φ'(u)), each by `evaluate`."""
    return evaluate(act, u), evaluate(act, u, derivative=True)


def _where(u: torch.Tensor, values: torch.Tensor) -> str:
    """What is not finite and where among the points tried (all of them, below or above a
    threshold, outside an interval, or scattered), with the offending point nearest to the
    finite ones, e.g. ``nan at pre-activations below 0 (first at -1e-07; tried: [-28, 28])``."""
    u, values = torch.broadcast_tensors(u, values)
    bad = ~torch.isfinite(values)
    kinds = " and ".join(
        name
        for name, found in (("nan", values.isnan()), ("inf", values == torch.inf),
                            ("-inf", values == -torch.inf))
        if bool(found.any())
    )  # fmt: skip
    wrong, right = u[bad], u[~bad]
    tried = f"tried: [{float(u.min()):.3g}, {float(u.max()):.3g}]"
    if not len(right):
        return f"{kinds} at every pre-activation ({tried})"
    low, high, first = float(wrong.min()), float(wrong.max()), wrong[wrong.abs().argmin()]
    if high < right.min():
        place, first = ("below 0" if high < 0 <= right.min() else f"≤ {high:.3g}"), high
    elif low > right.max():
        place, first = ("above 0" if right.max() <= 0 < low else f"≥ {low:.3g}"), low
    elif not bool(((wrong > right.min()) & (wrong < right.max())).any()):
        place = f"outside [{float(right.min()):.3g}, {float(right.max()):.3g}]"
    else:
        place = f"in [{low:.3g}, {high:.3g}] ({len(wrong)} of the {u.numel()} tried)"
    return f"{kinds} at pre-activations {place} (first at {float(first):.3g}; {tried})"
