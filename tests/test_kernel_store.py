"""Kernels in a zarr store: exactly the in-memory kernels, resumable, refused when changed.

Exactness: a store's tiles are the in-memory function's tiles for the same memory budget,
computed by the same operations, so the tests compare with ``torch.equal`` (no tolerance).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ntkscope as ns
from ntkscope import kernel_store
from ntkscope.runner import tiled
from ntkscope.runner.executors import DaskExecutor

SETUP = """
import torch
import ntkscope as ns
torch.set_num_threads(1)
model = ns.models.mlp(8, 32, 2, 3, seed=0)
x = torch.randn(240, 8, generator=torch.Generator().manual_seed(0))
"""
BUDGET = 64_000
"""Bytes: tiles of 16 examples, 15 × 16 / 2 = 120 tiles for the 240 inputs of SETUP."""


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread, as a Dask worker has: shared CI cores are not oversubscribed."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def setup():
    scope = {}
    exec(SETUP, scope)
    return scope["model"], scope["x"]


def stored(path, name=None):
    s = kernel_store.open(path)
    return torch.from_numpy((s.kernel if name is None else s.arrays[name]).compute())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["structured", "jacobian"])
def test_entk_store_is_the_in_memory_kernel(tmp_path, dtype, method):
    model, x = setup()
    n, budget = (60, BUDGET) if method == "structured" else (24, 200_000)  # Jacobians: 17 kB
    model, x = model.to(dtype), x[:n].to(dtype)
    report = kernel_store.compute(
        "entk", x, store=tmp_path / "k.zarr", model=model, method=method, memory_budget=budget
    )
    assert report.failed == () and report.computed == report.tiles > 1
    expected = ns.empirical_ntk(model, x, method=method, memory_budget=budget)
    k = stored(tmp_path / "k.zarr")
    assert k.dtype == dtype and torch.equal(k, expected)


def test_full_mode_rectangular_and_symmetric(tmp_path):
    model, x = setup()
    args = dict(model=model, mode="full", memory_budget=BUDGET)
    kernel_store.compute("entk", x[:30], x[30:50], store=tmp_path / "r.zarr", **args)
    expected = ns.empirical_ntk(model, x[:30], x[30:50], mode="full", memory_budget=BUDGET)
    assert torch.equal(stored(tmp_path / "r.zarr"), expected)
    kernel_store.compute("entk", x[:40], store=tmp_path / "s.zarr", **args)
    expected = ns.empirical_ntk(model, x[:40], mode="full", memory_budget=BUDGET)
    assert expected.shape == (40, 40, 3, 3)
    assert torch.equal(stored(tmp_path / "s.zarr"), expected)


@pytest.mark.parametrize("x2", [None, slice(40, 70)])
def test_infinite_store_is_the_in_memory_kernel(tmp_path, x2):
    x = setup()[1]
    args = dict(depth=2, activation="relu", sigma_b=0.1, memory_budget=16 * 15 * 15)
    second = None if x2 is None else x[x2]
    report = kernel_store.compute("infinite", x[:40], second, store=tmp_path / "i.zarr", **args)
    # ReLU's 16 bytes per entry (the in-place layer's two arrays beyond the tile's NNGP and
    # NTK, which the job returns like the in-memory kernel's outputs): 225 entries, tiles
    # of 15 × 15, 3 × 4 / 2 above the diagonal, or of 15 × 15, 3 × 2
    assert report.tiles == 6
    nngp, ntk = ns.infinite_kernels(x[:40], second, **args)
    assert torch.equal(stored(tmp_path / "i.zarr", "nngp"), nngp)
    assert torch.equal(stored(tmp_path / "i.zarr", "ntk"), ntk)


def test_infinite_cnn_store_is_the_in_memory_kernel(tmp_path):
    images = torch.randn(12, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    # per tile room for a chunk of block 0 in half the budget (12,800 bytes), per pair block
    # 1's 16 position pairs × 40 B (ReLU in place, 4 + 1 arrays): 20 pairs a tile, tiles of
    # 4 × 4 images
    args = dict(depth=2, pool_after=[0], memory_budget=2 * 20 * 16 * 40)
    report = kernel_store.compute("infinite_cnn", images, store=tmp_path / "c.zarr", **args)
    assert report.tiles == 6  # 12 images: 3 × 3 tiles, 6 on and above the diagonal
    nngp, ntk = ns.infinite_cnn_kernels(images, **args)
    assert torch.equal(stored(tmp_path / "c.zarr", "nngp"), nngp)
    assert torch.equal(stored(tmp_path / "c.zarr", "ntk"), ntk)


def test_symmetric_job_fills_the_symmetric_kernel_from_its_upper_triangle(tmp_path):
    model, x = setup()
    report = kernel_store.compute(
        "entk", x[:64], store=tmp_path / "k.zarr", model=model, memory_budget=BUDGET
    )
    assert report.tiles == 4 * 5 // 2  # 4 row blocks of 16: the upper triangle only
    assert all(j >= i for i, j in tiled.done_tiles(tmp_path / "k.zarr"))
    k = stored(tmp_path / "k.zarr")
    assert torch.equal(k, k.T)


def test_changed_arguments_are_refused_naming_what_differs(tmp_path):
    model, x = setup()
    path = tmp_path / "k.zarr"
    kernel_store.compute("entk", x[:20], store=path, model=model, memory_budget=BUDGET)
    other = ns.models.mlp(8, 32, 2, 3, seed=1)
    changes = {
        "model_hash": dict(x1=x[:20], model=other),
        "data_hash": dict(x1=x[1:21], model=model),
        "mode": dict(x1=x[:20], model=model, mode="full"),
        "dtype": dict(x1=x[:20].double(), model=ns.models.mlp(8, 32, 2, 3, seed=0).double()),
        "method": dict(x1=x[:20], model=model, method="jacobian", memory_budget="1MB"),
    }
    for name, args in changes.items():
        with pytest.raises(ValueError, match=rf"store: .* differs: .*{name} \(store: "):
            kernel_store.compute("entk", store=path, **({"memory_budget": BUDGET} | args))
    with pytest.raises(ValueError, match=r"differs: .*kind \(store: 'entk', given: 'infinite'"):
        kernel_store.compute("infinite", x[:20], store=path, depth=1)


def test_bad_arguments_get_clear_errors(tmp_path):
    model, x = setup()
    args = dict(store=tmp_path / "k.zarr", model=model)
    cases = [
        (dict(x1=x, store=tmp_path / "no" / "k.zarr"), "store: directory .* does not exist"),
        (dict(x1=x[:0]), "x1: "),
        (dict(x1=x[:5], x2=x[:5, :4]), "x2: the model cannot be applied"),
        (dict(x1=x[:5], targets=torch.zeros(4)), r"targets: expected 5 rows"),
        (dict(x1=x[:5], memory_budget=100), "memory_budget: 100 bytes is too small"),
        (dict(x1=x[:5], kind="ntk"), "kind: "),
        (dict(x1=x[:5], model=None), "model: kind='entk' needs a model"),
    ]
    for case, message in cases:
        with pytest.raises(ValueError, match=message):
            kernel_store.compute(**({"kind": "entk"} | args | case))
    with pytest.raises(ValueError, match="memory_budget: 10 bytes is too small; one pair"):
        kernel_store.compute("infinite", x[:5], store=args["store"], depth=1, memory_budget=10)
    with pytest.raises(ValueError, match="model: kind='infinite' takes no model"):
        kernel_store.compute("infinite", x[:5], store=args["store"], depth=1, model=model)
    with pytest.raises(TypeError, match=r"kernel_args: .*'width' \(of infinite_kernels"):
        kernel_store.compute("infinite", x[:5], store=args["store"], depth=1, width=3)
    with pytest.raises(ValueError, match="kernel_args: diagonal is not a kernel job"):
        kernel_store.compute("infinite", x[:5], store=args["store"], depth=1, diagonal=True)
    with pytest.raises(ValueError, match="store: no such store"):
        kernel_store.open(tmp_path / "none.zarr")
    assert not (tmp_path / "k.zarr").exists()


class _RootOfFirstInput(torch.nn.Module):
    """An MLP's outputs times sqrt(1 + x₀): finite where x₀ ≥ -1, NaN elsewhere."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * (1 + x[:, :1]).sqrt()


