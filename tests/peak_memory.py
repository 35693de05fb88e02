"""Peak working memory and time of a kernel computation, measured in a fresh process.

``measure(code)`` runs ``code`` in a new Python process. The code defines ``run()``,
which computes and returns a tensor or a tuple of tensors (the outputs), and may define
``warmup()``, called first. The process records its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after the imports, the set-up in ``code``
and the warm-up, then runs ``run()`` once: the working memory is the growth of the peak
minus the bytes of the outputs. The warm-up (the same call on a few examples) pages in the
library code and the thread pools that the first call would otherwise count.

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

if "warmup" in globals():
    warmup()
_base = _peak()
_start = time.perf_counter()
_out = run()
_seconds = time.perf_counter() - _start
_outs = _out if isinstance(_out, tuple) else (_out,)
_bytes = sum(t.numel() * t.element_size() for t in _outs)
print(json.dumps({{"growth": _peak() - _base, "outputs": _bytes, "seconds": _seconds}}))
"""


def measure(code: str, threads: int = 1, timeout: float = 600) -> dict[str, float]:
    """{"working": bytes, "outputs": bytes, "seconds": s} of ``run()`` in ``code``.

    ``working`` is the growth of the peak resident memory during ``run()`` minus the
    outputs' bytes; ``threads``: torch's intra-op threads in the process.
    """
    source = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    program = _DRIVER.format(threads=threads, code=textwrap.dedent(code))
    done = subprocess.run(
        [sys.executable, "-c", program],
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
