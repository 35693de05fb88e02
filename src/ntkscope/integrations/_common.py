"""What the training-loop front ends share: the monitor they drive and the report they write."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ntkscope._batch import Batch
from ntkscope._checks import positive_int
from ntkscope.diagnosis import Diagnosis
from ntkscope.dynamics import Monitor, Recorder
from ntkscope.log import PREFIX

REPORT_FOLDER = "ntkscope"
"""The report's folder inside the trainer's log (or output) directory, by default."""


class Front:
    """A `Monitor` created when training starts, on the model the trainer trains.

    Args:
        probe: the probe batch (a tensor, a tuple, or a dict such as ``input_ids`` and
            ``attention_mask`` taken from the user's data set).
        every: optimizer steps between records of the default recorders.
        recorders: `Recorder` objects (None: `ntkscope.Monitor`'s defaults, kernel and
            parameter change).
        targets: the probe's targets, for the kernel alignment and the loss recorders.
        report_dir: where the diagnosis report goes at the end of training (None: the
            trainer's log directory, folder ``ntkscope``); ``False``: no report.
    """

    def __init__(
        self,
        probe: Batch,
        every: int = 50,
        recorders: Sequence[Recorder] | None = None,
        *,
        targets: torch.Tensor | None = None,
        report_dir: str | Path | bool | None = None,
    ) -> None:
        self.probe, self.targets = probe, targets
        self.every = positive_int(every, "every")
        self.recorders = None if recorders is None else list(recorders)
        self.report_dir = report_dir
        self.monitor: Monitor | None = None
        self.diagnosis: Diagnosis | None = None

    def _create(self, model: nn.Module) -> Monitor:
        self.monitor = Monitor(
            model, self.probe, self.recorders, every=self.every, targets=self.targets
        )
        return self.monitor

    def frame(self) -> pd.DataFrame:
        """The records, one row per recorded step, as `ntkscope.Trajectory.frame`."""
        if self.monitor is None:
            raise RuntimeError("frame: training has not started, nothing was recorded")
        return self.monitor.frame()

    def _report(self, default: Path) -> Path | None:
        """The diagnosis of the run (kept in ``diagnosis``), written as ntkscope's report."""
        self.diagnosis = self.monitor.diagnosis()
        if self.report_dir is False:
            return None
        from ntkscope.report.diagnosis import write_report  # matplotlib: only to write one

        out = default / REPORT_FOLDER if self.report_dir in (None, True) else self.report_dir
        return write_report(self.diagnosis, out)


def prefixed(row: dict[str, float]) -> dict[str, float]:
    """A record row as logged metrics: ``ntk/<name>``, without the step."""
    return {PREFIX + name: float(value) for name, value in row.items() if name != "step"}
