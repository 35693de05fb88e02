"""Where runs execute: in this process, in local worker processes, or on a Dask cluster.

Every executor runs `ntkscope.runner.task.execute` on each task and yields the outcomes as
they finish. Workers are fresh interpreters (spawned processes, Dask worker processes), and
`execute` fixes thread count and seeds per task, so stored results do not depend on the
executor.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol

import torch

from ntkscope._checks import positive_int
from ntkscope.runner.task import Outcome, Task, execute


class Executor(Protocol):
    """Runs tasks; a context manager that releases its workers on exit."""

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        """Execute every task, yielding outcomes in order of completion."""
        ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


def _lost(task: Task, error: BaseException) -> Outcome:
    """Outcome of a task whose worker died (killed, out of memory, segfault)."""
    return Outcome(task.hash, None, f"worker lost: {type(error).__name__}: {error}", 0.0, 0.0)


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class _Releasing:
    """Context-manager part of an executor: nothing to release unless overridden."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        """Release the workers."""


class InlineExecutor(_Releasing):
    """Runs the tasks one after another in this process (``ntkscope study run``).

    Each task seeds the global generators; torch's thread count is restored afterwards.
    """

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        """Execute every task in order."""
        threads = torch.get_num_threads()
        try:
            yield from map(execute, tasks)
        finally:
            torch.set_num_threads(threads)


class LocalExecutor(_Releasing):
    """A pool of spawned worker processes on this machine.

    Args:
        workers: processes; default one per core.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = cores() if workers is None else positive_int(workers, "workers")
        context = multiprocessing.get_context("spawn")  # no fork of a threaded torch process
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context)

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        """Submit every task, yield outcomes as they complete."""
        futures = {self._pool.submit(execute, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as error:  # the worker process died
                yield _lost(futures[future], error)

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the block starts processes, which inherit that: Ctrl-C in a
    terminal signals every process of the foreground group, and local Dask workers (which
    install no handler) then died printing tracebacks. This process alone handles Ctrl-C
    and closes them. The price: Ctrl-C while the cluster starts (seconds) is lost. Only in
    the main thread (elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class DaskExecutor(_Releasing):
    """``dask.distributed``: an existing scheduler, or a LocalCluster of worker processes.

    Args:
        address: scheduler address (``tcp://host:8786``; any cluster, e.g. dask-jobqueue).
        local_workers: with no address, start a LocalCluster of this many single-threaded
            worker processes.
    """

    def __init__(self, address: str | None = None, local_workers: int | None = None) -> None:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise ValueError(
                "scheduler: dask.distributed is not installed (pip install 'ntkscope[dask]')"
            ) from None
        if (address is None) == (local_workers is None):
            raise ValueError("scheduler: give either a scheduler address or a local worker count")
        self._cluster = None
        if address is None:
            with _sigint_ignored():  # the worker processes inherit it
                self._cluster = LocalCluster(
                    n_workers=positive_int(local_workers, "dask_local"),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
        try:
            self._client = Client(address or self._cluster, timeout="30s")
        except (OSError, ValueError) as error:  # unreachable, or not an address
            self._close_cluster()
            raise ValueError(f"scheduler: cannot connect to {address!r}: {error}") from None

    @property
    def client(self) -> Any:
        """The ``dask.distributed.Client`` (for jobs other than sweeps, e.g. tiled arrays)."""
        return self._client

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        """Submit every task to the cluster, yield outcomes as they complete."""
        from dask.distributed import as_completed as dask_completed

        futures = {
            self._client.submit(execute, task, key=f"ntkscope-{task.hash}", pure=False): task
            for task in tasks
        }
        for future in dask_completed(futures):
            try:
                yield future.result()
            except Exception as error:  # the worker died (KilledWorker) or was lost
                yield _lost(futures[future], error)

    def _close_cluster(self) -> None:
        if self._cluster is not None:
            self._cluster.close()

    def __exit__(self, kind: type | None = None, *exc: object) -> None:
        """Close the client and the LocalCluster; after Ctrl-C the LocalCluster's logs are
        silenced first: its workers, shut down in the middle of a task, log tracebacks
        (lost heartbeats, lost data) that say nothing to the user."""
        interrupted = kind is not None and issubclass(kind, KeyboardInterrupt)
        with _silenced(self._client) if interrupted and self._cluster else contextlib.nullcontext():
            self._client.close()
            self._close_cluster()


@contextlib.contextmanager
def _silenced(client: Any) -> Iterator[None]:
    """The ``distributed`` logs of the client's workers and of this process (scheduler of a
    LocalCluster) silenced; this process's restored at the end."""
    logger = logging.getLogger("distributed")
    level = logger.level
    with contextlib.suppress(Exception):  # a worker already gone
        client.run(_silence)
    _silence()
    try:
        yield
    finally:
        logger.setLevel(level)


def _silence() -> None:
    logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)
