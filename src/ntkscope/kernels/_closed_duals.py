"""Closed-form duals: E[φ(u) φ(v)] and E[φ'(u) φ'(v)] where the literature has them.

(u, v) ~ N(0, [[q1, c], [c, q2]]), ρ = c / √(q1 q2) ∈ [−1, 1], θ = arccos ρ. Each function
takes float64 tensors (q1, q2, ρ), already broadcastable, and returns the pair. Accuracy: a
few ulps of the formulas (≤ 1e-12 relative to the Cauchy–Schwarz scale √(E[φ(u)²] E[φ(v)²]),
tested against adaptive quadrature in tests/kernels/test_dual.py).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

Pair = tuple[torch.Tensor, torch.Tensor]

THETA_SNAP = 2e-7
"""θ = arccos ρ below this counts as 0 in the piecewise-linear E[φ'(u) φ'(v)], and above
π − this as π (ρ = −1: inputs of opposite sign, e.g. one-pixel images).

arccos has infinite slope at ρ = 1: the few-ulp rounding that c accumulates over layers
puts duplicate inputs at θ up to 6e-8 (measured, depth 10) instead of 0, which moves the
NTK entry by ~1e-8 relative and leaves the NTK of duplicate inputs indefinite at that
level. Snapping makes such entries exact; for genuine θ < 2e-7 it changes the expectation
by at most θ/(2π) < 3.2e-8 (relative to its value 1/2 for ReLU: 6.4e-8). The same holds at
ρ = −1 by symmetry: unsnapped, five scalar inputs of both signs gave a ReLU NTK with a
relative eigenvalue of −5.4e-10 (found by hypothesis)."""


def piecewise_linear(slope: float, q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
    """φ(x) = x for x > 0, ``slope``·x below: ReLU (0), leaky ReLU, |x| (−1), identity (1).

    With φ = r(x) − a·r(−x), r = ReLU, the arc-cosine kernels of degree 1 and 0 (Cho & Saul
    2009, "Kernel Methods for Deep Learning") and E[r(u) r(−v)] = √(q1 q2)(sin θ − θ cos θ)/2π
    give (Tsuchida, Roosta & Gallagher 2018, "Invariance of Weight Distributions in Rectified
    MLPs"):

        E[φ(u) φ(v)]   = √(q1 q2)/(2π) · ((1 + a²)(sin θ + (π − θ) cos θ) − 2a (sin θ − θ cos θ))
        E[φ'(u) φ'(v)] = ((1 + a²)(π − θ) + 2a θ) / (2π),   θ < `THETA_SNAP` taken as 0.
    """
    theta = torch.acos(rho)
    sin_theta = ((1 - rho) * (1 + rho)).sqrt_()  # 1 − ρ² lost ~1e-13 relative at θ ~ 1e-4
    scale = q1.sqrt() / (2 * math.pi) * q2.sqrt()  # outer product when q1, q2 are vectors
    a2 = 1 + slope * slope
    e_ff = torch.addcmul(sin_theta, math.pi - theta, rho).mul_(a2)
    if slope:
        e_ff.sub_(torch.addcmul(sin_theta, theta, rho, value=-1.0).mul_(2 * slope))
    theta.masked_fill_(theta < THETA_SNAP, 0.0)
    theta.masked_fill_(theta > math.pi - THETA_SNAP, math.pi)
    e_dd = theta.mul_((2 * slope - a2) / (2 * math.pi)).add_(a2 / 2)
    return e_ff.mul_(scale), e_dd


_SNAP_LOW = math.nextafter(THETA_SNAP, 0.0)
"""θ ≤ this ⇔ θ < `THETA_SNAP` (``F.threshold_`` replaces the values ≤ its threshold)."""
_SNAP_HIGH = -math.nextafter(math.pi - THETA_SNAP, math.inf)
"""−θ ≤ this ⇔ θ > π − `THETA_SNAP`."""
_TWO = torch.tensor(2.0, dtype=torch.float64)  # a 0-d tensor: torch.sub takes it as a scalar


def piecewise_linear_layer(
    slope: float,
    nngp: torch.Tensor,
    ntk: torch.Tensor,
    rows: tuple[torch.Tensor, torch.Tensor],
    cols: tuple[torch.Tensor, torch.Tensor],
    weight_var: float,
    bias_var: float,
    out: torch.Tensor,
    theta: torch.Tensor,
) -> None:
    """One layer of the MLP recursion for `piecewise_linear`'s φ, in place on a tile:

        Σ^{l+1} = σ_w² E[φ(u) φ(v)] + σ_b²,   Θ^{l+1} = Σ^{l+1} + σ_w² E[φ'(u) φ'(v)] Θ^l,

    with E[φ(u) φ(v)] = √(q1 q2)/(2π) · ((1 − a)² (sin θ − θ ρ) + (1 + a²) π ρ), the
    `piecewise_linear` formula with its terms gathered (a = ``slope``), and E[φ'(u) φ'(v)]
    = (1 + a²)/2 − (1 − a)² θ/(2π), θ snapped as there (`THETA_SNAP`, on θ itself:
    ``F.threshold_`` at the neighbouring doubles keeps the strict comparisons exactly).
    Four arrays of the tile's shape, no others: Σ^l (``nngp``, which takes ρ and is then
    free), Θ^l (``ntk``, overwritten by Θ^{l+1}), ``out`` (receives Σ^{l+1}) and ``theta``
    (scratch). The values are those of `piecewise_linear` to a few ulps of √(q1 q2) (the
    order of the operations differs; tests/kernels/test_dual.py).

    Args:
        rows, cols: (1/√q, √(σ_w²/2π) √q) of the rows' and the columns' variances Σ^l(x, x),
            shaped to broadcast against the tile ((n1, 1) and (1, n2)), 1/√q = 0 where q = 0.
    """
    a2, b = 1 + slope * slope, (1 - slope) ** 2
    rho = nngp.mul_(rows[0]).mul_(cols[0]).clamp_(-1.0, 1.0)
    torch.acos(rho, out=theta)
    e_ff = torch.sub(_TWO, torch.abs(rho, out=out), alpha=2, out=out)  # u = 2(1 − |ρ|)
    e_ff.addcmul_(e_ff, e_ff, value=-0.25).sqrt_()  # sin θ = √(u − u²/4), no cancellation
    e_ff.addcmul_(theta, rho, value=-1.0)
    if b != 1:
        e_ff.mul_(b)
    e_ff.add_(rho, alpha=a2 * math.pi).mul_(rows[1]).mul_(cols[1])
    if bias_var:
        e_ff.add_(bias_var)
    F.threshold_(theta, _SNAP_LOW, 0.0)
    F.threshold_(theta.neg_(), _SNAP_HIGH, -math.pi)  # −θ, snapped
    e_dd = theta.mul_(weight_var * b / (2 * math.pi)).add_(weight_var * a2 / 2)
    ntk.mul_(e_dd).add_(e_ff)


def piecewise_linear_block(
    slope: float,
    sigma: torch.Tensor,
    ntk: torch.Tensor | None,
    rows: tuple[torch.Tensor, torch.Tensor],
    cols: tuple[torch.Tensor, torch.Tensor],
    scale: float,
    theta: torch.Tensor,
) -> Pair:
    """A CNN block's activation for `piecewise_linear`'s φ in place, with one array more:
    (s K, s (K + T)), K = E[φ(u) φ(v)], T = Θ E[φ'(u) φ'(v)], s = ``scale``. With
    g = (1 + a²)π − (1 − a)² θ (a = ``slope``) both expectations share a factor,

        E[φ(u) φ(v)] = √(q1 q2)/(2π) · ((1 − a)² sin θ + ρ g),   E[φ'(u) φ'(v)] = g / (2π),

    θ snapped as in `piecewise_linear_layer` (`THETA_SNAP`) in both: with ρ = cos θ kept,
    the snap moves E[φ(u) φ(v)] by √(q1 q2)/(2π) (1 − a)² θ³/3 < 1e-21 √(q1 q2) (at θ = 0;
    likewise at π), since ∂/∂θ (sin θ − θ cos θ) = θ sin θ. The arrays: Σ (``sigma``, which
    takes ρ, then K), Θ (``ntk``, then K + T) and ``theta`` (scratch); ``ntk`` None: Θ = Σ
    (a CNN's first block, Θ⁰ = 0), then s T = √(s/2π)√q1 √(s/2π)√q2 · ρ g and the results
    are (``theta``, ``sigma``): two arrays in all. Values: those of `piecewise_linear` to a
    few ulps of √(q1 q2) + Θ (tests/kernels/test_infinite_cnn_in_place.py).

    Args:
        rows, cols: (1/√q, √(s/2π) √q) of the rows' and the columns' variances, shaped to
            broadcast against the entries, 1/√q = 0 where q = 0 (`_cnn_layers.Side`).
    """
    g0, b = (1 + slope * slope) * math.pi, (1 - slope) ** 2
    rho = sigma.mul_(rows[0]).mul_(cols[0]).clamp_(-1.0, 1.0)
    torch.acos(rho, out=theta)
    F.threshold_(theta, _SNAP_LOW, 0.0)
    minus = F.threshold_(theta.neg_(), _SNAP_HIGH, -math.pi)  # −θ, snapped
    if ntk is not None:
        ntk.addcmul_(ntk, minus, value=b / g0)  # Θ g / g0
    rho.addcmul_(rho, minus, value=b / g0)  # ρ g / g0
    minus.sin_()  # −sin θ
    root = rows[1] * g0  # a side's terms: small
    if ntk is None:
        e_ff = torch.add(rho, minus, alpha=-b / g0, out=minus)  # K / (r g0), r = √(s/2π)²√q1q2
        both = rho.add_(e_ff).mul_(root).mul_(cols[1])  # (K + T) / r g0, then s (K + T)
        return e_ff.mul_(root).mul_(cols[1]), both
    e_ff = rho.sub_(minus, alpha=b / g0).mul_(root).mul_(cols[1])
    return e_ff, torch.add(e_ff, ntk, alpha=g0 * scale / (2 * math.pi), out=ntk)


def identity(q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
    """φ(x) = x: E[u v] = c and E[1] = 1."""
    c = rho * (q1 * q2).sqrt()
    return c, torch.ones_like(c)


def erf(q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
    """φ = erf (Williams 1997, "Computing with infinite networks"):

    (2/π) arcsin(2c / √((1 + 2q1)(1 + 2q2))) and (4/π) / √((1 + 2q1)(1 + 2q2) − 4c²).
    """
    c = rho * (q1 * q2).sqrt()
    det = (1 + 2 * q1) * (1 + 2 * q2)
    return 2 / math.pi * torch.asin(2 * c / det.sqrt()), 4 / math.pi / (det - 4 * c * c).sqrt()


def gelu(q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
    """Exact GELU φ(x) = x Φ(x) (the kernel of neural-tangents' ``stax.Gelu``), derived here.

    With Φ(u) Φ(v) = P(u − ξ1 ≥ 0, v − ξ2 ≥ 0) for independent ξ ~ N(0, 1), E[u v 1{W ≥ 0}]
    for the Gaussian W = (u − ξ1, v − ξ2) follows from regressing (u, v) on W and the
    orthant moments of W. With P = q1 q2, S = q1 + q2, s = 1 − ρ², A = (1 + q1)(1 + q2),
    D = A − c² = 1 + S + P s and N = (P (1 + S) + P² s + c²) / A:

        E[φ(u) φ(v)]   = c/4 + c arcsin(c/√A) / (2π) + N / (2π √D)
        E[φ'(u) φ'(v)] = 1/4 + arcsin(c/√A) / (2π) + c ((3 + S)(1 + S) + P (1 + s (2 + S)))
                         / (2π A D^{3/2})

    the second being ∂/∂c of the first (Price's theorem), both written as sums of positive
    terms (no cancellation, also at q ~ 1e15).
    """
    p, total = q1 * q2, q1 + q2
    c = rho * p.sqrt()
    s = (1 - rho) * (1 + rho)
    a = (1 + q1) * (1 + q2)
    d = 1 + total + p * s
    n = (p * (1 + total) + p * p * s + c * c) / a
    arcsin = torch.asin(rho * (p / a).sqrt()) / (2 * math.pi)
    e_ff = c / 4 + c * arcsin + n / (2 * math.pi * d.sqrt())
    numerator = (3 + total) * (1 + total) + p * (1 + s * (2 + total))
    e_dd = 0.25 + arcsin + c * numerator / (2 * math.pi * a * d.pow(1.5))
    return e_ff, e_dd


def sin(q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
    """φ = sin: E[sin u sin v] = e^{−(q1+q2)/2} sinh c, E[cos u cos v] = e^{−(q1+q2)/2} cosh c."""
    return _sin_cos_moments(q1, q2, rho)


def cos(q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
    """φ = cos, φ' = −sin: E[cos u cos v] and E[sin u sin v] (see `sin`)."""
    odd, even = _sin_cos_moments(q1, q2, rho)
    return even, odd


def _sin_cos_moments(q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
    """(e^{−s} sinh c, e^{−s} cosh c), s = (q1 + q2)/2, as (e^{c−s} ∓ e^{−c−s})/2 (no overflow)."""
    c = rho * (q1 * q2).sqrt()
    s = (q1 + q2) / 2
    up, down = torch.exp(c - s), torch.exp(-c - s)
    return (up - down) / 2, (up + down) / 2


def sign(q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
    """φ = sign: (2/π) arcsin ρ (Sheppard's formula); φ' = 0, as autograd differentiates it."""
    e_ff = 2 / math.pi * torch.asin(rho) * ((q1 > 0) & (q2 > 0))
    return e_ff, torch.zeros_like(e_ff)


def step(q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
    """φ = 1[x > 0]: P(u > 0, v > 0) = (π − θ)/(2π), 0 if a variance is 0; φ' = 0 (autograd)."""
    e_ff = (0.5 - torch.acos(rho) / (2 * math.pi)) * ((q1 > 0) & (q2 > 0))
    return e_ff, torch.zeros_like(e_ff)


# First moments (E[φ(u)], E[φ'(u)]), u ~ N(0, q): the mean a LayerNorm after φ subtracts
# (`_program_ops.norm`) and the slope of a sum φ(h) + h (Stein's lemma, `_program_ops.add`).


def piecewise_linear_moments(slope: float, q: torch.Tensor) -> Pair:
    """φ = r(x) − a·r(−x): E[φ(u)] = (1 − a) E[r(u)] = (1 − a) √(q / 2π), E[φ'] = (1 + a)/2."""
    return (1 - slope) * (q / (2 * math.pi)).sqrt(), torch.full_like(q, (1 + slope) / 2)


def identity_moments(q: torch.Tensor) -> Pair:
    """φ = x: (0, 1)."""
    return torch.zeros_like(q), torch.ones_like(q)


def erf_moments(q: torch.Tensor) -> Pair:
    """φ = erf (odd): E[φ] = 0, E[(2/√π) e^{−u²}] = 2 / √(π (1 + 2q))."""
    return torch.zeros_like(q), 2 / (math.pi * (1 + 2 * q)).sqrt()


def gelu_moments(q: torch.Tensor) -> Pair:
    """φ = x Φ(x): by Stein's lemma E[u Φ(u)] = q E[ϕ(u)] = q / √(2π (1 + q)), ϕ the normal
    density (E[ϕ(u)] is the density of u − ξ ~ N(0, 1 + q) at 0); E[φ'] = E[Φ(u)] +
    E[u ϕ(u)] = 1/2 + 0."""
    return q / (2 * math.pi * (1 + q)).sqrt(), torch.full_like(q, 0.5)


def sin_moments(q: torch.Tensor) -> Pair:
    """φ = sin: (0, E[cos u] = e^{−q/2}), the characteristic function of N(0, q) at 1."""
    return torch.zeros_like(q), torch.exp(-q / 2)


def cos_moments(q: torch.Tensor) -> Pair:
    """φ = cos: (E[cos u] = e^{−q/2}, −E[sin u] = 0)."""
    return torch.exp(-q / 2), torch.zeros_like(q)


def sign_moments(q: torch.Tensor) -> Pair:
    """φ = sign: (0, 0) (φ' = 0, as autograd differentiates it)."""
    return torch.zeros_like(q), torch.zeros_like(q)


def step_moments(q: torch.Tensor) -> Pair:
    """φ = 1[x > 0]: P(u > 0) = 1/2, and 0 at q = 0 (φ(0) = 0); φ' = 0 (autograd)."""
    return torch.where(q > 0, 0.5, 0.0).to(q.dtype), torch.zeros_like(q)
