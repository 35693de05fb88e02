"""The contraction forms of a structured eNTK term, and the Gram of Jacobian blocks.

For `Factors` (a, g), a parameter Jacobian ``Σ_p g_{o,p} ⊗ a_p`` over positions p, the
eNTK contribution is

    Θ_W(x, x')_{oo'} = Σ_{p,q} (a_p · a'_q)(g_{o,p} · g'_{o',q})

contracted per layer (`form`) in the cheapest of three forms by a count of multiply-adds
per pair of examples (the choice of neural-tangents' structured derivatives; Novak, Sohl-Dickstein
& Schoenholz, "Fast finite width neural tangent kernel", ICML 2022), the positional form's
weighted by its slower products in full mode (`POSITIONAL_SLOWDOWN`):

- *outer* (one position): ``(a · a') (g_o · g'_{o'})``, two Gram matrices —
  d_a + O²·d_g per pair (full mode) instead of O²·d_a·d_g;
- *positional*: the sum above in three GEMM-shaped steps — P²·(d_a + O·d_g) + P·O²·d_g;
- *Jacobian*: the per-example Jacobian formed once, then ``J Jᵀ`` — O²·d_a·d_g, cheapest
  when positions are many and the layer small (the first layers of a CNN).

A layer whose output gradients separate over the outputs (`_separable`) has a fourth,
*separable*: d_a·d_g + O²·d_g, taken where it is the cheapest.

In full mode the positional form runs per row example with 16 or more positions (a batch
of GEMMs over the columns, then one GEMM with the row's gradients) and per column example
below (the faster order of the two, measured).

`upper_gram` is the Gram of the per-example Jacobian blocks of a block of examples with
itself, on and above the diagonal of its row blocks.
"""

from __future__ import annotations

import torch

from ntkscope.kernels._gram import product
from ntkscope.kernels._rules import Factors
from ntkscope.kernels._separable import multiply_adds


def costs(term: Factors, full: bool, n_out: int | None = None) -> dict[str, int]:
    """Multiply-adds per pair of examples of each form (module docstring), for ``n_out``
    outputs (default: those of ``term.g``)."""
    (_, outputs_g, p, d_g), d_a = term.g.shape, term.width
    n_out = outputs_g if n_out is None else n_out
    outputs = n_out**2 if full else n_out
    inner = 1 if term.vocab is not None else d_a  # ids are compared, not multiplied
    pairs = p * p * (inner + n_out * d_g) + (p * d_g * outputs if full else p * p)
    return {
        "jacobian": outputs * d_a * d_g,
        "positional": pairs,
        "outer": inner + outputs * d_g,
        "separable": multiply_adds(d_a, d_g, outputs, full),
    }


POSITIONAL_SLOWDOWN = 3
"""How many times longer a multiply-add of the positional form takes than one of a Gram of
Jacobians, in full mode: its per-example products (inner dimension the positions, O rows)
ran at 16–24 GMAC/s where the Gram ran at ~45 (one thread, the ResNet row of
``benchmarks/entk.py``), and a per-token MLP of 8 positions and 2 outputs, positional at
0.74× a Jacobian's multiply-adds, took 3× the time of the jacobian method (measured). In
trace mode the positional sum is one GEMM and one product: counted as it is."""


def weighted(term: Factors, full: bool, kind: str, n_out: int | None = None) -> float:
    """The cost of contracting ``term`` in form ``kind``, in multiply-adds of a Gram per pair
    of examples (`costs`, the positional form's times `POSITIONAL_SLOWDOWN` in full mode)."""
    slowdown = POSITIONAL_SLOWDOWN if full and kind == "positional" else 1
    return slowdown * costs(term, full, n_out)[kind]


def form(term: Factors, full: bool, n_out: int | None = None) -> str:
    """The cheapest form of ``term`` for ``n_out`` outputs (default: those of ``term.g``)."""
    if term.positions == 1:
        return "outer"
    cost = {kind: weighted(term, full, kind, n_out) for kind in ("positional", "jacobian")}
    return "positional" if cost["positional"] < cost["jacobian"] else "jacobian"


def positional_pair(f1: Factors, f2: Factors, full: bool, upper: bool = False) -> torch.Tensor:
    """Σ_{p,q} (a1_p · a2_q)(g1_{o,p} · g2_{o',q}) for every pair: three GEMM-shaped steps.

    ``upper``: f1 and f2 start at the same example, and only the pairs on and above the
    diagonal (row i, column j ≥ i) are needed (full mode skips the others, left zero).
    """
    aa = f1.inner(f2)  # (n, P, m, Q)
    (n, p1, m, p2), g1, g2 = aa.shape, f1.g, f2.g
    if not full:
        g1t, g2t = g1.transpose(1, 2).flatten(2), g2.transpose(1, 2).flatten(2)  # (n, P, O·D)
        gg = (g1t.flatten(0, 1) @ g2t.flatten(0, 1).T).view(n, p1, m, p2)
        return (aa * gg).sum((1, 3))
    if p2 >= BY_ROWS_MIN_POSITIONS:
        return full_by_rows(aa, g1, g2, upper)
    return full_by_columns(aa, g1, g2, upper)


