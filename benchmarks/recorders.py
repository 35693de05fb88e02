"""Overhead of the recorders on training: steps per second with and without them.

An MLP of width 512 (depth 3, NTK parameterization) trained by SGD on 1,024 digits in
mini-batches of 128 for 500 steps; the KernelRecorder computes the eNTK on a 256-example
probe every 50 steps (11 kernels). Two loops:

- ``ntkscope.train``, without recorders and with them (target: speed ratio ≥ 0.5);
- a PyTorch Lightning ``Trainer`` (CPU), without callbacks and with
  ``ntkscope.integrations.lightning.NTKMonitor`` (target: time ratio ≤ 1.25, i.e. speed
  ratio ≥ 0.8; skipped without ``lightning``).

Each setting runs REPEATS times, the settings alternating, and the best time of each is
compared with its loop's baseline from the same run.

    python benchmarks/recorders.py
"""

from __future__ import annotations

import importlib.util
import time

import torch
import torch.nn.functional as F

import ntkscope as ns

STEPS, EVERY, BATCH, REPEATS = 500, 50, 128, 3


def _data():
    return ns.data.load("digits", 1024, seed=0)


def seconds(recorders) -> float:
    data, model = _data(), ns.models.mlp(64, 512, 3, 10, seed=0)
    start = time.perf_counter()
    ns.train(model, data, lr=0.5, steps=STEPS, batch_size=BATCH, recorders=recorders())
    return time.perf_counter() - start


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
    start = time.perf_counter()
    trainer.fit(Module(), loader)
    return time.perf_counter() - start


def settings(probe) -> dict[str, tuple[str, object]]:
    """name -> (baseline name, timed callable)."""
    rows = {
        "no recorders": ("no recorders", lambda: seconds(list)),
        "KernelRecorder (256 probe, every 50)": (
            "no recorders",
            lambda: seconds(lambda: [ns.KernelRecorder(probe, EVERY)]),
        ),
        "+ ParameterRecorder, LossRecorder (every 50)": (
            "no recorders",
            lambda: seconds(
                lambda: [
                    ns.KernelRecorder(probe, EVERY),
                    ns.ParameterRecorder(EVERY),
                    ns.LossRecorder(EVERY),
                ]
            ),
        ),
    }
    if importlib.util.find_spec("lightning") is not None:
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


def main() -> None:
    probe = ns.data.load("digits", 256, seed=1).x
    timed = settings(probe)
    seconds(list)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(REPEATS):  # alternating, so that load changes hit every setting alike
        for name, (_, run) in timed.items():
            times[name].append(run())
    for name, (baseline, _) in timed.items():
        best, base = min(times[name]), min(times[baseline])
        print(f"{name:48s} {STEPS / best:8.1f} steps/s   speed ratio {base / best:.2f}   "
              f"time ratio {best / base:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
