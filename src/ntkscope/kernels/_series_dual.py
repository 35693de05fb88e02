"""Numerical duals of activations without a closed form: the Mehler series, certified per entry.

With h_k = He_k / √k! (orthonormal under z ~ N(0, 1)) and the Hermite coefficients

    a_k(q) = E[φ(√q z) h_k(z)],        d_k(q) = E[φ'(√q z) h_k(z)],

Mehler's formula gives, for (u, v) = (√q1 z, √q2 w), corr(z, w) = ρ:

    E[φ(u) φ(v)] = Σ_k a_k(q1) a_k(q2) ρ^k,      E[φ'(u) φ'(v)] = Σ_k d_k(q1) d_k(q2) ρ^k.

The coefficients depend on one variance each, so they are computed once per distinct q (a
matrix product with a 1-D composite Gauss–Legendre rule, graded towards z = 0 where φ(√q z)
turns on the scale 1/√q); the cost per entry is a Horner evaluation of K terms. Truncation
after K terms is certified per entry by Cauchy–Schwarz on the tail:

    |Σ_{k≥K} a_k b_k ρ^k| ≤ |ρ|^K √(T_a(K) T_b(K)),    T_a(K) = E[φ(√q1 z)²] − Σ_{k<K} a_k²,

exact tail energies (Parseval), so the bound holds for every φ with finite second moments
(kinks included). Each entry takes the smallest K of `LADDER` whose bound, for both
expectations, is ≤ `TOLERANCE` times √(E[f(u)²] E[f(v)²]) (f = φ or φ'). Without decay of
the coefficients that certifies |ρ| ≤ TOLERANCE^(1/K_max) = 0.914; smooth φ at moderate q
certify every ρ. Two exceptions:

- |ρ| ≥ 1 − `RHO_SNAP` is taken as ±1, where E[f(u) g(v)] = E[f(√q1 z) g(±√q2 z)] is a 1-D
  integral (the same rule);
- entries no K certifies (large q with |ρ| near 1) get a 2-D product rule: composite
  Gauss–Legendre in a = z (split and graded at a = 0) and in t, w = ρ a + √(1 − ρ²) t (split
  and graded at the kink t = −ρ a / √(1 − ρ²)); ~1.3·10⁵ evaluations of φ per entry, slow
  but rare (measured error ≤ 1e-11 on the test table).

Mehler 1866; the Hermite expansion of dual activations: Daniely, Frostig & Singer 2016,
"Toward Deeper Understanding of Neural Networks: The Power of Initialization and a Dual
View on Expressivity".
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ntkscope.models.activations import Activation

Pair = tuple[torch.Tensor, torch.Tensor]

TOLERANCE = 1e-10
"""Certified truncation error per entry, relative to the Cauchy–Schwarz scale."""
LADDER = (8, 16, 32, 64, 128, 256)
"""Series lengths tried per entry; the coefficients are computed up to the longest used."""
RHO_SNAP = 1e-12
"""|ρ| within this of 1 counts as ±1 (the rounding that c accumulates over layers). For a
φ' with a kink this changes E[φ'(u) φ'(v)] by O(√(2·1e-12)) ≈ 1e-6 relative at most; for
smooth φ by ≤ 1e-12 · √(q1 q2) E[φ''φ''] / scale, ≤ 1e-10 for q ≤ 100 (tanh)."""
_LOW = 64
"""Coefficients up to this order come from the cheaper rule `_rule(_LOW)`."""


class SeriesDual:
    """(q1, q2, ρ) -> (E[φ(u) φ(v)], E[φ'(u) φ'(v)]) for one activation, by the Mehler series."""

    arrays = 24
    """float64 values of working memory per entry (the Horner state and its temporaries)."""

    def __init__(self, activation: Activation) -> None:
        self.act = activation

    def __call__(self, q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
        shape = torch.broadcast_shapes(q1.shape, q2.shape, rho.shape)
        rows, cols = (_index(q, shape) for q in (q1, q2))
        rho = rho.expand(shape).reshape(-1)
        out = torch.empty(2, rho.numel(), dtype=torch.float64, device=rho.device)
        c1 = _Coefficients(self.act, q1.reshape(-1))
        same = q2 is q1 or (q2.numel() == q1.numel() and torch.equal(q2.reshape(-1), c1.q))
        c2 = c1 if same else _Coefficients(self.act, q2.reshape(-1))
        edge = rho.abs() >= 1 - RHO_SNAP
        needed = _series_length(c1, c2, rows, cols, rho.abs().log())
        needed[edge] = -2
        order = needed.argsort()
        start = int((needed[order] < 0).sum())  # after the edge and uncertified entries
        while start < len(order):
            length = LADDER[int(needed[order[start]])]
            chunk = order[start : start + max(1, _SERIES_VALUES // length)]
            length = LADDER[int(needed[chunk[-1]])]  # sorted: the chunk's longest
            out[:, chunk] = _series(c1, c2, rows[chunk], cols[chunk], rho[chunk], length)
            start += len(chunk)
        at = edge.nonzero().squeeze(1)
        if len(at):
            out[:, at] = _line(c1, c2, rows[at], cols[at], rho[at])
        hard = (needed == -1).nonzero().squeeze(1)
        for chunk in hard.split(_PLANE_CHUNK):
            out[:, chunk] = _plane(self.act, c1.q[rows[chunk]], c2.q[cols[chunk]], rho[chunk])
        return out[0].reshape(shape), out[1].reshape(shape)


def _index(q: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """For each entry of the broadcast ``shape``, the flat index of its element of ``q``."""
    flat = torch.arange(q.numel(), device=q.device).reshape(q.shape)
    return flat.expand(shape).reshape(-1)


class _Coefficients:
    """Hermite coefficients and tail energies of φ(√q z) and φ'(√q z) for a vector of q."""

    def __init__(self, act: Activation, q: torch.Tensor) -> None:
        self.act, self.q = act, q
        self.length = 0
        self.coefficients = torch.empty(2, len(q), 0, dtype=torch.float64, device=q.device)
        z, w = _rule(_LOW)
        values = self._values(z)
        self.energy = (values.square() * w.to(q.device)).sum(-1)  # (2, n): E[f²], E[f'²]
        floor = torch.finfo(torch.float64).tiny
        self.scale = self.energy.clamp_min(floor).log()
        self.low_values = values

    def _values(self, z: torch.Tensor) -> torch.Tensor:
        """(2, n, M): φ(√q z) and φ'(√q z) at the nodes z."""
        u = self.q.sqrt()[:, None] * z.to(self.q.device)
        return torch.stack([self.act.fn(u), self.act.derivative(u)])

    def extend(self, length: int) -> torch.Tensor:
        """(2, n, length) coefficients a_k, d_k for k < ``length`` (computed once)."""
        if length > self.length:
            if length <= _LOW:
                values, weighted = self.low_values, _weighted_hermite(_LOW)
            else:
                order = LADDER[-1]
                values, weighted = self._values(_rule(order)[0]), _weighted_hermite(order)
            self.coefficients = values @ weighted.to(values.device)  # (2, n, K)
            self.length = self.coefficients.shape[-1]
        return self.coefficients[..., :length]

    def log_tails(self, lengths: tuple[int, ...]) -> torch.Tensor:
        """(2, n, len(lengths)): log of the tail energies T(K) / E[f²] for each K."""
        coefficients = self.extend(max(lengths))
        head = coefficients.square().cumsum(-1)[..., [k - 1 for k in lengths]]
        tail = self.energy[..., None] - head
        slack = 1e-15 * self.energy[..., None]  # rounding of E[f²] − Σ a_k² (2000-node sums)
        tiny = torch.finfo(torch.float64).tiny
        return (tail.clamp_min(0) + slack).clamp_min(tiny).log() - self.scale[..., None]


