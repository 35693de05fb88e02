"""Time per pair of images of `infinite_cnn_kernels` against the eNTK of a width-512 CNN.

    python benchmarks/infinite_cnn.py

Myrtle-style CNN of depth 3, ReLU, GAP readout, on N standard Gaussian 1-channel images
with x2 = None: 8×8 images with a 2×2 pooling after each of the first two blocks (the
`ntkscope.models.cnn` default), 14×14 with one pooling; then 14×14 with
``readout="flatten"`` and no pooling, which needs only the p = p' positions. The eNTK is
`ntkscope.empirical_ntk(mode="trace")` of the float32 network of width 512 on the same
images. "ms/pair" divides by the N² entries.
"""

from __future__ import annotations

import time

import torch

from ntkscope.kernels.empirical import empirical_ntk
from ntkscope.kernels.infinite_cnn import infinite_cnn_kernels
from ntkscope.models.builders import cnn

DEPTH, WIDTH = 3, 512
CASES = [
    (8, 32, {}),
    (14, 8, {"pool_after": [0]}),  # 14 = 2 · 7: a single pooling
    (14, 32, {"readout": "flatten", "pool_after": []}),
]


def seconds(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, depth {DEPTH}")
    generator = torch.Generator().manual_seed(0)
    for side, n, options in CASES:
        x = torch.randn(n, 1, side, side, generator=generator)
        infinite_cnn_kernels(x[:2], depth=DEPTH, **options)  # warm-up
        infinite = seconds(infinite_cnn_kernels, x, depth=DEPTH, **options)
        model = cnn(1, WIDTH, DEPTH, 1, image_size=side, seed=0, **options)
        empirical_ntk(model, x[:2], mode="trace")  # warm-up
        entk = seconds(empirical_ntk, model, x, mode="trace")
        label = f"{side}x{side} {options.get('readout', 'gap')}"
        print(
            f"{label:13s} N={n:3d}: infinite {1e3 * infinite / n**2:8.3f} ms/pair, "
            f"eNTK width {WIDTH} {1e3 * entk / n**2:8.3f} ms/pair, ratio {infinite / entk:6.2f}"
        )


if __name__ == "__main__":
    main()