BY_ROWS_MIN_POSITIONS = 16
"""Fewest positions for which `full_by_rows` is used, not `full_by_columns`: measured on one
thread, O = 10, D = 64, 64-128 examples: by rows 1.6-1.9× faster at 16 and 32 positions,
1.3-1.7× slower at 4, 8 and 9 (its batched GEMMs are (O·D)×Q×P, too thin there)."""


def full_by_rows(aa: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, upper: bool) -> torch.Tensor:
    """Full-mode positional sum from aa (n, P, m, Q) and g (·, O, P, D), per row example i:
    b[(j, o'), (d, p)] = Σ_q g2[j, o', d, q] (a1_p · a2_q), a batch of GEMMs over the
    columns j, then Θ[i, :] = g1[i] bᵀ, one GEMM for all columns; b in this order needs no
    transposed copy."""
    (n, _, m, q), n_out = aa.shape, g2.shape[1]
    # g as (·, O, D·P), a conv layer's own layout (a no-op there)
    g1, g2 = (g.transpose(2, 3).flatten(2).contiguous() for g in (g1, g2))
    aa = aa.permute(0, 2, 3, 1)  # (n, m, Q, P)
    out = g1.new_zeros(n, m, n_out, n_out)
    for i in range(min(n, m) if upper else n):  # rows below the last column: none j ≥ i
        s = i if upper else 0
        b = torch.bmm(g2[s:].view(m - s, -1, q), aa[i, s:]).view((m - s) * n_out, -1)
        out[i, s:] = (g1[i] @ b.T).view(n_out, m - s, n_out).transpose(0, 1)
    return out


def full_by_columns(
    aa: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, upper: bool
) -> torch.Tensor:
    """Full-mode positional sum, per column example j: b[i, (p, d), o'] = Σ_q (a1_p · a2_q)
    g2[j, o', q, d], one GEMM, then Θ[i, j] = g1[i] b[i], a batch over the rows i. b
    (n·P·D·O floats) stays in cache, where one b for all columns at once (m times larger)
    went through memory twice."""
    (n, p1, m, p2), (n_out, d_out) = aa.shape, (g2.shape[1], g2.shape[3])
    g2t = g2.permute(0, 2, 3, 1).reshape(m, p2, d_out * n_out)  # (m, Q, (d, o'))
    g1 = g1.reshape(n, n_out, p1 * d_out)
    out = g1.new_zeros(m, n, n_out, n_out)
    for j in range(m):
        r = min(j + 1, n) if upper else n
        b = aa[:r, :, j].reshape(r * p1, p2) @ g2t[j]
        torch.bmm(g1[:r], b.view(r, p1 * d_out, n_out), out=out[j, :r])
    return out.transpose(0, 1)


def positional_diagonal(f: Factors, full: bool) -> torch.Tensor:
    """`positional_pair` of each example with itself."""
    aa, g = f.self_inner(), f.g  # (n, P, P), (n, O, P, D)
    if not full:
        gt = g.transpose(1, 2).flatten(2)
        return (aa * (gt @ gt.transpose(1, 2))).sum((1, 2))
    return torch.einsum("nopd,npqd->noq", g, torch.einsum("npq,noqd->npod", aa, g))


GRAM_CHUNK_BYTES = 4 * 2**20
"""Bytes of the Jacobian columns that `upper_gram` multiplies at a time: they stay in the
last-level cache while every row block is multiplied with them (the CI-class CPU has 32 MiB
of it, shared)."""


def upper_gram(jacobians: list[torch.Tensor], step: int) -> torch.Tensor:
    """Σ_J J[i, o]·J[j, o'] over the blocks (n, O, D) for the pairs of examples on and above
    the diagonal of row blocks of ``step`` examples (j ≥ the block's first; the other pairs
    0), as (n, n, O, O), a view of (n·O)×(n·O) storage.

    The columns go in chunks of `GRAM_CHUNK_BYTES`, each multiplied with every row block
    (one GEMM each, added in place by `_gram.product`, which keeps a product of few
    columns accurate in float32): the rows of a chunk come from the cache, not from
    memory, for all but the first row block (with one panel of 22k columns per row block,
    the ResNet row read its 56 MB of Jacobians once per row block).
    """
    n, n_out = jacobians[0].shape[:2]
    rows = n * n_out
    flat = jacobians[0].new_zeros(rows, rows)
    for j in jacobians:
        j = j.reshape(rows, -1)
        width = max(1, GRAM_CHUNK_BYTES // (rows * j.element_size()))
        for c in range(0, j.shape[1], width):
            chunk = j[:, c : c + width]
            for start in range(0, rows, step * n_out):
                block = slice(start, start + step * n_out)
                product(chunk[block], chunk[start:], flat[block, start:])
    return flat.view(n, n_out, n, n_out).transpose(1, 2)