def _series_length(
    c1: _Coefficients,
    c2: _Coefficients,
    rows: torch.Tensor,
    cols: torch.Tensor,
    log_rho: torch.Tensor,
) -> torch.Tensor:
    """Per entry, the index in `LADDER` of the shortest certified series, −1 if none is.

    The rungs up to `_LOW` first; the longer ones, whose coefficients need the finer rule,
    only for the entries still uncertified."""
    low = tuple(k for k in LADDER if k <= _LOW)
    needed = _certified(c1, c2, rows, cols, log_rho, low)
    open_ = (needed < 0).nonzero().squeeze(1)
    if len(open_) and len(low) < len(LADDER):
        high = LADDER[len(low) :]
        more = _certified(c1, c2, rows[open_], cols[open_], log_rho[open_], high)
        needed[open_] = torch.where(more < 0, more, more + len(low))
    return needed


def _certified(
    c1: _Coefficients,
    c2: _Coefficients,
    rows: torch.Tensor,
    cols: torch.Tensor,
    log_rho: torch.Tensor,
    lengths: tuple[int, ...],
) -> torch.Tensor:
    """Per entry, the index of the first of ``lengths`` whose bound is ≤ TOLERANCE, else −1."""
    tails = c1.log_tails(lengths)[:, rows] + c2.log_tails(lengths)[:, cols]  # (2, P, R)
    steps = torch.tensor(lengths, dtype=torch.float64, device=log_rho.device)
    bound = log_rho[:, None] * steps + 0.5 * tails.max(0).values
    ok = bound <= math.log(TOLERANCE)
    first = ok.to(torch.uint8).argmax(1)
    return torch.where(ok.any(1), first, -1)


