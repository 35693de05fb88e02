"""Small memory budgets: their peak working memory and their time against the default.

Each case runs in fresh processes (`tests/peak_memory.py`: peak resident memory from
``resource.getrusage`` after a warm-up, less the returned kernels), alternating the
default budget and each small one, ``--rounds`` times; it prints the best time of each,
the ratio small / default (issue 17: at most 1.3) and the working memory beside the budget;
each small budget also as a multiple of the default's working memory (a small budget is
≤ 1/4 of it: on CPU the infinite kernels' tiles are capped at 4 MiB, so their default
works in ~5 MiB and only the 1–2 MiB budgets are small for them).

    python benchmarks/memory_budget.py              # N = 8,000 MLP trace eNTK, 256 MB
    python benchmarks/memory_budget.py --n 4000 --rounds 1
    python benchmarks/memory_budget.py --n 4000 --cpu-time   # on a shared machine
    python benchmarks/memory_budget.py --only mlp,cnn        # the infinite kernels only
    python benchmarks/memory_budget.py --only mlp --sequential  # also one tile at a time

On CPU the infinite kernels compute a small budget's tiles two at a time, one torch thread
each (`ntkscope.kernels._infinite_tiles.concurrent_tiles`); ``--sequential`` also times each
small budget with its tiles one at a time (as before), marked "seq".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ntkscope._checks import memory_bytes
from peak_memory import measure

MB = 2**20

ENTK = """
import ntkscope as ns
torch.manual_seed(0)
model = ns.models.mlp(d_in=100, width=512, depth=3, d_out=10)
x = torch.randn({n}, 100)

def warmup():
    ns.empirical_ntk(model, x[:64], memory_budget={budget})

def run():
    return ns.empirical_ntk(model, x, memory_budget={budget})
"""

INFINITE = """
import ntkscope as ns
x = torch.randn({n}, 100, dtype=torch.float64)

def warmup():
    ns.infinite_kernels(x[:64], depth=5, memory_budget={budget})

def run():
    return ns.infinite_kernels(x, depth=5, memory_budget={budget})
"""

CNN = """
import ntkscope as ns
x = torch.randn({n}, 3, 8, 8, dtype=torch.float64)

def warmup():
    ns.infinite_cnn_kernels(x[:4], depth=3, memory_budget={budget})

def run():
    return ns.infinite_cnn_kernels(x, depth=3, memory_budget={budget})
"""


SEQUENTIAL = """
from ntkscope.kernels import _infinite_tiles
_infinite_tiles.concurrent_tiles = lambda *args: 1
"""


def case(title: str, code: str, n: int, budgets: list[str], rounds: int, cpu: bool) -> None:
    """Best time and working memory of each budget (None: the default), alternating; with
    ``cpu``, one thread and the process's CPU time instead of 2 threads and wall time. A
    budget "2MiB seq" is 2MiB with the infinite kernels' tiles one at a time."""
    best: dict[str, dict] = {}
    clock, threads = ("cpu_seconds", 1) if cpu else ("seconds", 2)
    for _ in range(rounds):
        for budget in [None, *budgets]:
            key = "default" if budget is None else budget
            size, _, seq = (budget or "").partition(" ")
            program = (SEQUENTIAL if seq else "") + code.format(n=n, budget=repr(size or None))
            result = measure(program, threads, timeout=3600)
            result["seconds"] = result[clock]
            if key not in best or result["seconds"] < best[key]["seconds"]:
                best[key] = result
    default, working = best["default"]["seconds"], best["default"]["working"]
    print(f"{title}, N = {n:,} (outputs {best['default']['outputs'] / MB:.0f} MiB):")
    for key, result in best.items():
        size = key.partition(" ")[0]
        share = "" if key == "default" else f", {memory_bytes(size, 'budget') / working:.2f}×"
        print(
            f"  budget {key:>8}{share}: {result['seconds']:7.2f} s "
            f"({result['seconds'] / default:.2f}× the default), working memory "
            f"{result['working'] / MB:6.1f} MiB",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8000, help="examples of the eNTK case")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--cpu-time", action="store_true", help="one thread, CPU time (for a shared machine)"
    )
    parser.add_argument(
        "--only", default="entk,mlp,cnn", help="comma-separated cases: entk, mlp, cnn"
    )
    parser.add_argument(
        "--sequential", action="store_true", help="also the small budgets one tile at a time"
    )
    args = parser.parse_args()
    mode = "1 thread, CPU time" if args.cpu_time else "2 threads, wall time"
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {mode}")
    rounds, cpu, only = args.rounds, args.cpu_time, args.only.split(",")
    if "entk" in only:
        case("eNTK, MLP 100-512³-10, trace", ENTK, args.n, ["256MB"], rounds, cpu)

    def small(*budgets: str) -> list[str]:
        return [v for b in budgets for v in ((b, f"{b} seq") if args.sequential else (b,))]

    if "mlp" in only:
        budgets = ["16MB", *small("2MiB", "1MiB")]
        case("infinite ReLU MLP, depth 5", INFINITE, 4000, budgets, rounds, cpu)
    if "cnn" in only:
        budgets = ["16MB", *small("2MiB", "1MiB")]
        case("infinite Myrtle CNN 8×8, depth 3", CNN, 64, budgets, rounds, cpu)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
