"""Preprocessing shared by the data sets: per-example standardization and image pooling."""

from __future__ import annotations

import torch


def standardize(x: torch.Tensor, name: str) -> torch.Tensor:
    """Each row of ``x`` (N, d) to mean 0 and variance 1 over its own d entries: ``‖x‖² = d``.

    Per-example standardization puts every input on the sphere of radius √d, where the NTK
    of docs/conventions.md depends on the angle between inputs alone. It is invariant to the pixel
    scale (dividing by 255 or 16 first changes nothing).

    Raises:
        ValueError: if an entry is NaN or infinite, or a row is constant (its standardization
            is undefined), naming ``name``.
    """
    x = x.to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"data: {name!r} has NaN or infinite inputs")
    std = x.std(dim=1, correction=0, keepdim=True)
    constant = (std == 0).flatten().nonzero().flatten()
    if constant.numel():
        raise ValueError(
            f"data: {name!r} has {constant.numel()} constant example(s) (first at index "
            f"{int(constant[0])}); per-example standardization needs at least two distinct values"
        )
    return (x - x.mean(dim=1, keepdim=True)) / std


def pool(
    x: torch.Tensor, image_shape: tuple[int, int, int], size: int
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Average ``size``-pixel-wide images out of square ``image_shape`` ones (k×k blocks).

    Args:
        x: flat images (N, C·H·W).
        image_shape: (C, H, W) with H = W, a multiple of ``size``.
        size: side of the pooled images.

    Returns:
        The pooled flat images (N, C·size²) and their shape (C, size, size).
    """
    channels, side, _ = image_shape
    k = side // size
    images = x.reshape(len(x), channels, size, k, size, k).mean(dim=(3, 5))
    return images.reshape(len(x), channels * size * size), (channels, size, size)  # N may be 0
