"""The kernel store at scale: a LocalCluster of 1 and 2 workers, a kill and resume, CG ridge.

    python benchmarks/kernel_store.py [N] [--outputs O] [--budget 2GB] [--dir DIR]

The trace eNTK of a width-512 depth-3 ReLU MLP (NTK parameterization, O outputs) on N
Gaussian inputs of 64 features, float32 (N = 30,000: 3.6 GB in all, 1.8 GB stored as the
upper triangle of tiles), each worker with a memory budget of 2 GB. Prints, in one run:

(a) the job on a LocalCluster of 1 worker, then of 2 (one thread each): seconds (after the
    workers have imported ntkscope, a few seconds each) and the ratio 2 workers / 1
    worker, and each worker's peak resident memory (``ru_maxrss``) against the budget plus
    the model, the inputs and one tile;
(b) the same job on 2 workers, its client process group killed by SIGKILL at about half
    its tiles, then started again: tile executions in all (counted in the
    ``NTKSCOPE_TILE_LOG`` file every tile task appends to) against tiles + workers;
(c) kernel ridge on the store: in memory (Cholesky, float64) on the largest n_fit whose
    3 n² float64 matrices fit the budget, CG on the same n_fit (difference), then CG on
    the whole N with its passes and residual;
(d) a model of the cluster case on paper: tiles, bytes moved and the overhead per tile
    measured here, extrapolated to the CIFAR-10 Myrtle kernel on 8 GPUs (an estimate).

The machine this was written on had 2 cores shared with other users' jobs: times are noisy.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ntkscope.runner.tiled import TILE_LOG

SETUP = """
import torch
import ntkscope as ns
torch.set_num_threads(1)
N, O, BUDGET = {n}, {outputs}, {budget!r}
model = ns.models.mlp(64, 512, 3, O, seed=0)
x = torch.randn(N, 64, generator=torch.Generator().manual_seed(0))
y = torch.sin(x @ torch.randn(64, 1, generator=torch.Generator().manual_seed(1)) / 8)
"""

JOB = """
import resource, sys, time
from ntkscope import kernel_store
from ntkscope.runner.executors import DaskExecutor
with DaskExecutor(local_workers=int(sys.argv[2])) as ex:
    ex.client.run(lambda: __import__("ntkscope.kernel_store"))  # imports: not timed
    start = time.perf_counter()
    report = kernel_store.compute("entk", x, store=sys.argv[1], model=model, targets=y,
                                  memory_budget=BUDGET, client=ex.client)
    seconds = time.perf_counter() - start
    peak = ex.client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print("RESULT", [seconds, report.tiles, report.skipped, report.computed, len(report.failed),
                 sorted(v / 1024 for v in peak.values())])  # ru_maxrss: KiB on Linux
"""


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return os.environ | {"PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _job(args, store: Path, counter: Path, workers: int) -> subprocess.Popen:
    code = SETUP.format(n=args.n, outputs=args.outputs, budget=args.budget) + JOB
    command = [sys.executable, "-c", code, str(store), str(workers)]
    env = _env() | {TILE_LOG: str(counter)}  # every tile task appends "i j" to it
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def _result(process: subprocess.Popen) -> list:
    out = process.communicate()[0]
    line = next(line for line in out.splitlines() if line.startswith("RESULT"))
    return eval(line.removeprefix("RESULT"))  # our own child's numbers


def _executions(counter: Path) -> int:
    return len(counter.read_text().split()) // 2 if counter.exists() else 0


def part_a(args, folder: Path) -> dict[int, list]:
    """Times and peak memory of the job on 1 and on 2 workers."""
    results = {}
    for workers in (1, 2):
        store, counter = folder / f"a{workers}.zarr", folder / f"a{workers}.count"
        results[workers] = _result(_job(args, store, counter, workers))
        seconds, tiles, _, computed, failed, peak = results[workers]
        print(f"(a) {workers} worker(s): {seconds:.1f} s, {computed}/{tiles} tiles, "
              f"{failed} failed, peak RSS per worker {[f'{p:.0f} MiB' for p in peak]}")  # fmt: skip
    ratio = results[2][0] / results[1][0]
    print(f"(a) time ratio 2 workers / 1 worker: {ratio:.2f} (goal ≤ 0.6)")
    model_mib = sum(p.numel() for p in _model(args).parameters()) * 4 / 2**20
    tile = results[1][1]
    print(f"(a) budget {args.budget} + model {model_mib:.1f} MiB + inputs "
          f"{args.n * 64 * 4 / 2**20:.1f} MiB; {tile} tiles")  # fmt: skip
    return results


def _model(args):
    import ntkscope as ns

    return ns.models.mlp(64, 512, 3, args.outputs, seed=0)


def part_b(args, folder: Path) -> None:
    """Kill the client's process group at half the tiles, start again, count executions."""
    from ntkscope.runner.tiled import done_tiles, read_job

    store, counter = folder / "b.zarr", folder / "b.count"
    process = _job(args, store, counter, 2)
    tiles = None
    while process.poll() is None:
        time.sleep(0.5)
        if tiles is None and (store / "zarr.json").exists():
            layout = read_job(store)["layout"]
            tiles = len(_upper(layout))
        if tiles and len(done_tiles(store)) >= tiles / 2:
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait()
    killed_at, started = len(done_tiles(store)), _executions(counter)
    result = _result(_job(args, store, counter, 2))
    total = _executions(counter)
    print(f"(b) killed with {killed_at}/{tiles} tiles done ({started} started); resumed: "
          f"{result[2]} skipped, {result[3]} computed; executions in all {total} "
          f"(goal ≤ tiles + workers = {tiles + 2})")  # fmt: skip


