"""Overhead of the recorders on training: steps per second with and without them.

An MLP of width 512 (depth 3, NTK parameterization) trained by SGD on 1,024 digits in
mini-batches of 128 for 500 steps; the KernelRecorder computes the eNTK on a 256-example
probe every 50 steps (11 kernels). Prints the best of three runs of each and the ratio
(with recorders / without, in speed; the target is at least 0.5).

    python benchmarks/recorders.py
"""

from __future__ import annotations

import time

import ntkscope as ns

STEPS, EVERY, REPEATS = 500, 50, 3


def seconds(recorders) -> float:
    data = ns.data.load("digits", 1024, seed=0)
    model = ns.models.mlp(64, 512, 3, 10, seed=0)
    start = time.perf_counter()
    ns.train(model, data, lr=0.5, steps=STEPS, batch_size=128, recorders=recorders())
    return time.perf_counter() - start


def main() -> None:
    probe = ns.data.load("digits", 256, seed=1).x
    settings = {
        "no recorders": list,
        "KernelRecorder (256 probe, every 50)": lambda: [ns.KernelRecorder(probe, EVERY)],
        "+ ParameterRecorder, LossRecorder (every 50)": lambda: [
            ns.KernelRecorder(probe, EVERY),
            ns.ParameterRecorder(EVERY),
            ns.LossRecorder(EVERY),
        ],
    }
    seconds(list)  # warm-up
    times = {name: min(seconds(make) for _ in range(REPEATS)) for name, make in settings.items()}
    base = times["no recorders"]
    for name, t in times.items():
        print(f"{name:48s} {STEPS / t:8.1f} steps/s   speed ratio {base / t:.2f}")


if __name__ == "__main__":
    main()
