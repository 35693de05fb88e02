"""ntkscope against neural-tangents, side by side, in alternating processes.

Each row of issue 17's table runs in two kinds of worker process, started in turn: ntkscope
(this Python) and neural-tangents 0.6.5 (jax 0.4.23, jaxlib 0.4.23, numpy 1.26.4, tf2jax
0.3.5) in its own virtual environment, ``~/.cache/ntkscope-bench/nt-venv``, which this
script creates when it is missing (and says so; PyPI or a mirror must be reachable once).
Both get the same inputs and weights: the torch model's weights are exported to ``.npz``
and loaded into the equivalent ``stax`` model. Each worker times a warm-up and then the
best of ``--repeat`` runs (jit compilation excluded; ntkscope's counterpart, the planning
and checks of an eNTK, likewise: its eNTKs are `ntkscope.kernels.PreparedNTK` calls, and
``--one-shot`` times plain `ntkscope.empirical_ntk` calls instead); the best over
``--rounds`` workers of each kind is reported, with the ratio ntkscope / neural-tangents
(below 1: ntkscope is faster) and the largest difference of the outputs relative to the
largest output. On an oversubscribed machine (the CPUs busier than one core's worth over the
half second before a worker starts, `_busy_cores`) both workers run with
``OMP_WAIT_POLICY=PASSIVE``: there torch's spinning OpenMP threads
were up to 5× slower (measured); it does not affect XLA. On a quiet machine the default
policy is kept (passive threads pay a wake-up at every parallel region).

neural-tangents: the structured-derivatives eNTK (implementation 3) with ``vmap_axes=0``,
its fastest on these models; the infinite kernels by ``stax`` kernel functions (float64
where ntkscope computes float64; the tanh network by ``ElementwiseNumerical`` with degree
25 in float32, as in the issue). neural-tangents' ``experimental`` subpackage, which needs
TensorFlow, is replaced by an empty module in the worker (nothing here uses it).

Not part of the package or its dependencies.

    python benchmarks/vs_neural_tangents.py                 # every row
    python benchmarks/vs_neural_tangents.py --only mlp_full,mlp_trace --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV = Path.home() / ".cache" / "ntkscope-bench" / "nt-venv"
PINS = ["jax==0.4.23", "jaxlib==0.4.23", "numpy==1.26.4", "scipy==1.11.4", "ml_dtypes==0.3.2"]
PINS += ["opt_einsum", "frozendict", "absl-py"]
NO_DEPS = ["tf2jax==0.3.5", "neural-tangents==0.6.5"]  # their TensorFlow is not needed


def _myrtle(size: int, n: int, mode: str) -> tuple[str, str, dict]:
    return (
        f"eNTK, Myrtle CNN 3×{size}×{size}, N = {n}, {mode}",
        "entk_cnn",
        dict(n=n, size=size, mode=mode),
    )


ROWS = {
    # name: (description, kind, arguments)
    "mlp_full": ("eNTK, MLP 100-512³-10, N = 128, full", "entk_mlp", dict(n=128, mode="full")),
    "mlp_trace": ("eNTK, MLP 100-512³-10, N = 128, trace", "entk_mlp", dict(n=128, mode="trace")),
    **{
        f"myrtle{size}_{mode}": _myrtle(size, n, mode)
        for size, n in ((8, 128), (32, 64))
        for mode in ("full", "trace")
    },
    "relu_mlp": ("infinite ReLU MLP, depth 5, N = 4,000", "inf_mlp", dict(n=4000, act="relu")),
    "myrtle_inf": ("infinite Myrtle CNN, 32×32, 8×8 pairs, x2 given", "inf_cnn", dict(n=8)),
    "tanh_mlp": ("infinite tanh MLP, depth 5, N = 500", "inf_mlp", dict(n=500, act="tanh")),
}


# ---------------------------------------------------------------- shared set-up (torch side)


def _torch_model(kind: str, args: dict):
    import ntkscope as ns

    if kind == "entk_mlp":
        return ns.models.mlp(100, 512, 3, 10, seed=0)
    return ns.models.cnn(3, 64, 3, 10, seed=0)


def export(kind: str, args: dict, path: Path) -> None:
    """Inputs (float32 for eNTKs, float64 for infinite kernels) and weights in stax layout."""
    import torch

    g = torch.Generator().manual_seed(0)
    arrays = {}
    if kind == "entk_mlp":
        arrays["x1"] = torch.randn(args["n"], 100, generator=g)
    elif kind == "entk_cnn":
        arrays["x1"] = torch.randn(args["n"], 3, args["size"], args["size"], generator=g)
    elif kind == "inf_mlp":
        arrays["x1"] = torch.randn(args["n"], 100, generator=g, dtype=torch.float64)
    else:
        x = torch.randn(2 * args["n"], 3, 32, 32, generator=g, dtype=torch.float64)
        arrays["x1"], arrays["x2"] = x[: args["n"]], x[args["n"] :]
    if kind.startswith("entk"):
        for i, p in enumerate(_torch_model(kind, args).parameters()):
            w = p.detach()  # Dense (out, in) -> (in, out); Conv OIHW -> HWIO
            arrays[f"w{i}"] = w.T if w.dim() == 2 else w.permute(2, 3, 1, 0)
    np_arrays = {k: v.contiguous().numpy() for k, v in arrays.items()}
    import numpy as np

    np.savez(path, **np_arrays)


def _best(fn, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up (and jit compilation)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


# ---------------------------------------------------------------- workers


def ntkscope_worker(kind: str, args: dict, data: Path, repeat: int):
    import torch

    import ntkscope as ns

    torch.set_num_threads(2)
    arrays = {k: torch.from_numpy(v) for k, v in __import__("numpy").load(data).items()}
    x1 = arrays["x1"]
    if kind.startswith("entk"):
        model = _torch_model(kind, args)
        fn = (
            (lambda: ns.empirical_ntk(model, x1, mode=args["mode"]))
            if args.get("one_shot")
            else ns.kernels.PreparedNTK(model, x1, mode=args["mode"])
        )
    elif kind == "inf_mlp":
        fn = lambda: ns.infinite_kernels(x1, depth=5, activation=args["act"])[1]  # noqa: E731
    else:
        fn = lambda: ns.infinite_cnn_kernels(x1, arrays["x2"], depth=3)[1]  # noqa: E731
    seconds, out = _best(fn, repeat)
    return seconds, out.detach().numpy()


def _stax_model(kind: str, args: dict):
    from neural_tangents import stax

    relu, sw = stax.Relu(), 2**0.5
    if kind in ("entk_mlp", "inf_mlp"):
        width = 512 if kind == "entk_mlp" else 1
        act = (
            relu
            if args.get("act", "relu") == "relu"
            else stax.ElementwiseNumerical(__import__("jax").numpy.tanh, deg=25)
        )
        depth = 3 if kind == "entk_mlp" else 5
        layers = [stax.Dense(width, W_std=sw, b_std=None), act] * depth
        return stax.serial(*layers, stax.Dense(10 if kind == "entk_mlp" else 1, W_std=sw))
    width = 64 if kind == "entk_cnn" else 1
    pool = stax.AvgPool((2, 2), strides=(2, 2))
    conv = stax.Conv(width, (3, 3), padding="SAME", W_std=sw, b_std=None)
    layers = [conv, relu, pool, conv, relu, pool, conv, relu, stax.GlobalAvgPool()]
    return stax.serial(*layers, stax.Dense(10 if kind == "entk_cnn" else 1, W_std=sw))


def nt_worker(kind: str, args: dict, data: Path, repeat: int):
    import types

    sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")
    import jax

    if kind in ("inf_cnn",) or (kind == "inf_mlp" and args["act"] == "relu"):
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import neural_tangents as nt
    import numpy as np

    arrays = dict(np.load(data))
    _, apply_fn, kernel_fn = _stax_model(kind, args)
    if kind.startswith("entk"):
        x1 = jnp.asarray(arrays["x1"])
        x1 = x1.transpose(0, 2, 3, 1) if x1.ndim == 4 else x1  # NCHW -> NHWC
        weights = iter(jnp.asarray(arrays[f"w{i}"]) for i in range(len(arrays) - 1))
        params = [(next(weights), None) if k in ("Dense", "Conv") else () for k in _layers(kind)]
        ntk = nt.empirical_ntk_fn(
            apply_fn,
            trace_axes=() if args["mode"] == "full" else (-1,),
            vmap_axes=0,
            implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES,
        )
        ntk = jax.jit(ntk)
        fn = lambda: ntk(x1, None, params).block_until_ready()  # noqa: E731
    elif kind == "inf_mlp":
        x1 = jnp.asarray(arrays["x1"], dtype=jnp.float64 if args["act"] == "relu" else jnp.float32)
        kfn = jax.jit(kernel_fn, static_argnames="get")
        fn = lambda: kfn(x1, None, get="ntk").block_until_ready()  # noqa: E731
    else:
        x1, x2 = (jnp.asarray(arrays[k]).transpose(0, 2, 3, 1) for k in ("x1", "x2"))
        kfn = jax.jit(kernel_fn, static_argnames="get")
        fn = lambda: kfn(x1, x2, get="ntk").block_until_ready()  # noqa: E731
    seconds, out = _best(fn, repeat)
    return seconds, np.asarray(out)


def _layers(kind: str) -> list[str]:
    """Layer kinds of the stax model in order, parameters or not (the serial params list)."""
    if kind == "entk_mlp":
        return ["Dense", "Relu"] * 3 + ["Dense"]
    return ["Conv", "Relu", "Pool", "Conv", "Relu", "Pool", "Conv", "Relu", "Gap", "Dense"]


# ---------------------------------------------------------------- driver


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if python.exists():
        return python
    print(f"creating the neural-tangents environment {VENV} (once; a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *PINS], check=True)
    subprocess.run([*pip, "--no-deps", *NO_DEPS], check=True)
    return python


def _busy_cores(seconds: float = 0.5) -> float:
    """Cores' worth of CPU time used by all processes over ``seconds`` (``/proc/stat``; the
    load average where it is missing, which lags by minutes)."""
    try:
        before = Path("/proc/stat").read_text().split()[1:9]
        time.sleep(seconds)
        after = Path("/proc/stat").read_text().split()[1:9]
    except OSError:
        return os.getloadavg()[0]
    ticks = [int(b) - int(a) for a, b in zip(before, after, strict=True)]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return (os.cpu_count() or 1) * (1 - idle / max(sum(ticks), 1))


def run_worker(
    python: str, which: str, name: str, data: Path, out: Path, repeat: int, one_shot: bool
) -> float:
    busy = _busy_cores() > 1
    env = {**os.environ, **({"OMP_WAIT_POLICY": "PASSIVE"} if busy else {})}
    if which == "ntkscope":
        source = str(Path(__file__).resolve().parents[1] / "src")
        env["PYTHONPATH"] = source + os.pathsep + env.get("PYTHONPATH", "")
    command = [python, __file__, "--worker", which, "--row", name, "--data", str(data)]
    command += ["--out", str(out), "--repeat", str(repeat)] + (["--one-shot"] if one_shot else [])
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{which} worker for {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def compare(name: str, python: Path, tmp: Path, rounds: int, repeat: int, one_shot: bool) -> None:
    description, kind, args = ROWS[name]
    data = tmp / f"{name}.npz"
    export(kind, args, data)
    best = {"ntkscope": float("inf"), "nt": float("inf")}
    for _ in range(rounds):
        for which, exe in (("ntkscope", sys.executable), ("nt", str(python))):
            out = tmp / f"{name}.{which}.npy"
            seconds = run_worker(exe, which, name, data, out, repeat, one_shot)
            best[which] = min(best[which], seconds)
    import numpy as np

    ours, theirs = (np.load(tmp / f"{name}.{w}.npy").astype(np.float64) for w in best)
    difference = np.abs(ours - theirs).max() / np.abs(theirs).max()
    ratio = best["ntkscope"] / best["nt"]
    print(
        f"| {description} | {best['ntkscope'] * 1e3:.1f} ms | {best['nt'] * 1e3:.1f} ms "
        f"| {ratio:.2f} | {difference:.1e} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ROWS), help="rows, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="worker processes of each kind")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per worker")
    parser.add_argument("--one-shot", action="store_true", help="plain empirical_ntk calls")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _, kind, row_args = ROWS[args.row]
        row_args = {**row_args, "one_shot": args.one_shot}
        work = ntkscope_worker if args.worker == "ntkscope" else nt_worker
        seconds, out = work(kind, row_args, Path(args.data), args.repeat)
        __import__("numpy").save(args.out, out)
        print(json.dumps({"seconds": seconds}))
        return
    python = ensure_venv()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.1f} at the start; 2 threads each")
    print("| case | ntkscope | neural-tangents | ratio | max rel. difference |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            compare(name, python, Path(tmp), args.rounds, args.repeat, args.one_shot)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
