"""The cost of one run, estimated before it runs: seconds on the calibration machine, peak memory.

A study's ``cost(config)`` counts the floating-point work of its dominant operations with
the helpers here and returns a `Cost`:

- training: 6 · N · P · positions FLOPs per full-batch step (forward 2 · N · P, backward
  twice that), N examples, P parameters, ``positions`` the spatial positions each weight is
  applied at (1 for dense layers; a CNN's map sizes averaged over its blocks);
- an empirical NTK between N1 and N2 inputs with O outputs: 6 · (N1 + N2) · P · O ·
  positions for the features, and 2 · N1 · N2 · O · min(P, units · positions²) for their
  contraction (O² in "full" mode), units = Σ_l (fan-in + fan-out) (`Net`);
- the infinite-width kernels: 20 · N1 · N2 · L FLOPs for an MLP of depth L, times
  (H · W)² for a CNN (its covariance tensor holds every pair of positions).

Seconds are that work at a nominal `RATE`, plus a fixed cost per eNTK call and per training
step (`ENTK_CALL`, `STEP`, which dominate small runs), times the study's `CALIBRATION`
factor, measured on its runs on the quiet 2-core development machine with one torch thread.
They are estimates: one run's may be off
by a factor of a few (early stopping, small matrices), a preset's total by less; a faster
machine takes less.

Peak memory is a worker's base (interpreter, torch, ntkscope, a data set) plus float64
parameters times the copies a study keeps (model, gradients, initial parameters, a
linearized copy, ...) plus the kernels and features it holds; eNTK working memory is bounded
by `ntkscope.empirical_ntk`'s budget and counted up to `ENTK_WORKSPACE`.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_MEMORY = 0.5e9
"""Bytes of a worker before its run: 0.40 GB resident measured with torch, ntkscope and
every study imported, plus room for a data set."""
FLOAT = 8
"""Bytes per float64 entry."""
ENTK_WORKSPACE = 2.5e9
"""Bytes counted for an eNTK's features: the smaller of the features and this (its tiles are
bounded by a memory budget, a quarter of available RAM by default)."""

ENTK_CALL = 0.01
"""Seconds of one `ntkscope.empirical_ntk` call beyond its FLOPs (planning, the check of its
method on a probe): 10–34 ms measured for a 4-input MLP, depending on the machine's load."""
STEP = 0.002
"""Seconds of one training step beyond its FLOPs (recorders, Python): 2–6 ms measured for a
4-input MLP, depending on the machine's load."""

RATE = 1e10
"""FLOPs per second of one core with one torch thread (nominal; of the rates tried, 2e9, 1e10
and 3e10, the one that spread the calibration runs' estimate / measured ratios least)."""

CALIBRATION = {
    "width_convergence": 0.52,
    "init_fluctuations": 0.42,
    "phase_diagram": 0.39,
    "scaling_laws": 0.15,
    "kernel_over_time": 0.21,
    "width_effect": 0.19,
    "optimization": 0.25,
    "uncertainty": 0.019,
    "continual": 0.13,
}
"""Each study's estimate is multiplied by its factor here, set by
``benchmarks/calibrate_costs.py`` so that the estimates of its runs on the quiet 2-core
development machine (one torch thread per run, two workers) add up to their measured time:
the 438 runs of the standard preset of 2026-11-30 (711 s of runs, 6.8 min of wall time). It
absorbs what the count misses: small matrices, Python, and the training steps that early
stopping and convergence save (the count takes every step up to ``max_steps``:
uncertainty's factor says its trainings stop after a small share of it). One run's estimate
is within a factor of 2–5 of its time (the spread the script prints, up to 20 for the
shortest continual runs); a study's total, over many runs, closer; on a loaded machine
expect up to twice the estimate."""


@dataclass(frozen=True)
class Cost:
    """Estimated cost of one run.

    Attributes:
        seconds: wall time on the calibration machine with one torch thread.
        memory: peak resident bytes of the worker during the run.
    """

    seconds: float
    memory: float


def cost_of(study: str, flops: float, floats: float, entks: int = 0, steps: int = 0) -> Cost:
    """The cost of ``flops`` of work, ``entks`` eNTK calls and ``steps`` training steps,
    calibrated for ``study`` (`CALIBRATION`), holding ``floats`` float64 entries."""
    seconds = CALIBRATION[study] * (flops / RATE + entks * ENTK_CALL + steps * STEP)
    return Cost(seconds, BASE_MEMORY + FLOAT * floats)


