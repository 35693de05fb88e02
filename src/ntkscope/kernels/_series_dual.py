"""Numerical duals of activations without a closed form: the Mehler series, certified per entry.

With h_k = He_k / √k! (orthonormal under z ~ N(0, 1)) and the Hermite coefficients

    a_k(q) = E[φ(√q z) h_k(z)],        d_k(q) = E[φ'(√q z) h_k(z)],

Mehler's formula gives, for (u, v) = (√q1 z, √q2 w), corr(z, w) = ρ:

    E[φ(u) φ(v)] = Σ_k a_k(q1) a_k(q2) ρ^k,      E[φ'(u) φ'(v)] = Σ_k d_k(q1) d_k(q2) ρ^k.

The coefficients depend on one variance each, so they are computed once per distinct q (a
matrix product with a 1-D composite Gauss–Legendre rule, graded towards z = 0 where φ(√q z)
turns on the scale 1/√q) and kept for the next tile with the same variances; the cost per
entry is a Horner evaluation of K terms, run on a whole tile at once (`SeriesDual`). Truncation
after K terms is certified per entry by Cauchy–Schwarz on the tail:

    |Σ_{k≥K} a_k b_k ρ^k| ≤ |ρ|^K √(T_a(K) T_b(K)),    T_a(K) = E[φ(√q1 z)²] − Σ_{k<K} a_k²,

exact tail energies (Parseval), so the bound holds for every φ with finite second moments
(kinks included). Each entry takes the smallest K of `LADDER` whose bound, for both
expectations, is ≤ `TOLERANCE` times √(E[f(u)²] E[f(v)²]) (f = φ or φ'), or a longer K
shared by its tile (a longer sum only shrinks the bound). Without decay of
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

import collections
import functools
import math
import threading

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
    """(q1, q2, ρ) -> (E[φ(u) φ(v)], E[φ'(u) φ'(v)]) for one activation, by the Mehler series.

    For a tile (q1 of shape (n1, 1), q2 of (1, n2), ρ of (n1, n2), or any broadcastable
    shapes) the series is summed by Horner's rule on the whole tile, s ← s ρ + a_k(q1) a_k(q2)
    (an outer product broadcast, no per-entry gathers), at one length K shared by the tile:
    the rung of `LADDER` that minimizes the estimated cost, entries needing a longer series
    being summed one by one (`_entries`). The coefficients of each distinct vector of
    variances are kept (`_Memo`), so that the tiles of a matrix, which share the diagonal
    variances of their rows and columns, compute them once per layer.
    """

    arrays = 24
    """float64 values of working memory per entry (the Horner state and its temporaries)."""

    def __init__(self, activation: Activation) -> None:
        self.act = activation
        self.memo = _Memo(activation)

    def __call__(self, q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
        shape = torch.broadcast_shapes(q1.shape, q2.shape, rho.shape)
        if not shape:  # one pair: as a vector of one
            e_ff, e_dd = self(q1.reshape(1), q2.reshape(1), rho.reshape(1))
            return e_ff.reshape(()), e_dd.reshape(())
        rho = rho.expand(shape)
        inside = rho.abs() < 1 - RHO_SNAP
        c1, c2 = self.memo(q1), self.memo(q2)
        needed = torch.full(shape, _EDGE, dtype=torch.int64, device=rho.device)
        out, rung = torch.zeros(2, *shape, dtype=torch.float64, device=rho.device), -1
        if bool(inside.any()):
            needed = _series_length(c1, c2, q1.shape, q2.shape, rho, inside)
            rung = _shared_rung(needed)
        if rung >= 0:
            out = _horner(c1, c2, q1.shape, q2.shape, rho, LADDER[rung])
        rest = ((needed > rung) | (needed < 0)).reshape(-1).nonzero().squeeze(1)
        if len(rest):
            at = torch.unravel_index(rest, shape)
            qs = (q1.expand(shape)[at], q2.expand(shape)[at])
            rows, cols = (_flat_index(q).expand(shape)[at] for q in (q1, q2))
            values = self._entries(c1, c2, qs, rows, cols, rho[at], needed[at])
            out.view(2, -1)[:, rest] = values
        return out[0], out[1]

    def first_moments(self, q: torch.Tensor) -> Pair:
        """(E[φ(√q z)], E[φ'(√q z)]) = (a_0(q), d_0(q)), the zeroth Hermite coefficients
        (h_0 = 1), elementwise."""
        zeroth = self.memo(q).extend(1)[:, :, 0]
        return zeroth[0].reshape(q.shape), zeroth[1].reshape(q.shape)

    def _entries(
        self,
        c1: _Coefficients,
        c2: _Coefficients,
        qs: Pair,
        rows: torch.Tensor,
        cols: torch.Tensor,
        rho: torch.Tensor,
        needed: torch.Tensor,
    ) -> torch.Tensor:
        """(2, P) for entries one by one: the series of each entry's own length (sorted into
        batches of equal length), the 1-D rule at |ρ| = 1 (at q1 = q2, ρ = 1: the energy
        E[f²] that comes with the coefficients, by the same rule), the 2-D rule where
        uncertified."""
        out = torch.empty(2, len(rho), dtype=torch.float64, device=rho.device)
        order = needed.argsort()
        start = int((needed[order] < 0).sum())  # after the edge and uncertified entries
        while start < len(order):
            length = LADDER[int(needed[order[start]])]
            chunk = order[start : start + max(1, _SERIES_VALUES // length)]
            length = LADDER[int(needed[chunk[-1]])]  # sorted: the chunk's longest
            out[:, chunk] = _series(c1, c2, rows[chunk], cols[chunk], rho[chunk], length)
            start += len(chunk)
        square = (needed == _EDGE) & (qs[0] == qs[1]) & (rho > 0)
        at = square.nonzero().squeeze(1)
        out[:, at] = c1.energy()[:, rows[at]]
        line = (needed == _EDGE) & ~square
        for chunk in _batches(line, _LINE_CHUNK):
            out[:, chunk] = _line(self.act, qs[0][chunk], qs[1][chunk], rho[chunk])
        for chunk in _batches(needed == _UNCERTIFIED, _PLANE_CHUNK):
            out[:, chunk] = _plane(self.act, qs[0][chunk], qs[1][chunk], rho[chunk])
        return out


_EDGE, _UNCERTIFIED = -2, -1
"""Markers of `_series_length`: |ρ| taken as 1, and no rung certified."""
_GATHER_COST = 4.0
"""Cost of a term summed entry by entry (`_series`), relative to a term of `_horner`."""
_LINE_CHUNK = 256
"""Entries per batch of the 1-D rule (a few MB of node values)."""


def _batches(mask: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """The indices where ``mask`` holds, in batches of ≤ ``size`` (none if it holds nowhere)."""
    at = mask.nonzero().squeeze(1)
    return at.split(size) if len(at) else ()


def _flat_index(q: torch.Tensor) -> torch.Tensor:
    """The flat index of each element of ``q``, in ``q``'s shape (to be expanded)."""
    return torch.arange(q.numel(), device=q.device).reshape(q.shape)


class _Memo:
    """`_Coefficients` by the values of q, least recently used first out, within `_MEMO_VALUES`."""

    def __init__(self, act: Activation) -> None:
        self.act = act
        self.table: collections.OrderedDict[tuple, _Coefficients] = collections.OrderedDict()
        self.lock = threading.Lock()

    def __call__(self, q: torch.Tensor) -> _Coefficients:
        q = q.reshape(-1)
        key = (str(q.device), q.cpu().numpy().tobytes())
        with self.lock:
            found = self.table.get(key)
            if found is not None:
                self.table.move_to_end(key)
                return found
        made = _Coefficients(self.act, q.clone())
        with self.lock:
            self.table[key] = made
            while sum(len(c.q) for c in self.table.values()) > _MEMO_VALUES:
                self.table.popitem(last=False)
        return made


_MEMO_VALUES = 2**14
"""Variances whose coefficients are kept (≤ 2 · 256 values each: ≤ 64 MB in all)."""


class _Coefficients:
    """Hermite coefficients and tail energies of φ(√q z) and φ'(√q z) for a vector of q."""

    def __init__(self, act: Activation, q: torch.Tensor) -> None:
        self.act, self.q = act, q
        self.coefficients = torch.empty(2, len(q), 0, dtype=torch.float64, device=q.device)
        self.energies = torch.empty(2, len(q), dtype=torch.float64, device=q.device)
        self.tails: dict[int, torch.Tensor] = {}

    def extend(self, length: int) -> torch.Tensor:
        """(2, n, length) coefficients a_k, d_k for k < ``length`` (computed once); the
        energies E[f²] come with the first call, by the rule `_rule(_LOW)`."""
        if length > self.coefficients.shape[-1]:
            order = _LOW if length <= _LOW else LADDER[-1]
            z, weighted = _rule(order)[0], _weighted_hermite(order).to(self.q.device)
            parts = []
            for at in torch.arange(len(self.q), device=self.q.device).split(_LINE_CHUNK):
                values = _values(self.act, self.q[at], z)  # (2, n, M)
                if order == _LOW:
                    self.energies[:, at] = (values.square() * _rule(_LOW)[1].to(z.device)).sum(-1)
                parts.append(values @ weighted)
            self.coefficients = torch.cat(parts, 1)
        return self.coefficients[..., :length]

    def energy(self) -> torch.Tensor:
        """(2, n): E[φ(√q z)²] and E[φ'(√q z)²]."""
        self.extend(1)
        return self.energies

    def log_tail(self, length: int) -> torch.Tensor:
        """(n,): log of max over f = φ, φ' of the tail energy T(K) / E[f²], K = ``length``."""
        if length not in self.tails:
            head = self.extend(max(length, _LOW))[..., :length].square().sum(-1)
            energy = self.energy()
            slack = 1e-15 * energy  # rounding of E[f²] − Σ a_k² (2000-node sums)
            tiny = torch.finfo(torch.float64).tiny
            tail = ((energy - head).clamp_min(0) + slack).clamp_min(tiny)
            scale = energy.clamp_min(tiny)
            self.tails[length] = (tail / scale).log().max(0).values
        return self.tails[length]


def _values(act: Activation, q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(2, n, M): φ(√q z) and φ'(√q z) at the nodes z."""
    u = q.sqrt()[:, None] * z.to(q.device)
    return torch.stack([act.fn(u), act.derivative(u)])


def _series_length(
    c1: _Coefficients,
    c2: _Coefficients,
    shape1: torch.Size,
    shape2: torch.Size,
    rho: torch.Tensor,
    inside: torch.Tensor,
) -> torch.Tensor:
    """Per entry, the index in `LADDER` of the shortest certified series; `_EDGE` outside
    ``inside`` (|ρ| ≈ 1), `_UNCERTIFIED` where no rung is certified.

    Rung K certifies an entry if K log|ρ| + ½ (M_K(q1) + M_K(q2)) ≤ log TOLERANCE, with M_K
    the larger log relative tail of φ and φ' (so the bound covers both expectations). The
    rungs are tried in order until every entry is certified."""
    log_rho = rho.abs().log()
    needed = torch.full(rho.shape, _UNCERTIFIED, dtype=torch.int64, device=rho.device)
    needed.masked_fill_(~inside, _EDGE)
    open_ = inside.clone()
    for rung, length in enumerate(LADDER):
        tails = c1.log_tail(length).reshape(shape1) + c2.log_tail(length).reshape(shape2)
        ok = (log_rho * length).add_(tails, alpha=0.5) <= math.log(TOLERANCE)
        needed.masked_fill_(ok & open_, rung)
        open_ &= ~ok
        if not bool(open_.any()):
            break
    return needed


def _shared_rung(needed: torch.Tensor) -> int:
    """The rung summed on the whole tile: the least estimated cost, K per entry for the tile
    plus `_GATHER_COST` · K' for each entry needing a longer K'; −1 if no entry is certified."""
    counts = torch.bincount(needed[needed >= 0], minlength=len(LADDER)).tolist()
    if not any(counts):
        return -1
    top = max(r for r, n in enumerate(counts) if n)
    lengths = LADDER[: top + 1]
    costs = [
        k * needed.numel()
        + _GATHER_COST * sum(n * LADDER[r] for r, n in enumerate(counts) if r > rung)
        for rung, k in enumerate(lengths)
    ]
    return costs.index(min(costs))


def _horner(
    c1: _Coefficients,
    c2: _Coefficients,
    shape1: torch.Size,
    shape2: torch.Size,
    rho: torch.Tensor,
    length: int,
) -> torch.Tensor:
    """(2, *ρ.shape): Σ_{k<length} a_k(q1) a_k(q2) ρ^k and the same for d_k, by Horner's
    rule with the coefficients broadcast in the shapes of q1 and q2 (relative rounding
    ≲ length ulps of Σ |a_k a_k ρ^k| ≤ the Cauchy–Schwarz scale)."""
    ndim = rho.dim()

    def spread(c: _Coefficients, shape: torch.Size) -> torch.Tensor:  # (K, 2, 1.., *shape)
        padded = (1,) * (ndim - len(shape)) + tuple(shape)
        return c.extend(length).permute(2, 0, 1).reshape(length, 2, *padded)

    a, b = spread(c1, shape1), spread(c2, shape2)
    total = (a[-1] * b[-1]).expand(2, *rho.shape).clone()
    for k in range(length - 2, -1, -1):
        total.mul_(rho).addcmul_(a[k], b[k])
    return total


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
    """(2, P): Σ_{k<length} a_k(q1) a_k(q2) ρ^k and the same for d_k, entry by entry.

    The powers ρ^k by a cumulative product (relative error ≤ k ulps each), summed in one
    pass: ~8 vectorized operations per batch whatever the length."""
    powers = torch.cat([torch.ones_like(rho)[:, None], rho[:, None].expand(-1, length - 1)], 1)
    powers = powers.cumprod(1)  # (P, length)
    a, b = c1.extend(length)[:, rows], c2.extend(length)[:, cols]  # (2, P, length)
    return (a.mul_(b).mul_(powers)).sum(-1)


def _line(act: Activation, q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """(2, P): E[f(√q1 z) f(±√q2 z)] for f = φ, φ' at ρ = ±1, by the 1-D rule (whose nodes
    are symmetric: f(−√q2 z) is f(√q2 z) read backwards)."""
    z, w = _rule(_LOW)
    u, v = _values(act, q1, z), _values(act, q2, z)  # (2, P, M)
    v = torch.where((rho < 0)[None, :, None], v.flip(-1), v)
    return (u * v) @ w.to(rho.device)


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
"""Inner rule: panel edges (fractions of each side) graded to the kink, then 1/4, 3/8, .., 1."""
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
