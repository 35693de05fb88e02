"""Overhead of the recorders on training: steps per second with and without them.

An MLP of width 512 (depth 3, NTK parameterization) trained by SGD on 1,024 digits in
mini-batches of 128 for 500 steps; the KernelRecorder computes the eNTK on a 256-example
probe every 50 steps (11 kernels). Two loops:

- ``ntkscope.train``, without recorders and with them (target: speed ratio ≥ 0.5);
- a PyTorch Lightning ``Trainer`` (CPU), without callbacks and with
  ``ntkscope.integrations.lightning.NTKMonitor`` (target: time ratio ≤ 1.25, i.e. speed
  ratio ≥ 0.8; skipped without ``lightning``).

Each setting runs ``--repeats`` times (5), the settings alternating so that a change of
load hits every setting alike; each is compared with its loop's baseline from the same run
by the best times (least noise) and by the median times (what a typical run costs).

    python benchmarks/recorders.py                  # wall time, torch's threads (~2 min)
    python benchmarks/recorders.py --cpu-time       # one thread, the process's CPU time
    python benchmarks/recorders.py --only lightning # the Lightning loop only

On a machine shared with other jobs, wall times mostly measure the scheduler; under
``--cpu-time`` every time is this process's CPU time on one thread, which other jobs
disturb far less.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time

import torch
import torch.nn.functional as F

import ntkscope as ns

STEPS, EVERY, BATCH = 500, 50, 128

CLOCK = time.perf_counter
"""Wall time, or the process's CPU time under ``--cpu-time``."""


def _data():
    return ns.data.load("digits", 1024, seed=0)


def seconds(recorders) -> float:
    data, model = _data(), ns.models.mlp(64, 512, 3, 10, seed=0)
    start = CLOCK()
    ns.train(model, data, lr=0.5, steps=STEPS, batch_size=BATCH, recorders=recorders())
    return CLOCK() - start


def lightning_seconds(callbacks) -> float:
    """Time of ``Trainer.fit`` for STEPS steps, MSE on one-hot labels as ``ntkscope.train``."""
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = ns.models.mlp(64, 512, 3, 10, seed=0)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return 0.5 * (self(x) - F.one_hot(y, 10).float()).pow(2).sum() / len(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    data = _data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x, data.y), batch_size=BATCH, shuffle=True
    )
    trainer = pl.Trainer(
        max_steps=STEPS, accelerator="cpu", devices=1, logger=False, callbacks=callbacks(),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    start = CLOCK()
    trainer.fit(Module(), loader)
    return CLOCK() - start


def settings(probe, loops: set[str]) -> dict[str, tuple[str, object]]:
    """name -> (baseline name, timed callable), for the loops asked for."""
    rows = {}
    if "train" in loops:
        rows["no recorders"] = ("no recorders", lambda: seconds(list))
        rows["KernelRecorder (256 probe, every 50)"] = (
            "no recorders",
            lambda: seconds(lambda: [ns.KernelRecorder(probe, EVERY)]),
        )
        rows["+ ParameterRecorder, LossRecorder (every 50)"] = (
            "no recorders",
            lambda: seconds(
                lambda: [
                    ns.KernelRecorder(probe, EVERY),
                    ns.ParameterRecorder(EVERY),
                    ns.LossRecorder(EVERY),
                ]
            ),
        )
    if "lightning" in loops and importlib.util.find_spec("lightning") is not None:
        from ntkscope.integrations.lightning import NTKMonitor

        rows["Lightning, no callback"] = ("Lightning, no callback", lambda: lightning_seconds(list))
        rows["Lightning + NTKMonitor (KernelRecorder)"] = (
            "Lightning, no callback",
            lambda: lightning_seconds(
                lambda: [
                    NTKMonitor(probe, EVERY, [ns.KernelRecorder(probe, EVERY)], report_dir=False)
                ]
            ),
        )
    return rows


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each setting")
    parser.add_argument("--only", default="train,lightning", help="train, lightning or both")
    parser.add_argument("--cpu-time", action="store_true", help="one thread; CPU time")
    return parser.parse_args()


def main() -> None:
    global CLOCK
    args = _options()
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    if args.cpu_time:
        torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.1f}, {'CPU' if args.cpu_time else 'wall'} time, "
        f"{args.repeats} repeats"
    )
    probe = ns.data.load("digits", 256, seed=1).x
    timed = settings(probe, set(args.only.split(",")))
    for name in {baseline for baseline, _ in timed.values()}:  # warm-up: each loop once
        timed[name][1]()
    times: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.repeats):  # alternating, so that load changes hit every setting alike
        for name, (_, run) in timed.items():
            times[name].append(run())
    for name, (baseline, _) in timed.items():
        best, base = min(times[name]), min(times[baseline])
        median = statistics.median(times[name]) / statistics.median(times[baseline])
        print(f"{name:48s} {STEPS / best:8.1f} steps/s   time ratio: best {best / base:.2f}, "
              f"median {median:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
