"""The generic tiled array job: tiles, done flags, faults, identity, mirrored reading."""

import numpy as np
import pytest
import zarr

from ntkscope.runner.tiled import Layout, done_tiles, lazy, run_job

IDENTITY = {"what": "outer product"}


class Outer:
    """A[i, j] = u_i · v_j, with optional tiles that raise; counts its calls."""

    def __init__(self, u, v, failing=()):
        self.u, self.v, self.failing, self.calls = u, v, set(failing), []

    def __call__(self, rows, cols):
        self.calls.append((rows.start, cols.start))
        if (rows.start, cols.start) in self.failing:
            raise RuntimeError("boom")
        return {"a": np.outer(self.u[rows], self.v[cols])}


def layout(n=10, tile=3, symmetric=False):
    return Layout(("a",), (n, n), (tile, tile), "float64", symmetric=symmetric)


def test_every_tile_once_and_exact(tmp_path):
    u = np.arange(10.0)
    report = run_job(Outer(u, u + 1), tmp_path / "s.zarr", layout(), IDENTITY)
    assert (report.tiles, report.skipped, report.computed, report.failed) == (16, 0, 16, ())
    np.testing.assert_array_equal(lazy(tmp_path / "s.zarr", "a").compute(), np.outer(u, u + 1))


def test_symmetric_job_runs_the_upper_triangle_and_reads_mirrored(tmp_path):
    u = np.arange(10.0)
    source = Outer(u, u)
    report = run_job(source, tmp_path / "s.zarr", layout(symmetric=True), IDENTITY)
    assert report.tiles == len(source.calls) == 4 * 5 // 2
    assert all(c >= r for r, c in source.calls)
    assert done_tiles(tmp_path / "s.zarr") == {(i, j) for i in range(4) for j in range(i, 4)}
    np.testing.assert_array_equal(lazy(tmp_path / "s.zarr", "a").compute(), np.outer(u, u))


def test_failing_tile_is_reported_and_the_others_go_on(tmp_path):
    u = np.arange(10.0)
    path = tmp_path / "s.zarr"
    report = run_job(Outer(u, u, failing={(3, 6)}), path, layout(), IDENTITY)
    assert report.computed == 15
    assert [(f.i, f.j) for f in report.failed] == [(1, 2)]
    assert "RuntimeError: boom" in report.failed[0].error
    again = Outer(u, u)
    assert run_job(again, path, layout(), IDENTITY).computed == 1
    assert again.calls == [(3, 6)]


def test_half_written_chunk_without_flag_is_recomputed(tmp_path):
    u = np.arange(10.0)
    path = tmp_path / "s.zarr"
    run_job(Outer(u, u), path, layout(), IDENTITY)
    zarr.open_array(path / "done", mode="r+")[2, 1] = 0  # as if killed after the chunk
    zarr.open_array(path / "a", mode="r+")[6:9, 3:6] = -1.0  # ... half written
    again = Outer(u, u)
    assert run_job(again, path, layout(), IDENTITY).computed == 1
    assert again.calls == [(6, 3)]
    np.testing.assert_array_equal(lazy(path, "a").compute(), np.outer(u, u))


def test_other_identity_or_layout_is_refused_naming_it(tmp_path):
    u = np.arange(10.0)
    path = tmp_path / "s.zarr"
    run_job(Outer(u, u), path, layout(), IDENTITY)
    with pytest.raises(ValueError, match=r"store: .* differs: what \(store: 'outer product'"):
        run_job(Outer(u, u), path, layout(), {"what": "other"})
    with pytest.raises(ValueError, match="differs: shape"):
        run_job(Outer(u[:9], u[:9]), path, layout(n=9), IDENTITY)


def test_resumed_store_keeps_its_tiles(tmp_path):
    u = np.arange(10.0)
    path = tmp_path / "s.zarr"
    run_job(Outer(u, u), path, layout(tile=3), IDENTITY)
    assert run_job(Outer(u, u), path, layout(tile=5), IDENTITY).skipped == 16


def test_bad_store_and_layout_are_named(tmp_path):
    u = np.arange(10.0)
    with pytest.raises(ValueError, match=r"store: directory .* does not exist"):
        run_job(Outer(u, u), tmp_path / "no" / "s.zarr", layout(), IDENTITY)
    (tmp_path / "file").mkdir()
    with pytest.raises(ValueError, match="is not an ntkscope array store"):
        run_job(Outer(u, u), tmp_path / "file", layout(), IDENTITY)
    with pytest.raises(ValueError, match="N1"):
        layout(n=0)