@dataclass(frozen=True)
class Net:
    """What the cost model needs of a network.

    Attributes:
        params: trainable parameters P.
        units: Σ over layers of fan-in + fan-out: the per-example features (activations and
            output gradients) of the structured eNTK, whose contraction costs N1 · N2 · units
            instead of N1 · N2 · P.
        positions: spatial positions each weight is applied at (1 for dense layers).
        outputs: output dimension O.
    """

    params: int
    units: int
    positions: float
    outputs: int


def mlp(d_in: int, width: int, depth: int, d_out: int) -> Net:
    """`ntkscope.models.mlp` with ``depth`` hidden layers."""
    if depth == 0:
        return Net((d_in + 1) * d_out, d_in + d_out, 1.0, d_out)
    params = (d_in + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * d_out
    return Net(params, d_in + 2 * width * depth + d_out, 1.0, d_out)


def cnn(channels: int, side: int, width: int, depth: int, d_out: int) -> Net:
    """`ntkscope.models.cnn` (3×3 convolutions, global average pooling) on side² images whose
    blocks pool as `cnn_pools` says; positions: the blocks' map sizes averaged."""
    params = (9 * channels + 1) * width + (depth - 1) * (9 * width + 1) * width
    params += (width + 1) * d_out
    units = 9 * channels + width + (depth - 1) * 10 * width + width + d_out
    pools = cnn_pools(side, depth)
    positions = sum((side / 2 ** min(b, pools)) ** 2 for b in range(depth)) / depth
    return Net(params, units, positions, d_out)


def cnn_pools(side: int, depth: int) -> int:
    """2×2 poolings a CNN of ``depth`` blocks applies to images whose height and width are
    multiples of ``side``: one after every block but the last, as far as the side stays
    divisible by 2 (28: up to 2 poolings; 14 → 7: one; 7: none)."""
    twos = (side & -side).bit_length() - 1  # the power of 2 in side
    return max(0, min(depth - 1, twos))


def train_flops(n: float, net: Net, steps: int) -> float:
    """``steps`` gradient steps on ``n`` examples: 6 · n · P · positions each."""
    return 6.0 * n * net.params * net.positions * steps


def entk_flops(n1: int, n2: int, net: Net, full: bool = False) -> float:
    """One empirical NTK between n1 and n2 inputs: the per-output backward passes, then the
    contraction of the features (structured: N1 · N2 · units · positions², at most the
    Jacobians' N1 · N2 · P), pairwise over outputs when ``full``."""
    pairs = net.outputs**2 if full else net.outputs
    contraction = min(net.params, net.units * net.positions**2)
    return 6.0 * (n1 + n2) * net.params * net.positions * net.outputs + (
        2.0 * n1 * n2 * contraction * pairs
    )


def entk_floats(n: int, net: Net) -> float:
    """Floats held by an eNTK's features, at most `ENTK_WORKSPACE` bytes."""
    return min(n * net.outputs * net.units * net.positions, ENTK_WORKSPACE / FLOAT)


def infinite_flops(n1: int, n2: int, depth: int, side: int | None = None) -> float:
    """The infinite NNGP and NTK between n1 and n2 inputs (an MLP, or a CNN on side² images)."""
    pairs = 1.0 if side is None else float(side**2) ** 2
    return 20.0 * n1 * n2 * max(depth, 1) * pairs


_IMAGES = {"digits": (1, 8), "mnist": (1, 28), "cifar10": (3, 32), "svhn": (3, 32), "npz": (1, 28)}
"""Channels and side of the built-in image tasks, by the task name's first word (npz: MNIST's,
a guess for the user's files)."""


def task_shape(task: str, d: int, image_size: int | None) -> tuple[int, int | None, int]:
    """(channels, image side or None, flat input dimension) of a task of `ntkscope.data`."""
    family = str(task).split("_")[0]
    if family not in _IMAGES:  # single_index, sparse_parity, gaussian: d features
        return 1, None, d
    channels, side = _IMAGES[family]
    side = image_size or side
    return channels, side, channels * side**2
