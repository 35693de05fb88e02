"""eNTK speed: ntkscope's methods against the torch.func tutorial baseline.

Part 1 prints, for an MLP, the time of method="structured", the time of the Jacobian-
contraction baseline from PyTorch's NTK tutorial (vmap(jacrev) + one einsum per
parameter), their ratio, and the structured method's FLOP rate (FLOPs counted by
torch.utils.flop_counter) divided by the float32 GEMM rate measured in the same run.

Part 2, full mode, for a Myrtle CNN (N = 128), a ResNet-style CNN with BatchNorm (eval;
3 stages of 16/32/64 channels, 16×16 inputs, N = 64) and a BERT-style encoder (Hugging
Face config, random weights: vocabulary 30,522, hidden 128, 2 layers, 4 heads, sequence
32, 2 labels, N = 64; skipped without ``transformers``), prints the time of every method
that can run the model as a speed-up over the baseline (a method estimated to take over
2 minutes is not run: its time is extrapolated from 8 and 16 examples, marked ``~``), which
method ``auto`` ran, and its time over the fastest's; and, where ``nngeometry`` imports,
its ``GramMatrix`` on the ResNet (a comparison only; install it with ``--no-deps``, it
would replace torch).

    python benchmarks/entk.py            # all cases (several minutes on 2 cores)
    python benchmarks/entk.py --quick    # N = 128 only in part 1
    python benchmarks/entk.py --methods --only structured,jacobian  # part 2, two methods
    python benchmarks/entk.py --methods --cpu-time  # one thread, CPU time (shared machine)
    python benchmarks/entk.py --methods --rows resnet  # part 2, the ResNet row only

On a machine shared with other jobs, wall times mostly measure the scheduler: with
``--cpu-time`` every time is the CPU time of this process on one thread, which other
jobs disturb far less (only through the caches and memory bandwidth they share).

At N = 512 the baseline's per-example Jacobians do not fit in memory (24 GB); its time
there is that of its 16 tiles of 128×128, i.e. 16 × its time at N = 128.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.func import functional_call, jacrev, vmap
from torch.utils.flop_counter import FlopCounterMode

import ntkscope as ns

CLOCK = time.perf_counter
"""Wall time, or the process's CPU time under ``--cpu-time``."""


def best_time(fn, repeat: int, warm: bool = True) -> float:
    """Minimum time over ``repeat`` runs after one warm-up if ``warm`` (min: least noise)."""
    if warm:
        fn()
    times = []
    for _ in range(repeat):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return min(times)


def gemm_rate(size: int = 2048) -> float:
    """float32 FLOP/s of a square matrix product on this machine, now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / best_time(lambda: a @ b, repeat=5)


def tutorial_baseline(model, x1, x2, mode, output=lambda out: out):
    """PyTorch's NTK tutorial, "Jacobian contraction" (mode 'full' or 'trace')."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(p, x):
        return output(functional_call(model, p, (x.unsqueeze(0),))).squeeze(0)

    jac1 = [j.flatten(2) for j in vmap(jacrev(fnet_single), (None, 0))(params, x1).values()]
    jac2 = [j.flatten(2) for j in vmap(jacrev(fnet_single), (None, 0))(params, x2).values()]
    expr = "Naf,Mbf->NMab" if mode == "full" else "Naf,Maf->NM"
    return torch.stack([torch.einsum(expr, a, b) for a, b in zip(jac1, jac2, strict=True)]).sum(0)


def addmm_inplace_flops(self_shape, a_shape, b_shape, **_) -> int:
    """FLOPs of ``self.addmm_(a, b)``, which torch's counter leaves out (it counts ``addmm``
    only); the structured path's Gram of a block with itself adds its products in place."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def structured_flops(model, x, mode) -> int:
    inplace = {torch.ops.aten.addmm_: addmm_inplace_flops}
    with FlopCounterMode(display=False, custom_mapping=inplace) as counter:
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


METHODS = ("structured", "jacobian", "ntvp", "autograd")

LIMIT = 120.0
"""Seconds beyond which a method's time on a row is estimated instead of measured."""
SLOW = 10.0
"""Seconds beyond which a method is timed once, without a warm-up (the runs of
`estimated_time` warmed it up)."""


def estimated_time(run, x, k: int = 8) -> float:
    """Time of ``run(x)`` extrapolated from its times on the first k and 2k examples:
    t(n) = α·n + β·n² (features per example, Gram products per pair) through both points,
    α, β ≥ 0."""
    t1, t2 = (best_time(lambda size=size: run(x[:size]), 1) for size in (k, 2 * k))
    beta = max((t2 - 2 * t1) / (2 * k * k), 0.0)
    alpha = max((t1 - beta * k * k) / k, 0.0)
    return alpha * len(x) + beta * len(x) ** 2


def method_times(model, x, output, repeat, methods=METHODS) -> dict[str, tuple[float, bool]]:
    """Per method (and auto), on this model in full mode: its best time, or its estimate
    (`estimated_time`) where that exceeds `LIMIT`, and whether it is an estimate."""
    times = {}
    for method in (*methods, "auto"):

        def run(batch, method=method):
            ns.empirical_ntk(model, batch, batch, mode="full", method=method, output=output)

        try:
            guess = estimated_time(run, x)
            if guess > LIMIT:
                times[method] = (guess, True)
            else:
                slow = guess > SLOW
                once = best_time(lambda: run(x), 1 if slow else repeat, warm=not slow)
                times[method] = (once, False)
        except ValueError as error:  # the method refuses this model
            print(f"    {method}: {str(error).splitlines()[0][:100]}")
    return times