def test_tiles_with_nan_entries_fail_naming_x1_and_are_not_stored(tmp_path):
    """The model is finite on the first example (the probe the plan checks) and NaN on the
    last 16: their tiles fail with the eNTK's own message, the others are stored."""
    model, x = setup()
    x = x[:48].clone()
    x[:32, 0], x[32:, 0] = 0.5, -2.0
    path = tmp_path / "k.zarr"
    report = kernel_store.compute(
        "entk", x, store=path, model=_RootOfFirstInput(model), memory_budget=BUDGET
    )
    assert report.tiles == 6 and report.computed == 3  # tiles of 16: (0,0) (0,1) (1,1) finite
    assert {(t.i, t.j) for t in report.failed} == {(0, 2), (1, 2), (2, 2)}
    assert all("x1: the eNTK tile has NaN or infinite entries" in t.error for t in report.failed)
    with pytest.raises(ValueError, match=r"store: .* lacks 3 of 6 tiles"):
        kernel_store.open(path)


def test_incomplete_store_is_refused_unless_partial(tmp_path):
    model, x = setup()
    path = tmp_path / "k.zarr"
    kernel_store.compute("entk", x[:40], store=path, model=model, memory_budget=BUDGET)
    import zarr

    zarr.open_array(path / "done", mode="r+")[0, 1] = 0
    with pytest.raises(ValueError, match=r"store: .* lacks 1 of 6 tiles"):
        kernel_store.open(path)
    assert kernel_store.open(path, partial=True).kernel.shape == (40, 40)


