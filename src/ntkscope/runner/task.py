"""One run of a study: the task sent to a worker and the outcome it sends back.

`execute` is the only code that runs in a worker (a local process or a Dask worker). It sets
the thread count and seeds the global random generators from the config's hash before the
study runs, so that a result does not depend on the executor or on the runs before it in the
same worker. Anything the study raises becomes a failed outcome with its traceback.
"""

from __future__ import annotations

import platform
import random
import socket
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch

import ntkscope
from ntkscope import studies
from ntkscope.studies import Result


@dataclass(frozen=True)
class Task:
    """What a worker needs: the study's name, the config as JSON (its execution settings
    included), its hash, torch threads."""

    study: str
    hash: str
    config: str
    threads: int = 1


@dataclass(frozen=True)
class Outcome:
    """What a worker returns: a result or an error, with times (epoch s) and versions."""

    hash: str
    result: Result | None
    error: str | None
    started: float
    finished: float
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The study returned a result."""
        return self.error is None


def versions() -> dict[str, str]:
    """Host and versions of the software that a result depends on."""
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "ntkscope": ntkscope.__version__,
    }


def seed_everything(config_hash: str) -> None:
    """Seed Python's, NumPy's and torch's global generators from the config's hash."""
    seed = int(config_hash[:15], 16)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _ignore_progress(done: int, total: int) -> None:
    """Workers do not report progress within a run."""


def execute(task: Task) -> Outcome:
    """Run one task; never raises (failures are returned with their traceback)."""
    started = time.time()
    try:
        torch.set_num_threads(task.threads)
        seed_everything(task.hash)
        study = studies.get(task.study)
        result = study.run(study.config.model_validate_json(task.config), _ignore_progress)
        if not isinstance(result, Result):
            raise TypeError(f"{task.study}.run returned {type(result).__name__}, not a Result")
        error = None
    except Exception:  # a failed run is data: the sweep goes on
        result, error = None, traceback.format_exc(limit=-8)
    return Outcome(task.hash, result, error, started, time.time(), versions())
