"""Jobs on several threads, each with one torch thread (`_threads.run_jobs`): exceptions
and Ctrl-C stop them, torch's thread count is restored."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

from ntkscope.kernels._threads import run_jobs

pytestmark = pytest.mark.usefixtures("two_torch_threads")


def _jobs(count: int, fail_at: int, error: BaseException, done: list[int]):
    def job(i: int):
        def run() -> None:
            time.sleep(0.002)
            if i == fail_at:
                raise error
            done.append(i)

        return run

    return (job(i) for i in range(count))


@pytest.mark.parametrize("error", [ValueError("job 5 failed"), KeyboardInterrupt()])
def test_an_exception_in_a_job_propagates_and_stops_the_others(error):
    done: list[int] = []
    with pytest.raises(type(error)) as raised:
        run_jobs(_jobs(200, 5, error, done), 2)
    assert raised.value is error
    assert len(done) < 100  # stopped after its current job (not timed: 200 if it ran on)
    assert torch.get_num_threads() == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("ntkscope-job")]


def test_ctrl_c_during_concurrent_jobs_stops_them(monkeypatch):
    """SIGINT while the main thread waits for the job threads: KeyboardInterrupt there,
    the job threads stop after their current job, torch's threads are restored."""
    done: list[int] = []
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_jobs(_jobs(2000, -1, ValueError(), done), 2)  # 2 s if not stopped
    finally:
        timer.cancel()
    assert 0 < len(done) < 1000
    assert torch.get_num_threads() == 2


def test_overlapping_callers_restore_the_thread_count_they_found():
    """Another Python thread starts concurrent jobs while ours run, finding torch at 1
    thread (our change), and finishes after ours: torch is back at 2 threads once both are
    done, in our thread and for new threads, not at the 1 the other caller found."""
    other_started, ours_done = threading.Event(), threading.Event()

    def other_job():
        other_started.set()
        assert ours_done.wait(10)

    def other_caller() -> None:
        run_jobs(iter([other_job, lambda: None]), 2)

    def our_job():
        threading.Thread(target=other_caller, name="caller").start()
        assert other_started.wait(10)

    run_jobs(iter([our_job, lambda: None]), 2)
    ours_done.set()
    [caller] = [t for t in threading.enumerate() if t.name == "caller"]
    caller.join(10)
    assert not caller.is_alive() and torch.get_num_threads() == 2
    seen: list[int] = []  # a new thread starts from the process-wide count
    fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    fresh.start()
    fresh.join()
    assert seen == [2]