_SERIES_VALUES = 2**18
"""Entries × terms per batch of `_series` (a few arrays of 2 MB)."""


def _series(
    c1: _Coefficients,
    c2: _Coefficients,
    rows: torch.Tensor,
    cols: torch.Tensor,
    rho: torch.Tensor,
    length: int,
) -> torch.Tensor:
    """(2, P): Σ_{k<length} a_k(q1) a_k(q2) ρ^k and the same for d_k.

    The powers ρ^k by a cumulative product (relative error ≤ k ulps each), summed in one
    pass: ~8 vectorized operations per batch whatever the length."""
    powers = torch.cat([torch.ones_like(rho)[:, None], rho[:, None].expand(-1, length - 1)], 1)
    powers = powers.cumprod(1)  # (P, length)
    a, b = c1.extend(length)[:, rows], c2.extend(length)[:, cols]  # (2, P, length)
    return (a.mul_(b).mul_(powers)).sum(-1)


def _line(
    c1: _Coefficients, c2: _Coefficients, rows: torch.Tensor, cols: torch.Tensor, rho: torch.Tensor
) -> torch.Tensor:
    """(2, P): E[f(√q1 z) f(±√q2 z)] for f = φ, φ' at ρ = ±1, by the 1-D rule (whose nodes
    are symmetric: f(−√q2 z) is f(√q2 z) read backwards)."""
    w = _rule(_LOW)[1].to(rho.device)
    u = c1.low_values[:, rows]  # (2, P, M)
    v = c2.low_values[:, cols]
    v = torch.where((rho < 0)[None, :, None], v.flip(-1), v)
    return (u * v) @ w


_PLANE_CHUNK = 8
"""Entries per batch of the 2-D rule (~2·10⁵ nodes each: ~13 MB per array)."""


