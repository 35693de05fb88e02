"""Gram products of per-example factors, the last step of every eNTK method.

For factors ``g`` of shape (n, O, D) (per-example Jacobians, or output gradients of one
layer), ``Θ̂[n, m, o, o'] = Σ_d g1[n, o, d] g2[m, o', d]``, computed as one GEMM.
"""

from __future__ import annotations

import torch


def gram(g1: torch.Tensor, g2: torch.Tensor, full: bool) -> torch.Tensor:
    """Σ_d g1[n,o,d] g2[m,o',d]: (n, m, O, O) if full, else summed over o = o' (n, m)."""
    if not full:
        return g1.flatten(1) @ g2.flatten(1).T
    (n, o, d), m = g1.shape, g2.shape[0]
    return (g1.reshape(n * o, d) @ g2.reshape(m * o, d).T).view(n, o, m, o).permute(0, 2, 1, 3)


def gram_diagonal(g: torch.Tensor, full: bool) -> torch.Tensor:
    """`gram` of each example with itself: (n, O, O) if full, else (n,)."""
    return g @ g.transpose(1, 2) if full else (g * g).sum((1, 2))
