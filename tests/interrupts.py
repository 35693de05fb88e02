"""Fake training loops for the tests of how studies treat interrupted and diverged runs, and
the SIGINT that a command run as a child process finds."""

import signal

import pytest

from ntkscope.dynamics import Recorder
from ntkscope.dynamics import train as real_train


class _CtrlC(Recorder):
    """Presses Ctrl-C at step 2."""

    def record(self, state):
        if state.step == 2:
            raise KeyboardInterrupt
        return {}


def _interrupted(*args, recorders, **kwargs):
    return real_train(*args, recorders=[*recorders, _CtrlC()], **kwargs)


def _diverging(*args, **kwargs):
    trajectory = real_train(*args, **kwargs)
    trajectory.stopped = "diverged"  # lr_fraction < 1 keeps real runs stable
    return trajectory


INTERRUPTED_OR_DIVERGED = pytest.mark.parametrize(
    ("fake_train", "error", "match"),
    [
        (_interrupted, KeyboardInterrupt, "interrupted"),
        (_diverging, RuntimeError, "lr_fraction: training diverged"),
    ],
)
"""Parametrizes ``fake_train`` (to patch over a study's ``train``), the expected error and
its message: Ctrl-C must reach the runner as KeyboardInterrupt (the run stays unfinished,
not failed); only a diverged run is blamed on ``lr_fraction``."""


def interruptible() -> None:
    """In the child before exec: SIGINT's default action, as a terminal's Ctrl-C finds it. A
    process that ignores SIGINT passes that on to its children, and one of the libraries the
    suite loads into a pytest worker (a worker runs many tests) can leave it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