def _upper(layout) -> list:
    from ntkscope.runner.tiled import Layout

    return Layout.from_json(layout).tiles()


def part_c(args, store: Path) -> None:
    """Cholesky on what fits, CG on the same rows, CG on all rows."""
    from ntkscope import kernel_store
    from ntkscope._checks import memory_bytes

    stored = kernel_store.open(store)
    n = stored.kernel.shape[0]
    n_fit = min(n - 1, int((memory_bytes(args.budget, "budget") / 24) ** 0.5))
    ridge = 1e-2 * float(stored.diagonal()[:n_fit].mean())
    timings = {}
    for label, rows, budget in (("cholesky", n_fit, "1TB"), ("cg", n_fit, 1), ("cg", n, 1)):
        start = time.perf_counter()
        fit = stored.ridge(rows, ridge, memory_budget=budget, tol=1e-6)
        timings[(label, rows)] = fit
        seconds = time.perf_counter() - start
        print(f"(c) {fit.solver} on n = {rows}: {seconds:.1f} s, {fit.iterations} passes, "
              f"relative residual {fit.relative_residual:.2e}")  # fmt: skip
    a, b = timings[("cholesky", n_fit)].weights, timings[("cg", n_fit)].weights
    print(f"(c) λ = 1e-2 · tr(K)/n; CG tol 1e-6; ‖α_cg − α_chol‖/‖α_chol‖ at n = {n_fit}: "
          f"{float(torch.linalg.norm(a - b) / torch.linalg.norm(a)):.2e}")  # fmt: skip


class Zeros:
    """A tile source that computes nothing: NNGP and NTK tiles of zeros (overhead only)."""

    def __call__(self, rows, cols):
        block = np.zeros((rows.stop - rows.start, cols.stop - cols.start))
        return {"nngp": block, "ntk": block}


def part_d(a_results: dict[int, list], folder: Path) -> None:
    """Extrapolation to the CIFAR-10 Myrtle kernel on 8 GPUs, from overheads measured here."""
    from ntkscope.runner.executors import DaskExecutor
    from ntkscope.runner.tiled import Layout, run_job

    side = 1_000  # images per tile side: NNGP + NTK float64 tiles of 16 MB
    layout = Layout(("nngp", "ntk"), (5 * side, 5 * side), (side, side), "float64", (), True)
    with DaskExecutor(local_workers=2) as executor:
        start = time.perf_counter()
        run_job(Zeros(), folder / "d.zarr", layout, {"what": "zeros"}, client=executor.client)
        overhead = (time.perf_counter() - start) * 2 / len(layout.tiles())
    seconds, tiles = a_results[1][0], a_results[1][1]
    n = 60_000
    pairs, myrtle_tiles = n * (n + 1) // 2, (n // side) * (n // side + 1) // 2
    moved = myrtle_tiles * (2 * side * 3 * 32 * 32 * 4 + 2 * side * side * 8)
    gpu_hours = (316, 508)  # published: Myrtle kernels of 60,000 CIFAR-10 images, V100-hours
    extra = myrtle_tiles * overhead / 8 / 3600
    print(
        f"(d) measured here: {seconds / tiles:.1f} s per tile of the eNTK job (one core); "
        f"{overhead * 1e3:.0f} ms per {side}×{side} tile of scheduling and writing 16 MB"
    )
    print(
        f"(d) estimate, CIFAR-10 Myrtle kernel, N = {n:,}: {pairs:.2e} pairs in "
        f"{myrtle_tiles} tiles of {side}×{side}, {moved / 1e9:.0f} GB moved (inputs in, "
        f"NNGP and NTK out); compute at the published {gpu_hours[0]}–{gpu_hours[1]} "
        f"V100-hours: {gpu_hours[0] / 8:.0f}–{gpu_hours[1] / 8:.0f} h on 8 GPUs, plus "
        f"{extra:.2f} h of tile overhead"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=30_000)
    parser.add_argument("--outputs", type=int, default=1)
    parser.add_argument("--budget", default="2GB")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        folder = Path(folder)
        results = part_a(args, folder)
        part_b(args, folder)
        part_c(args, folder / "a1.zarr")
        part_d(results, folder)
    print(f"machine: {os.cpu_count()} cores, shared with other users' jobs; np {np.__version__}")


if __name__ == "__main__":
    main()
