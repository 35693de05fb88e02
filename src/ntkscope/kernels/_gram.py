"""Gram products of per-example factors, the last step of every eNTK method.

For factors ``g`` of shape (n, O, D) (per-example Jacobians, or output gradients of one
layer), ``Θ̂[n, m, o, o'] = Σ_d g1[n, o, d] g2[m, o', d]``, computed as one GEMM.

Factors may be *output-major*: (n, O, D) views of (O, n, D) storage, the layout of a
backward pass vectorized over the outputs. They are multiplied in that layout, with no
copy; a full-mode result is then a view with the same strides on both sides.
"""

from __future__ import annotations

import torch

OUTPUT_BLOCKS_MIN = 4
"""Fewest outputs for which `symmetric_sum` splits the work by output: (O + 1)/2O of the
GEMMs for O outputs, 0.625 at 4."""

FEW_COLUMNS = 16
"""Below this many columns, the CPU BLAS (MKL) accumulates a float32 product's whole inner
dimension in one running sum: relative error 1.7e-5 at an inner dimension of 368,640 (the
Jacobian of one 64-channel 3×3 convolution, 10 outputs) against 1.0e-6 with 16 columns or
more, measured on data of mean 0.5."""
INNER_CHUNK = 16384
"""Length of the inner-dimension chunks of a product with fewer than `FEW_COLUMNS` columns,
summed in turn (`product`): 2e-7 at 368,640 in the measurement above."""


