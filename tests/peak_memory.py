"""Peak working memory and time of a kernel computation, measured in a fresh process.

``measure(code)`` runs ``code`` in a new Python process. The code defines ``run()``,
which computes and returns a tensor or a tuple of tensors (the outputs), and may define
``warmup()``, called first. The process records its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after one ``run()``, and its resident memory
just before (``/proc/self/statm``, after the imports, the set-up in ``code`` and the
warm-up): the working memory is the difference minus the bytes of the outputs. An earlier
peak (the imports) can only make it larger, never hide memory the call used. The warm-up
(the same call on a few examples) pages in the library code and the thread pools that the
first call would otherwise count.

Used by the memory-budget tests (``tests/kernels/test_memory_budget.py``) and by
``benchmarks/memory_budget.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

_DRIVER = """
import json, resource, time
import torch

torch.set_num_threads({threads})
{code}

def _peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def _now():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()

if "warmup" in globals():
    warmup()
_base = _now()
_start, _cpu = time.perf_counter(), time.process_time()
_out = run()
_seconds, _cpu_seconds = time.perf_counter() - _start, time.process_time() - _cpu
_outs = _out if isinstance(_out, tuple) else (_out,)
_bytes = sum(t.numel() * t.element_size() for t in _outs)
print(json.dumps({{
    "growth": _peak() - _base, "outputs": _bytes, "seconds": _seconds, "cpu_seconds": _cpu_seconds
}}))
"""


def measure(code: str, threads: int = 1, timeout: float = 600) -> dict[str, float]:
    """{"working": bytes, "outputs": bytes, "seconds": s, "cpu_seconds": s} of ``run()``.

    ``working`` is the growth of the peak resident memory during ``run()`` minus the
    outputs' bytes; ``threads``: torch's intra-op threads in the process.
    """
    source = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    program = _DRIVER.format(threads=threads, code=textwrap.dedent(code))
    # started by a small shell, not by this (large) process: a process's ru_maxrss starts at
    # the resident memory of its parent when it was forked
    done = subprocess.run(
        ["/bin/sh", "-c", '"$0" -c "$1"; exit $?', sys.executable, program],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the measured process failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["working"] = result["growth"] - result["outputs"]
    return result