def _counted(counter: Path) -> list[tuple[int, int]]:
    lines = counter.read_text().split("\n") if counter.exists() else []
    return [tuple(map(int, line.split())) for line in lines if line]


KILLED = (
    SETUP
    + """
import sys
from ntkscope import kernel_store
kernel_store.compute("entk", x, store=sys.argv[1], model=model, memory_budget=int(sys.argv[2]))
"""
)


def test_resume_after_sigkill_computes_no_finished_tile_again(tmp_path, monkeypatch):
    path, counter = tmp_path / "k.zarr", tmp_path / "count"
    src = str(Path(ns.__file__).resolve().parents[1])
    path_env = os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])
    env = os.environ | {"PYTHONPATH": path_env, tiled.TILE_LOG: str(counter)}
    command = [sys.executable, "-c", KILLED, str(path), str(BUDGET)]
    child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(_counted(counter)) < 30 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()
    finished = tiled.done_tiles(path)
    started = _counted(counter)
    assert 0 < len(finished) < 120 and len(started) <= len(finished) + 1
    counter.unlink()
    monkeypatch.setenv(tiled.TILE_LOG, str(counter))
    model, x = setup()
    report = kernel_store.compute("entk", x, store=path, model=model, memory_budget=BUDGET)
    resumed = _counted(counter)
    assert (report.skipped, report.computed) == (len(finished), 120 - len(finished))
    assert set(resumed).isdisjoint(finished) and len(resumed) == len(set(resumed))
    assert len(started) + len(resumed) <= 120 + 1  # at most the one tile in flight again
    assert torch.equal(stored(path), ns.empirical_ntk(model, x, memory_budget=BUDGET))


