"""eNTK speed: ntkscope's structured method against the torch.func tutorial baseline.

Prints, for each case, the time of method="structured", the time of the Jacobian-
contraction baseline from PyTorch's NTK tutorial (vmap(jacrev) + one einsum per
parameter), their ratio, and the structured method's FLOP rate (FLOPs counted by
torch.utils.flop_counter) divided by the float32 GEMM rate measured in the same run.

    python benchmarks/entk.py            # all cases (several minutes on 2 cores)
    python benchmarks/entk.py --quick    # N = 128 only

At N = 512 the baseline's per-example Jacobians do not fit in memory (24 GB); its time
there is that of its 16 tiles of 128×128, i.e. 16 × its time at N = 128.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.func import functional_call, jacrev, vmap
from torch.utils.flop_counter import FlopCounterMode

import ntkscope as ns


def best_time(fn, repeat: int) -> float:
    """Minimum wall time over ``repeat`` runs after one warm-up (min: least noise)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_rate(size: int = 2048) -> float:
    """float32 FLOP/s of a square matrix product on this machine, now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / best_time(lambda: a @ b, repeat=5)


def tutorial_baseline(model, x1, x2, mode):
    """PyTorch's NTK tutorial, "Jacobian contraction" (mode 'full' or 'trace')."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    jac1 = [j.flatten(2) for j in vmap(jacrev(fnet_single), (None, 0))(params, x1).values()]
    jac2 = [j.flatten(2) for j in vmap(jacrev(fnet_single), (None, 0))(params, x2).values()]
    expr = "Naf,Mbf->NMab" if mode == "full" else "Naf,Maf->NM"
    return torch.stack([torch.einsum(expr, a, b) for a, b in zip(jac1, jac2, strict=True)]).sum(0)


def structured_flops(model, x, mode) -> int:
    with FlopCounterMode(display=False) as counter:
        ns.empirical_ntk(model, x, x, mode=mode, method="structured")
    return counter.get_total_flops()


BASELINE_TILE = 128
"""Largest N the baseline runs at once: at N = 512 its Jacobians alone need 24 GB."""


def run_case(name, model, x, mode, gemm, repeat):
    ours = best_time(lambda: ns.empirical_ntk(model, x, x, mode=mode, method="structured"), repeat)
    tile = x[:BASELINE_TILE]
    # the baseline on N > 128: (N/128)² tiles of 128×128, each costing the timed tile
    tiles = (len(x) / len(tile)) ** 2
    base = tiles * best_time(lambda: tutorial_baseline(model, tile, tile, mode), 1)
    rate = structured_flops(model, x, mode) / ours
    print(
        f"{name:<28} N={len(x):<4} {mode:<5}  structured {ours * 1e3:9.1f} ms   "
        f"baseline {base * 1e3:10.1f} ms   speed-up {base / ours:7.1f}x   "
        f"FLOP rate / GEMM rate {rate / gemm:5.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 128 only")
    args = parser.parse_args()
    torch.manual_seed(0)
    gemm = gemm_rate()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"float32 GEMM {gemm / 1e9:.1f} GFLOP/s"
    )
    mlp = ns.models.mlp(100, 512, 3, 10, seed=0)
    sizes = [128] if args.quick else [128, 512]
    for n in sizes:
        x = torch.randn(n, 100)
        for mode in ("full", "trace"):
            run_case("MLP 100-512-512-512-10", mlp, x, mode, gemm, repeat=3)
    cnn = ns.models.cnn(3, 64, 3, 10, seed=0)
    for n in sizes[:1]:
        x = torch.randn(n, 3, 8, 8)
        for mode in ("full", "trace"):
            run_case("Myrtle CNN 3x8x8, 64 ch", cnn, x, mode, gemm, repeat=3)


if __name__ == "__main__":
    main()