def product(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ bᵀ`` for (..., n, K) and (..., m, K) (2-D, or batched 3-D), added into ``out``
    when given.

    With fewer than `FEW_COLUMNS` columns m and K above `INNER_CHUNK`, by chunks of the
    inner dimension, each product added in turn, so that float32 rounding grows with the
    chunk's length instead of K's (same multiply-adds; such small products are memory-bound,
    up to 2× slower than one call).
    """
    k = a.shape[-1]
    step = INNER_CHUNK if b.shape[-2] < FEW_COLUMNS and k > INNER_CHUNK else k
    for start in range(0, k, step):
        x, y = a[..., start : start + step], b[..., start : start + step].mT
        if out is None:
            out = x @ y
        elif a.dim() == 2:
            out.addmm_(x, y)
        else:
            out.baddbmm_(x, y)
    return out


def output_major(g: torch.Tensor) -> bool:
    """Whether (n, O, D) factors are a view of contiguous (O, n, D) storage (and not also of
    contiguous (n, O, D) storage, as when n or O is 1)."""
    return g.transpose(0, 1).is_contiguous() and not g.is_contiguous()


def gram(g1: torch.Tensor, g2: torch.Tensor, full: bool) -> torch.Tensor:
    """Σ_d g1[n,o,d] g2[m,o',d]: (n, m, O, O) if full, else summed over o = o' (n, m)."""
    (n, o, d), m = g1.shape, g2.shape[0]
    if output_major(g1) and output_major(g2):
        a, b = g1.transpose(0, 1), g2.transpose(0, 1)  # (O, n, D), contiguous
        if full:
            whole = product(a.reshape(o * n, d), b.reshape(o * m, d))
            return whole.view(o, n, o, m).permute(1, 3, 0, 2)
        out = product(a[0], b[0])
        for k in range(1, o):  # Σ_o, no (n, O·D) copy of either side
            product(a[k], b[k], out)
        return out
    if not full:
        return product(g1.flatten(1), g2.flatten(1))
    return product(g1.reshape(n * o, d), g2.reshape(m * o, d)).view(n, o, m, o).permute(0, 2, 1, 3)


def gram_diagonal(g: torch.Tensor, full: bool) -> torch.Tensor:
    """`gram` of each example with itself: (n, O, O) if full, else (n,)."""
    return product(g, g) if full else (g * g).sum((1, 2))


def symmetric_sum(terms: list[tuple[torch.Tensor | None, torch.Tensor]]) -> torch.Tensor:
    """Σ_t w_t[n, m] · g_t[n, o]·g_t[m, o'] of a block with itself, full mode, exactly
    symmetric (Θ[m, n, o', o] = Θ[n, m, o, o']): (n, n, O, O).

    ``terms``: pairs (w, g) of weights (n, n) (None: all 1) and factors (n, O, D), in either
    layout (copied to output-major when not). The columns of the (O·n)×(O·n) Gram are taken
    one output o at a time, against the rows of the outputs before it (o·n × D × n GEMMs;
    tall products ran 1.25× faster than the same blocks as wide rows, measured), the terms
    weighted and summed into the first one's product while it is in cache, and the block
    written above the diagonal and mirrored below. The blocks o = o' are computed for all
    outputs at once in two strips of rows (the first half of the examples against all, the
    second half against itself: 3/4 of their products) and made exactly symmetric from
    their upper triangles; identity factors (g[n, o] = e_o, a readout layer's output
    gradients) only add their weights there. In all (O + 1)/2O − 1/8O of the whole Gram's
    products (MLP 100-512³-10, N = 128, full mode, 2 threads: 29.3 against 30.2 ms for the
    summing in cache, 28.8 against 29.7 ms for the strips and identity factors, measured).
    The result is a view of (O, n, O, n) storage.
    """
    like = terms[0][1]
    n, n_out = like.shape[:2]
    eye = torch.eye(n_out, dtype=like.dtype, device=like.device)
    identity = [g.shape[2] == n_out and torch.equal(g, eye.expand_as(g)) for _, g in terms]
    ones = [w for (w, _), unit in zip(terms, identity, strict=True) if unit]
    factors = [
        (w, g.transpose(0, 1).contiguous())  # (O, n, D)
        for (w, g), unit in zip(terms, identity, strict=True)
        if not unit
    ]
    acc = like.new_empty(n_out, n, n_out, n)
    if not factors:  # identity factors only: the blocks o ≠ o' are 0
        acc.zero_()
    for o in range(1, n_out if factors else 1):
        block = _weighted(factors, lambda g, o=o: product(g[:o].flatten(0, 1), g[o]).view(o, n, n))
        acc[:o, :, o] = block  # (o', i, j): rows (o', i) for o' < o, columns (o, j)
        acc[o, :, :o] = block.permute(2, 0, 1)  # (j, o', i) ← (o', i, j)
    own = _own_blocks(factors, ones, n_out, like)
    acc.diagonal(dim1=0, dim2=2).copy_(own.permute(1, 2, 0))
    return acc.permute(1, 3, 0, 2)


def _weighted(factors, products, rows=slice(None), cols=slice(None)) -> torch.Tensor | None:
    """Σ_t w_t[rows, cols] ⊙ products(g_t) (w None: 1), summed into the first product (a
    weighted one by one ``addcmul_``, one pass instead of a product and a sum)."""
    total = None
    for w, g in factors:
        part = products(g)
        if total is None:
            total = part if w is None else part.mul_(w[rows, cols])
        elif w is None:
            total.add_(part)
        else:
            total.addcmul_(part, w[rows, cols])
    return total


def _own_blocks(factors, ones, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """The blocks o = o' of `symmetric_sum`, (O, n, n), exactly symmetric: rows of the first
    half of the examples against all columns, the second half against itself, plus the
    weights ``ones`` of the identity factors (None: 1), the upper triangles mirrored."""
    n = like.shape[0]
    own = like.new_zeros(n_out, n, n)
    half = n // 2
    if factors:
        own[:, :half] = _weighted(factors, lambda g: product(g[:, :half], g), rows=slice(0, half))
        own[:, half:, half:] = _weighted(
            factors,
            lambda g: product(g[:, half:], g[:, half:]),
            rows=slice(half, n),
            cols=slice(half, n),
        )
    for w in ones:
        own.add_(1.0 if w is None else w)
    upper = torch.ones(n, n, dtype=torch.bool, device=like.device).triu()
    return torch.where(upper, own, own.transpose(1, 2))