def timed(fn, repeat: int) -> float:
    """Best of one run and, when it took under `SLOW` seconds, ``repeat`` more."""
    start = CLOCK()
    fn()
    first = CLOCK() - start
    return first if first > SLOW else min(first, best_time(fn, repeat, warm=False))


def run_methods(name, model, x, methods, output=None, repeat=3, extra=None):
    """One row of part 2: every method's speed-up over the baseline (each best of
    ``repeat`` runs where a run takes under `SLOW` seconds, as the baseline), and auto's
    choice; ``~`` marks an estimate (`method_times`)."""
    select = output or (lambda out: out)
    base = timed(lambda: tutorial_baseline(model, x, x, "full", select), repeat)
    times = method_times(model, x, output, repeat, methods)
    times.update({k: (t, False) for k, t in (extra or {}).items()})
    used = ns.kernels.resolve_method(model, x, mode="full", output=output)
    fastest = min(t for m, (t, _) in times.items() if m != "auto")
    cells = "  ".join(
        f"{m} {'~' if guess else ''}{t:.3g} s ({base / t:5.2g}x)" for m, (t, guess) in times.items()
    )
    print(
        f"{name:<34} N={len(x):<4} full  baseline {base:.3g} s  {cells}  "
        f"auto -> {used}, {times['auto'][0] / fastest:4.2f}x the fastest",
        flush=True,
    )


def resnet(seed: int = 0) -> torch.nn.Module:
    """ResNet-style CNN: stem, 3 stages (16/32/64 channels, stride 2 after the first) of one
    residual block each, conv–BatchNorm–ReLU, global average pooling, 10 outputs; eval mode
    with random running statistics."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.shortcut = nn.Identity()
            if stride != 1 or c_in != c_out:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                )

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        Block(16, 16, 1),
        Block(16, 32, 2),
        Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    model(torch.randn(64, 3, 16, 16))  # running statistics from one training-mode batch
    return model.eval()


def nngeometry_time(model, x) -> dict[str, float]:
    """nngeometry's GramMatrix (full mode, all parameters) on x, if it imports."""
    try:
        from nngeometry import GramMatrix
    except ImportError:
        print("    nngeometry: not installed (pip install --no-deps nngeometry)")
        return {}
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=len(x))
    return {"nngeometry": best_time(lambda: GramMatrix(model, loader), 1)}


def bert_encoder():
    """BERT-style encoder from a Hugging Face config (random weights), or None."""
    try:
        import transformers
    except ImportError:
        print("BERT-style encoder: skipped (transformers is not installed)")
        return None
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=64,
        num_labels=2,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


ROWS = ("myrtle", "resnet", "bert")
"""Rows of part 2, in the order they run (``--rows``)."""


def part_two(methods=METHODS, rows=ROWS) -> None:
    if "myrtle" in rows:
        cnn = ns.models.cnn(3, 64, 3, 10, seed=0)
        run_methods("Myrtle CNN 3x8x8, 64 ch", cnn, torch.randn(128, 3, 8, 8), methods)
    if "resnet" in rows:
        model, x = resnet(), torch.randn(64, 3, 16, 16)
        extra = nngeometry_time(model, x)
        run_methods("ResNet 16/32/64 BatchNorm, 16x16", model, x, methods, extra=extra)
    bert = bert_encoder() if "bert" in rows else None
    if bert is not None:
        ids = torch.randint(0, 30522, (64, 32), generator=torch.Generator().manual_seed(0))
        logits = lambda out: out.logits  # noqa: E731
        run_methods("BERT-style, vocab 30522, seq 32", bert, ids, methods, output=logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 128 only in part 1")
    parser.add_argument("--methods", action="store_true", help="part 2 only")
    parser.add_argument(
        "--only", default=",".join(METHODS), help="methods timed in part 2, comma-separated"
    )
    parser.add_argument(
        "--rows", default=",".join(ROWS), help="rows of part 2, comma-separated: " + ", ".join(ROWS)
    )
    parser.add_argument(
        "--cpu-time", action="store_true", help="one thread, times are the process's CPU time"
    )
    args = parser.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
        torch.set_num_threads(1)
    torch.manual_seed(0)
    gemm = gemm_rate()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"float32 GEMM {gemm / 1e9:.1f} GFLOP/s, load average {os.getloadavg()[0]:.1f}, "
        f"{'CPU' if args.cpu_time else 'wall'} time"
    )
    methods, rows = tuple(args.only.split(",")), tuple(args.rows.split(","))
    unknown = set(rows) - set(ROWS)
    if unknown:
        parser.error(f"--rows: unknown {sorted(unknown)}; expected some of {', '.join(ROWS)}")
    if args.methods:
        return part_two(methods, rows)
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
    part_two(methods, rows)


if __name__ == "__main__":
    main()
