"""The infinite-width reference of `diagnose`: Θ∞ of the user's own architecture.

`ntkscope.infinite_width` gives the NTK of any network it supports (its σ's read at
initialization, before training); the distance of the eNTK at initialization to it is
reported, with the kernel program it was computed from, or why there is none.
"""

from __future__ import annotations

import torch
from torch import nn

from ntkscope import metrics
from ntkscope.kernels import ProgramError, infinite_width
from ntkscope.kernels.dual import Pair

MAX_POSITION_PAIR_ENTRIES = 2 * 10**8
"""Skip the reference when N² × (position pairs per input pair) exceeds this (about a
minute of closed-form work on one core; a 28×28 CNN on 128 probes is ~10¹¹)."""


def infinite_reference(model: nn.Module, probe: torch.Tensor) -> tuple[Pair | None, str]:
    """((NNGP, NTK) on ``probe``, the kernel program), or (None, why not).

    ``model`` must still be at its initialization: plain torch layers' σ_w², σ_b² are read
    from its parameters.
    """
    try:
        kernel_fn = infinite_width(model)
        pairs = kernel_fn.position_pairs(probe[:1])
        if pairs * len(probe) ** 2 > MAX_POSITION_PAIR_ENTRIES:
            return None, (
                f"n/a: {pairs} position pairs per input pair make the infinite NTK of "
                f"{len(probe)} probes too costly here (use ntkscope.infinite_width directly)"
            )
        kernels = kernel_fn(probe)
    except ProgramError as error:
        return None, f"n/a: {error}"
    return kernels, "\n".join(kernel_fn.layers)


def infinite_distances(infinite: Pair | None, kernels: list[torch.Tensor]) -> dict:
    """Relative distances of one seed's eNTK and of the seed mean to Θ∞ (None without Θ∞)."""
    if infinite is None:
        return {"infinite_distance_single": None, "infinite_distance_mean": None}
    ntk = infinite[1]
    return {
        "infinite_distance_single": metrics.relative_distance(kernels[0], ntk),
        "infinite_distance_mean": metrics.relative_distance(torch.stack(kernels).mean(0), ntk),
    }
