"""`NTKMonitor`: ntkscope's recorders in a PyTorch Lightning ``Trainer`` (``ntkscope[lightning]``).

::

    from ntkscope.integrations.lightning import NTKMonitor

    monitor = NTKMonitor(probe_x, every=50)
    trainer = lightning.Trainer(max_epochs=2, callbacks=[monitor])
    trainer.fit(module, loader)
    monitor.frame()                  # one row per recorded step, as ntkscope.train's
    monitor.diagnosis.verdict        # and the report in <log_dir>/ntkscope/index.html

The callback creates a `ntkscope.Monitor` on the ``LightningModule`` when training starts,
records after every optimizer step that is due (``trainer.global_step``; with gradient
accumulation, once per optimizer step), and logs each record through the trainer's own
loggers (``log_metrics``, as ``ntk/<name>``). A ``TensorBoardLogger`` also receives the
eNTK spectrum at every kernel record and, at the end, the report's figures and the verdict
(`ntkscope.log`). At the end of training it records the last step and writes ntkscope's
diagnosis report (`ntkscope.report.diagnosis`).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from ntkscope.dynamics import KernelRecorder
from ntkscope.integrations._common import Front, prefixed
from ntkscope.log import Logger, to_tensorboard

__all__ = ["NTKMonitor"]


class NTKMonitor(Front, Callback):
    """A Lightning ``Callback`` driving a `ntkscope.Monitor` (module docstring); its
    arguments are those of `ntkscope.integrations._common.Front`.

    Attributes:
        monitor: the `ntkscope.Monitor` (None before training starts).
        diagnosis: the `ntkscope.Diagnosis` of the run, once training has ended.
    """

    def _extras(self, trainer: Trainer) -> list[Logger]:
        return [to_tensorboard(lg.experiment) for lg in trainer.loggers
                if isinstance(lg, TensorBoardLogger)]  # fmt: skip

    def _log(self, trainer: Trainer, row: dict[str, float]) -> None:
        if len(row) <= 1:
            return
        step = int(row["step"])
        for logger in trainer.loggers:
            logger.log_metrics(prefixed(row), step=step)
        kernels = [r for r in self.monitor.recorders if isinstance(r, KernelRecorder)]
        for extra in self._extras(trainer):
            for recorder in kernels:
                if recorder.latest_step == step:
                    extra.spectrum(step, recorder.latest)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Create the monitor on ``pl_module`` and record step 0."""
        self._log(trainer, self._create(pl_module).start())

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        """Record after an optimizer step, when one is due."""
        step = trainer.global_step
        if step == self.monitor.state.step:  # gradient accumulation: no optimizer step yet
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        loss = None if loss is None else float(loss)
        self._log(trainer, self.monitor.step(step, loss=loss, batch=batch))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record the last step and write the diagnosis report."""
        self._log(trainer, self.monitor.finish())
        self._report(Path(trainer.log_dir or trainer.default_root_dir))
        for extra in self._extras(trainer):
            extra.report(self.diagnosis)