class _CtrlC:
    """A progress that presses Ctrl-C in this process when the first tile is done."""

    def resize(self, total: int) -> None:
        pass

    def advance(self, ok: bool) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_on_a_local_cluster_spares_its_workers_and_resumes(tmp_path, capfd):
    """Regression: a terminal's Ctrl-C reaches the LocalCluster's workers too, which died
    printing tracebacks. They ignore SIGINT now (same processes after one); this process
    stops with the tiles stored so far, closes the cluster without a traceback, and the
    same call again completes the store with the in-memory kernel."""
    model, x = setup()
    path, args = tmp_path / "k.zarr", dict(model=model, memory_budget=BUDGET)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(tiled.TilesInterrupted) as stop, DaskExecutor(local_workers=2) as ex:
            workers = ex.client.run(os.getpid)
            for pid in workers.values():
                os.kill(pid, signal.SIGINT)
            time.sleep(0.5)
            assert ex.client.run(os.getpid) == workers
            kernel_store.compute("entk", x[:96], store=path, client=ex.client,
                                 progress=_CtrlC(), **args)  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    assert 1 <= stop.value.stored < 21 and stop.value.tiles == 21
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ERROR" not in err, err
    report = kernel_store.compute("entk", x[:96], store=path, **args)
    assert report.skipped >= stop.value.stored and report.failed == ()
    assert torch.equal(stored(path), ns.empirical_ntk(model, x[:96], memory_budget=BUDGET))


def test_local_cluster_of_two_workers_writes_the_same_bytes(tmp_path):
    model, x = setup()
    args = dict(model=model, memory_budget=BUDGET, targets=torch.arange(96))
    kernel_store.compute("entk", x[:96], store=tmp_path / "inline.zarr", **args)
    with DaskExecutor(local_workers=2) as executor:
        report = kernel_store.compute(
            "entk", x[:96], store=tmp_path / "dask.zarr", client=executor.client, **args
        )
        assert report.computed == 21 and report.failed == ()
    inline, dask = (kernel_store.open(tmp_path / f"{n}.zarr") for n in ("inline", "dask"))
    assert inline.identity == dask.identity
    a, b = inline.kernel.compute(), dask.kernel.compute()
    assert a.dtype == b.dtype == np.float32 and a.tobytes() == b.tobytes()
    np.testing.assert_array_equal(dask.targets, np.arange(96))


def test_cg_ridge_on_a_stored_kernel_equals_cholesky_to_its_tolerance(tmp_path):
    model, x = setup()
    y = torch.randn(100, 2, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "k.zarr"
    kernel_store.compute("entk", x[:100], store=path, model=model, targets=y, memory_budget=BUDGET)
    s = kernel_store.open(path)
    k = torch.from_numpy(s.kernel.compute()).double()[:80, :80]
    ridge, tol = 1e-3 * float(k.diagonal().mean()), 1e-10
    cholesky = s.ridge(80, ridge, memory_budget="1GB")
    cg = s.ridge(80, ridge, memory_budget=1000, tol=tol)
    assert (cholesky.solver, cg.solver) == ("cholesky", "cg") and cg.relative_residual <= tol
    eigenvalues = torch.linalg.eigvalsh(k + ridge * torch.eye(80, dtype=torch.float64))
    condition = float(eigenvalues[-1] / eigenvalues[0])
    error = torch.linalg.norm(cg.weights - cholesky.weights) / torch.linalg.norm(cholesky.weights)
    # ‖α_cg − α*‖ ≤ κ · tol · ‖α*‖, plus Cholesky's own rounding (κ · 1e-16 ≪ κ · tol)
    assert error <= condition * tol
    assert torch.allclose(cg.predictions, cholesky.predictions, rtol=0, atol=condition * tol)


def test_lanczos_top_eigenvalues_of_a_stored_kernel(tmp_path):
    model, x = setup()
    path = tmp_path / "k.zarr"
    kernel_store.compute("entk", x[:60], store=path, model=model, memory_budget=BUDGET)
    s = kernel_store.open(path)
    exact = np.linalg.eigvalsh(s.kernel.compute().astype(np.float64))[::-1][:4]
    # ARPACK's relative accuracy tol = 1e-10 per eigenvalue
    np.testing.assert_allclose(s.eigenvalues(4, tol=1e-10), exact, rtol=1e-9)
    with pytest.raises(ValueError, match="k: Lanczos finds fewer than N = 60"):
        s.eigenvalues(60)
