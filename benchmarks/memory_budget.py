"""Small memory budgets: their peak working memory and their time against the default.

Each case runs in fresh processes (`tests/peak_memory.py`: peak resident memory from
``resource.getrusage`` after a warm-up, less the returned kernels), alternating the
default budget and each small one, ``--rounds`` times; it prints the best time of each,
the ratio small / default (issue 17: at most 1.3) and the working memory beside the budget.

    python benchmarks/memory_budget.py              # N = 8,000 MLP trace eNTK, 256 MB
    python benchmarks/memory_budget.py --n 4000 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
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


def case(title: str, code: str, n: int, budgets: list[str], rounds: int) -> None:
    """Best time and working memory of each budget (None: the default), alternating."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for budget in [None, *budgets]:
            key = "default" if budget is None else budget
            result = measure(code.format(n=n, budget=repr(budget)), threads=2, timeout=3600)
            if key not in best or result["seconds"] < best[key]["seconds"]:
                best[key] = result
    default = best["default"]["seconds"]
    print(f"{title}, N = {n:,} (outputs {best['default']['outputs'] / MB:.0f} MiB):")
    for key, result in best.items():
        print(
            f"  budget {key:>8}: {result['seconds']:7.2f} s ({result['seconds'] / default:.2f}× "
            f"the default), working memory {result['working'] / MB:6.0f} MiB",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8000, help="examples of the eNTK case")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; 2 threads")
    case("eNTK, MLP 100-512³-10, trace", ENTK, args.n, ["256MB"], args.rounds)
    case("infinite ReLU MLP, depth 5", INFINITE, 4000, ["16MB"], args.rounds)
    case("infinite Myrtle CNN 8×8, depth 3", CNN, 64, ["16MB"], args.rounds)


if __name__ == "__main__":
    main()
