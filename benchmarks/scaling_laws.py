"""Kernel phase against training phase of the scaling_laws study, mid-size config.

    python benchmarks/scaling_laws.py [largest_n]

One run of `ntkscope.studies.scaling_laws` on the single-index task with six sizes up to
``largest_n`` (default 1,500), three seeds, width 256 and three after-kernels. The kernel
phase (eNTK at initialization and after training, infinite NTK/NNGP, and every float64
kernel regression: a cached Cholesky per ridge, kernel, n and seed, reused by every
target) and the training phase (full-batch SGD with early stopping) are
timed inside the study; both and their ratio are printed. Other load on the machine makes
both numbers noisy.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ntkscope.studies.scaling_laws import Config, run


def main(largest: int = 1500) -> None:
    sizes = tuple(int(n) for n in np.geomspace(largest / 15, largest, 6).round())
    config = Config(sizes=sizes, width=256, after_kernel_sizes=sizes[::2] + sizes[-1:],
                    n_val=500, n_test=1000, max_steps=500)  # fmt: skip
    start = time.perf_counter()
    metrics = run(config, lambda done, total: None).metrics
    total = time.perf_counter() - start
    kernel, train = metrics["kernel_seconds"], metrics["train_seconds"]
    print(
        f"sizes {list(sizes)}, 3 seeds, width 256, {len(config.after_kernel_sizes)} after-kernels"
    )
    print(f"kernel phase {kernel:.1f} s, training phase {train:.1f} s, "
          f"ratio kernel/train {kernel / train:.2f}; total {total:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