def _plane(act: Activation, q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """(2, P): both expectations by the 2-D product rule of the module docstring."""
    s = (1 - rho * rho).sqrt()
    widths = torch.stack([q1.rsqrt(), q2.rsqrt(), s, torch.ones_like(s)])  # features in a
    finest = 0.02 * widths.min(0).values.clamp_min(5e-11)
    a, wa = _geometric(finest)  # (P, Ma), graded towards a = 0 down to ``finest``
    kink = (-rho[:, None] * a / s[:, None]).clamp(-_SPAN, _SPAN)
    x, wx = (t.to(q1.device) for t in _unit_split())
    t, wt = _graded(kink, x, wx)  # (P, Ma, Mt)
    u = q1.sqrt()[:, None] * a
    v = q2.sqrt()[:, None, None] * (rho[:, None, None] * a[..., None] + s[:, None, None] * t)
    outer = wa * torch.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    inner = wt * torch.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    e_ff = ((act.fn(v) * inner).sum(-1) * act.fn(u) * outer).sum(-1)
    e_dd = ((act.derivative(v) * inner).sum(-1) * act.derivative(u) * outer).sum(-1)
    return torch.stack([e_ff, e_dd])


_SPAN = 10.0
"""Both variables of the 2-D rule are integrated over [−10, 10] (Gaussian mass beyond: 2e-23)."""
_OUTER = 2.0 ** -np.arange(10, 2, -1)
"""Inner rule: panel edges (fractions of each side) graded towards the kink, then 1/4, 3/8, .., 1."""
_GEOMETRIC_PANELS = 24
"""Outer rule: panels per side, edges in geometric progression from ``finest`` to SPAN."""


def _geometric(finest: torch.Tensor) -> Pair:
    """(P, M) nodes and weights on [−SPAN, SPAN], split at 0, panel edges ±SPAN·r^j with
    r^J = finest / SPAN (ratio ≤ 3.2 for finest ≥ 1e-12), and the panel [0, finest]."""
    x, w = (torch.from_numpy(t).to(finest.device) for t in np.polynomial.legendre.leggauss(16))
    j = torch.arange(_GEOMETRIC_PANELS, -1, -1, dtype=torch.float64, device=finest.device)
    ratio = (finest / _SPAN)[:, None] ** (j / _GEOMETRIC_PANELS)  # (P, J+1), ascending
    edges = torch.cat([torch.zeros_like(finest)[:, None], _SPAN * ratio], 1)
    mid, half = (edges[:, 1:] + edges[:, :-1]) / 2, (edges[:, 1:] - edges[:, :-1]) / 2
    nodes = (mid[..., None] + half[..., None] * x).flatten(1)
    weights = (half[..., None] * w).flatten(1)
    return torch.cat([-nodes, nodes], 1), torch.cat([weights, weights], 1)


def _graded(kink: torch.Tensor, x: torch.Tensor, wx: torch.Tensor) -> Pair:
    """Nodes and weights on [−SPAN, kink] ∪ [kink, SPAN], graded towards ``kink``.

    ``x``, ``wx``: a rule on [−1, 1] split and graded at 0; [−1, 0] is mapped onto
    [−SPAN, kink] and [0, 1] onto [kink, SPAN], each linearly."""
    left, right = kink + _SPAN, _SPAN - kink  # lengths
    scale = torch.where(x < 0, left[..., None], right[..., None])
    return kink[..., None] + x * scale, wx * scale


@functools.cache
def _unit_split() -> Pair:
    """A composite Gauss–Legendre rule on [−1, 1], panels graded towards 0 on both sides."""
    return _split_rule(0.0, _OUTER, span=1.0)


def _split_rule(center: float, grading: np.ndarray, span: float = _SPAN) -> Pair:
    """Composite 16-point Gauss–Legendre on [center − span, center + span], split at center,
    panel edges at span·(grading, 1/4, 3/8, ..., 1) on each side."""
    fractions = np.concatenate([[0.0], grading, np.arange(0.25, 1.0 + 1e-9, 0.125)])
    positive = span * fractions
    edges = center + np.concatenate([-positive[::-1], positive[1:]])
    return _composite(edges)


def _composite(edges: np.ndarray) -> Pair:
    """16-point Gauss–Legendre on each panel [edges[i], edges[i+1]]."""
    x, w = np.polynomial.legendre.leggauss(16)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    nodes = (mid[:, None] + half[:, None] * x).ravel()
    return torch.from_numpy(nodes), torch.from_numpy((half[:, None] * w).ravel())


@functools.cache
def _rule(order: int) -> Pair:
    """Nodes z and weights (density included) for E[f(z)], z ~ N(0, 1), exact enough for the
    Hermite coefficients up to ``order``: panels of width 0.5 (0.25 beyond order 64, where
    h_k oscillates faster) on |z| ≤ 14 (|h_k| p ≤ √p < 1e-21 beyond), graded towards 0 down
    to 2^-14 (φ(√q z) turns on the scale 1/√q ≥ 0.01 for q ≤ 1e4)."""
    spacing = 0.5 if order <= _LOW else 0.25
    limit = 14.0
    inner = 0.25 * 2.0 ** -np.arange(12, 0, -1)  # down to 2^-14
    positive = np.concatenate([[0.0], inner, np.arange(0.25, limit + 1e-9, spacing)])
    nodes, weights = _composite(np.concatenate([-positive[::-1], positive[1:]]))
    return nodes, weights * torch.exp(-nodes * nodes / 2) / math.sqrt(2 * math.pi)


@functools.cache
def _weighted_hermite(order: int) -> torch.Tensor:
    """(M, order): w_m h_k(z_m) on the nodes of `_rule(order)`, via the Hermite functions
    ψ_k = h_k √p, whose recurrence stays bounded (|ψ_k| < 1)."""
    z, w = _rule(order)
    root = torch.exp(-z * z / 4) / (2 * math.pi) ** 0.25  # √p(z)
    psi = torch.empty(len(z), order, dtype=torch.float64)
    psi[:, 0] = root
    psi[:, 1] = z * root
    for k in range(1, order - 1):
        psi[:, k + 1] = (z * psi[:, k] - math.sqrt(k) * psi[:, k - 1]) / math.sqrt(k + 1)
    return psi * (w / root)[:, None]
