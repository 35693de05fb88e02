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
(kinks included). An entry is summed to a length K whose bound, for both expectations, is
≤ `TOLERANCE` times √(E[f(u)²] E[f(v)²]) (f = φ or φ'), by the entry's own tails: the
length its tile shares where that is certified, else the smallest certified K of `LADDER`
(a longer sum only shrinks the bound). Without decay of
the coefficients that certifies |ρ| ≤ TOLERANCE^(1/K_max) = 0.914; smooth φ at moderate q
certify every ρ. Two exceptions (`ntkscope.kernels._series_rules`):

- |ρ| ≥ 1 − `RHO_SNAP` is taken as ±1, where E[f(u) g(v)] = E[f(√q1 z) g(±√q2 z)] is a 1-D
  integral (the rule of the coefficients);
- entries no K certifies (large q with |ρ| near 1) get a 2-D product rule, slow but rare.

Mehler 1866; the Hermite expansion of dual activations: Daniely, Frostig & Singer 2016,
"Toward Deeper Understanding of Neural Networks: The Power of Initialization and a Dual
View on Expressivity".
"""

from __future__ import annotations

import collections
import math
import threading

import torch

from ntkscope.kernels import _series_rules as rules
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
_LOW = rules.LOW
"""Coefficients up to this order come from the cheaper rule `rules.rule(_LOW)`."""
_LIMITS = (32, _LOW, LADDER[-1])
"""Numbers of coefficients computed at once: the first, then as many as needed (a longer
set is computed anew, by the rule for its order)."""


class SeriesDual:
    """(q1, q2, ρ) -> (E[φ(u) φ(v)], E[φ'(u) φ'(v)]) for one activation, by the Mehler series.

    For a tile (q1 of shape (n1, 1), q2 of (1, n2), ρ of (n1, n2), or any broadcastable
    shapes) the series is summed by Horner's rule on the whole tile, s ← s ρ + a_k(q1) a_k(q2)
    (an outer product broadcast, no per-entry gathers), at one length K shared by the tile
    (`_plan`): with the largest tail energies of its rows and of its columns, K terms certify
    every entry with |ρ| ≤ R_K, so one bucketing of a sample of |ρ| against R_1 ≤ R_2 ≤ ...
    prices every K at once. Which entries K certifies is decided by their own tails (a row
    factor times a column factor, `_reach`); the others are summed one by one, each to its
    own certified length (`_entries`). The coefficients of each
    distinct vector of variances are kept (`_Memo`), and a vector whose values are all held
    (the rows of a tile, after the variances of all inputs) is served from them, so that
    the coefficients are computed once per input and layer.
    """

    arrays = 24
    """float64 values of working memory per entry (the Horner state and its temporaries)."""

    def __init__(self, activation: Activation) -> None:
        self.act = activation
        self.memo = _Memo(activation)

    def __call__(self, q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
        wide1, wide2, rho = torch.broadcast_tensors(q1, q2, rho)
        shape = rho.shape
        if not shape:  # one pair: as a vector of one
            e_ff, e_dd = self(q1.reshape(1), q2.reshape(1), rho.reshape(1))
            return e_ff.reshape(()), e_dd.reshape(())
        out = torch.zeros(2, *shape, dtype=torch.float64, device=rho.device)
        if not rho.numel():
            return out[0], out[1]
        c1, c2 = self.memo(q1), self.memo(q2)
        length, longer = _plan(c1, c2, q1.shape, q2.shape, rho)
        if length:
            out = _horner(c1, c2, q1.shape, q2.shape, rho, length)
        rest = longer.reshape(-1).nonzero().squeeze(1)
        if len(rest):
            at = _unravel(rest, shape)
            qs = (wide1[at], wide2[at])
            rows, cols = (_flat_index(q).expand(shape)[at] for q in (q1, q2))
            flat = out.view(2, -1)
            flat[:, rest] = self._entries(c1, c2, qs, rows, cols, rho[at], length)
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
        length: int,
    ) -> torch.Tensor:
        """(2, P) for entries that the tile's sum of ``length`` terms leaves, one by one: the
        series of each entry's own (longer) length, sorted into batches of equal length, the
        1-D rule at |ρ| = 1 (at q1 = q2, ρ = 1: the energy E[f²] that comes with the
        coefficients, by the same rule), the 2-D rule where uncertified."""
        out = torch.empty(2, len(rho), dtype=torch.float64, device=rho.device)
        needed = _series_length(c1, c2, (rows, cols), rho, length)
        order = needed.argsort()
        start = int((needed[order] < 0).sum())  # after the edge and uncertified entries
        while start < len(order):
            rung = LADDER[int(needed[order[start]])]
            chunk = order[start : start + max(1, _SERIES_VALUES // rung)]
            rung = LADDER[int(needed[chunk[-1]])]  # sorted: the chunk's longest
            out[:, chunk] = _series(c1, c2, rows[chunk], cols[chunk], rho[chunk], rung)
            start += len(chunk)
        square = (needed == _EDGE) & (qs[0] == qs[1]) & (rho > 0)
        at = square.nonzero().squeeze(1)
        out[:, at] = c1.energy()[:, rows[at]]
        line = (needed == _EDGE) & ~square
        for chunk in _batches(line, _LINE_CHUNK):
            out[:, chunk] = rules.line(self.act, qs[0][chunk], qs[1][chunk], rho[chunk])
        for chunk in _batches(needed == _UNCERTIFIED, rules.PLANE_CHUNK):
            out[:, chunk] = rules.plane(self.act, qs[0][chunk], qs[1][chunk], rho[chunk])
        return out


_EDGE, _UNCERTIFIED = -2, -1
"""Markers of `_series_length`: |ρ| taken as 1, and no rung certified."""
_INSIDE = math.nextafter(1 - RHO_SNAP, 0.0)
"""The largest |ρ| summed as a series (|ρ| ≥ 1 − RHO_SNAP is taken as ±1)."""
_GATHER_COST = 4.0
"""Cost of a term summed entry by entry (`_series`), relative to a term of `_horner`."""
_LINE_CHUNK = 256
"""Entries per batch of the 1-D rule (a few MB of node values)."""


def _batches(mask: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """The indices where ``mask`` holds, in batches of ≤ ``size`` (none if it holds nowhere)."""
    at = mask.nonzero().squeeze(1)
    return at.split(size) if len(at) else ()


def _unravel(flat: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, ...]:
    """The indices along each axis of ``shape`` of the flat indices ``flat``."""
    at = []
    for size in reversed(shape):
        at.append(flat % size)
        flat = flat // size
    return tuple(reversed(at))


def _flat_index(q: torch.Tensor) -> torch.Tensor:
    """The flat index of each element of ``q``, in ``q``'s shape (to be expanded)."""
    return torch.arange(q.numel(), device=q.device).reshape(q.shape)


class _Memo:
    """`_Coefficients` by the values of q, least recently used first out, within `_MEMO_VALUES`.

    A vector not held itself but all of whose values are in a held one gets those rows."""

    def __init__(self, act: Activation) -> None:
        self.act = act
        self.table: collections.OrderedDict[tuple, _Coefficients] = collections.OrderedDict()
        self.values = 0  # held, in all vectors
        self.lock = threading.Lock()

    def __call__(self, q: torch.Tensor) -> _Coefficients:
        q = q.reshape(-1)
        key = (str(q.device), q.cpu().numpy().tobytes())
        with self.lock:
            found = self.table.get(key)
            if found is not None:
                self.table.move_to_end(key)
                return found
            held = list(reversed(self.table.values()))
        made = _within(held, q) or _Coefficients(self.act, q.clone())
        with self.lock:
            if key not in self.table:
                self.table[key] = made
                self.values += made.size
            while self.values > _MEMO_VALUES:
                self.values -= self.table.popitem(last=False)[1].size
        return made


_MEMO_VALUES = 2**14
"""Variances whose coefficients are kept (≤ 2 · 256 values each: ≤ 64 MB in all)."""


def _within(held: list[_Coefficients], q: torch.Tensor) -> _Coefficients | None:
    """The rows for ``q`` of the first of ``held`` that has all its values, else None."""
    values = q.tolist()
    for c in held:
        if values and c.size >= len(values) and c.q.device == q.device:
            index = c.index_of(values)
            if index is not None:
                return c.take(index)
    return None


class _Coefficients:
    """Hermite coefficients, energies and tail energies of φ(√q z) and φ'(√q z) for a vector
    of q, computed when first asked for."""

    def __init__(self, act: Activation, q: torch.Tensor) -> None:
        self.act, self.q, self.size = act, q, len(q)
        self.coefficients = torch.empty(2, len(q), 0, dtype=torch.float64, device=q.device)
        self.energies: torch.Tensor | None = None  # (2, n)
        self.tails: torch.Tensor | None = None  # (n, K + 1), `log_tails`
        self.peaks: dict[int, torch.Tensor] = {}  # `peak_tails`
        self.positions: dict[float, int] | None = None  # of the values of q

    def extend(self, length: int) -> torch.Tensor:
        """(2, n, length) coefficients a_k, d_k for k < ``length`` (computed once, by the
        rule `rules.rule(_LOW)` up to `_LOW` terms, beyond by the finer one of LADDER[-1];
        32, 64 or 256 of them, `_LIMITS`);
        the energies E[f²] come with the first computation, by the same rule."""
        if length > self.coefficients.shape[-1]:
            limit = next(n for n in _LIMITS if n >= length)
            order = _LOW if limit <= _LOW else LADDER[-1]
            self.coefficients, energies = rules.hermite_coefficients(self.act, self.q, order, limit)
            if self.energies is None:
                self.energies = energies
            self.tails, self.peaks = None, {}
        return self.coefficients[..., :length]

    def energy(self) -> torch.Tensor:
        """(2, n): E[φ(√q z)²] and E[φ'(√q z)²]."""
        self.extend(1)
        return self.energies

    def log_tails(self, length: int) -> torch.Tensor:
        """(n, length + 1): M_K for K = 0..``length``, the log of the larger over f = φ, φ' of
        the tail energy T(K) / E[f²] (T(K) = E[f²] − Σ_{k<K} c_k², Parseval)."""
        if self.tails is None or self.tails.shape[1] <= length:
            self.extend(max(length, 1))
            energy = self.energy()[..., None]
            heads = self.coefficients.square().cumsum(-1)
            heads = torch.cat([torch.zeros_like(heads[..., :1]), heads], -1)
            slack = 1e-15 * energy  # rounding of E[f²] − Σ a_k² (2000-node sums)
            tiny = torch.finfo(torch.float64).tiny
            tail = ((energy - heads).clamp_min(0) + slack).clamp_min(tiny)
            self.tails = (tail / energy.clamp_min(tiny)).log().amax(0)
        return self.tails[:, : length + 1]

    def peak_tails(self, length: int) -> torch.Tensor:
        """(length + 1,): the largest M_K over the variances, K = 0..``length`` (kept)."""
        if length not in self.peaks:
            self.peaks[length] = self.log_tails(length).amax(0)
        return self.peaks[length]

    def log_tail(self, length: int) -> torch.Tensor:
        """(n,): M_K for K = ``length`` (`log_tails`)."""
        return self.log_tails(length)[:, length]

    def index_of(self, values: list[float]) -> torch.Tensor | None:
        """The positions in q of ``values``, or None unless all are there."""
        if self.positions is None:
            self.positions = {v: i for i, v in enumerate(self.q.tolist())}
        if values[0] not in self.positions:
            return None
        try:
            index = [self.positions[v] for v in values]
        except KeyError:
            return None
        return torch.tensor(index, device=self.q.device)

    def take(self, index: torch.Tensor) -> _Coefficients:
        """The coefficients of the variances q[index], as far as they are computed."""
        part = _Coefficients(self.act, self.q[index])
        part.coefficients = self.coefficients[:, index]
        part.energies = None if self.energies is None else self.energies[:, index]
        part.tails = None if self.tails is None else self.tails[index]
        return part


def _plan(
    c1: _Coefficients,
    c2: _Coefficients,
    shape1: torch.Size,
    shape2: torch.Size,
    rho: torch.Tensor,
) -> tuple[int, torch.Tensor]:
    """(K, longer): the length of the sum on the whole tile (0: none) and the mask of the
    entries it leaves to `SeriesDual._entries` (those K terms do not certify, `_reach`, and
    |ρ| ≈ 1).

    K minimizes the estimated cost (`_cheapest`) over the bucket of each of `_SAMPLE`
    entries spread over the tile: b, the least K = b + 1 that the tile's bound certifies
    (b = limit: none up to ``limit`` terms; b = limit + 1: |ρ| ≥ 1 − RHO_SNAP). The sample
    only prices the lengths (bucketing every entry took longer than summing 30 terms). The
    coefficients are extended beyond 32 or 64 terms (`_LIMITS`) when more than 1/8 of the
    sample needs more."""
    magnitude = rho.abs()
    sample = magnitude.reshape(-1)[:: max(1, magnitude.numel() // _SAMPLE)].contiguous()
    for limit in _LIMITS:
        counts = torch.bincount(
            torch.searchsorted(_bounds(c1, c2, limit), sample), minlength=limit + 2
        )
        if 8 * int(counts[limit]) <= len(sample):
            break
    length = _cheapest(counts[:limit], len(sample))
    if not length:
        return 0, torch.ones_like(magnitude, dtype=torch.bool)
    return length, magnitude > _reach(c1, c2, shape1, shape2, length)


_SAMPLE = 2048
"""Entries of a tile whose bucket is computed to choose its length (`_plan`)."""


def _reach(
    c1: _Coefficients, c2: _Coefficients, shape1: torch.Size, shape2: torch.Size, length: int
) -> torch.Tensor:
    """The largest |ρ| that K = ``length`` terms certify, per entry (broadcast from q1 and q2):
    K log|ρ| + ½ (M_K(q1) + M_K(q2)) ≤ log TOLERANCE is |ρ| ≤ TOLERANCE^(1/K) e^(−M_K(q1)/2K)
    e^(−M_K(q2)/2K), one product of a row and a column factor; at most `_INSIDE`."""
    row, col = (
        torch.exp(c.log_tail(length) / (-2 * length)).reshape(shape)
        for c, shape in ((c1, shape1), (c2, shape2))
    )
    return (TOLERANCE ** (1 / length) * row * col).clamp_(max=_INSIDE)


def _bounds(c1: _Coefficients, c2: _Coefficients, limit: int) -> torch.Tensor:
    """(limit + 1,): R_K for K = 1..``limit``, the largest |ρ| that K terms certify in the
    whole tile, K log R_K + ½ (max M_K(q1) + max M_K(q2)) = log TOLERANCE (M_K of
    `_Coefficients.log_tails`, the maxima over the tile's rows and columns), made
    nondecreasing (certified by K terms, an entry is by more) and ≤ `_INSIDE`; then `_INSIDE`."""
    tails = (c1.peak_tails(limit) + c2.peak_tails(limit))[1:] / 2
    lengths = torch.arange(1, limit + 1, dtype=torch.float64, device=tails.device)
    bounds = ((math.log(TOLERANCE) - tails) / lengths).exp().cummax(0).values
    return torch.cat([bounds.clamp_(max=_INSIDE), bounds.new_full((1,), _INSIDE)])


def _cheapest(counts: torch.Tensor, entries: int) -> int:
    """The length K of the tile's sum with the least estimated cost: K for each of the
    ``entries``, plus `_GATHER_COST` · K' for each entry whose least certified length
    K' = b + 1 (``counts[b]`` entries) exceeds K."""
    later = [0.0]  # entries × K' of the buckets b ≥ K, for K = limit, limit − 1, .., 0
    for b, count in reversed(list(enumerate(counts.tolist()))):
        later.append(later[-1] + count * (b + 1))
    costs = [k * entries + _GATHER_COST * work for k, work in enumerate(reversed(later))]
    return costs.index(min(costs))


def _series_length(
    c1: _Coefficients, c2: _Coefficients, index: Pair, rho: torch.Tensor, length: int
) -> torch.Tensor:
    """Per entry (``index``: rows and columns, its indices in the variances of c1 and c2):
    the index in `LADDER` of the shortest certified series longer than ``length``; `_EDGE`
    where |ρ| ≥ 1 − RHO_SNAP, `_UNCERTIFIED` where no rung is certified.

    K terms certify an entry if K log|ρ| + ½ (M_K(q1) + M_K(q2)) ≤ log TOLERANCE, with M_K
    the larger log relative tail of φ and φ' (so the bound covers both expectations)."""
    magnitude = rho.abs()
    open_ = magnitude < 1 - RHO_SNAP
    needed = torch.full(rho.shape, _UNCERTIFIED, dtype=torch.int64, device=rho.device)
    needed.masked_fill_(~open_, _EDGE)
    log_rho = magnitude.log()
    longer = [(rung, k) for rung, k in enumerate(LADDER) if k > length]
    for rung, k in longer:
        if not bool(open_.any()):
            break
        tails = c1.log_tail(k)[index[0]] + c2.log_tail(k)[index[1]]
        ok = open_ & ((log_rho * k).add_(tails, alpha=0.5) <= math.log(TOLERANCE))
        needed.masked_fill_(ok, rung)
        open_ &= ~ok
    return needed


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
