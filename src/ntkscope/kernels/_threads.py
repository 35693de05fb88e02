"""Jobs on several Python threads at once, each with one torch thread.

On a CPU, torch splits an operation over its threads only when it is large (an
element-wise pass from 32,768 entries on, a matrix product by its blocks), and every split
costs a start and a join of the threads. Work made of many small independent operations
(tiles of a small budget, the per-example products of a structured eNTK's row blocks) runs
faster as whole jobs on separate threads, each on one torch thread, and stays fast when
other processes share the cores (a split then waits for a descheduled thread). Each job
runs on one thread whichever thread takes it, so its results do not depend on the order.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch


def run_jobs(jobs: Iterable[Callable[[], None]], workers: int) -> None:
    """Run ``jobs`` in order, or ``workers`` at a time, each thread with one torch thread.

    The jobs are taken in order by whichever thread is free. The first exception
    (KeyboardInterrupt included) stops the other threads after their current job and is
    raised here; torch's thread count is restored in any case. The threads run with the
    caller's grad and inference modes (both are per thread in torch).
    """
    if workers == 1:
        for job in jobs:
            job()
        return
    jobs, lock, stop = iter(jobs), threading.Lock(), threading.Event()
    modes = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def work() -> None:
        with torch.inference_mode(modes[0]), torch.set_grad_enabled(modes[1]):
            while not stop.is_set():
                with lock:
                    job = next(jobs, None)
                if job is None:
                    return
                try:
                    job()
                except BaseException:
                    stop.set()
                    raise

    with _one_torch_thread(), ThreadPoolExecutor(workers, "ntkscope-job") as pool:
        futures = [pool.submit(work) for _ in range(workers)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            stop.set()
            raise


_thread_count = threading.Lock()
_thread_count_users = 0
_thread_count_before = 0


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """torch's thread count is 1 inside (new threads read it when they start).

    The count is both per thread (OpenMP's, set in the calling thread) and process-wide
    (torch's default for new threads, MKL's): each caller sets and restores it in its own
    thread, and callers that overlap (other Python threads) restore the count that the first
    of them found, not the 1 a later one finds while the first is inside.
    """
    global _thread_count_users, _thread_count_before
    with _thread_count:
        if _thread_count_users == 0:
            _thread_count_before = torch.get_num_threads()
        _thread_count_users += 1
        before = _thread_count_before
        torch.set_num_threads(1)
    try:
        yield
    finally:
        with _thread_count:
            _thread_count_users -= 1
            torch.set_num_threads(before)
