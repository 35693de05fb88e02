"""The studies' ``kernel_cluster``: the same results as in one process, config identity kept.

Each cluster run is compared with the same config run in its own process. The kernel store
holds the tiles of the in-memory functions, and these kernels fit one tile, so the kernels
are the same numbers; training runs in the test's process either way. The tables are
compared at rtol 1e-12 (float64 rounding, should a worker's BLAS sum in another order).
"""

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from ntkscope.runner.sweep import canonical_json, config_hash
from ntkscope.studies import kernel_over_time, scaling_laws, width_effect
from ntkscope.studies._kernel_cluster import IN_PROCESS, kernel_functions

TINY_CNN = {"task": "digits_parity", "model": "cnn", "image_size": 4, "width": 8, "depth": 2,
            "d": 8, "sizes": (8, 12, 16, 24, 32, 48), "n_val": 16, "n_test": 32,
            "max_steps": 10, "lr": 0.2, "after_kernel_sizes": (8, 48),
            "ridges": (1e-3, 1e-1)}  # fmt: skip


def _same_tables(local, cluster) -> None:
    for name, table in local.tables.items():
        pd.testing.assert_frame_equal(table, cluster.tables[name], check_exact=False, rtol=1e-12)


@pytest.mark.slow
def test_scaling_laws_on_a_local_cluster_equals_one_process():
    config = scaling_laws.Config(**TINY_CNN)
    local = scaling_laws.run(config, lambda d, t: None)
    on_cluster = config.model_copy(update={"kernel_cluster": "local:2"})
    _same_tables(local, scaling_laws.run(on_cluster, lambda d, t: None))


@pytest.mark.slow
def test_kernel_over_time_and_width_effect_on_a_local_cluster_equal_one_process():
    for study, fields in (
        (kernel_over_time, {"n_train": 48, "n_val": 24, "n_test": 32, "width": 32,
                            "steps": 20, "checkpoints": 6, "probe_size": 16}),
        (width_effect, {"n_train": 64, "n_val": 32, "n_test": 48, "widths": (8, 32),
                        "seeds": 1, "steps": 10, "eval_every": 5}),
    ):  # fmt: skip
        config = study.Config(**fields)
        local = study.run(config, lambda d, t: None)
        cluster = study.run(config.model_copy(update={"kernel_cluster": "local:1"}),
                            lambda d, t: None)  # fmt: skip
        _same_tables(local, cluster)
        assert local.metrics.keys() == cluster.metrics.keys()


def test_on_cluster_kernels_equal_the_in_process_functions():
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5)).double()
    config = scaling_laws.Config(kernel_cluster="local:1")
    with kernel_functions(config) as kernels:
        cnn = kernels.infinite("infinite_cnn", x, x[:4], depth=2)
        entk = kernels.entk(model, x, mode="full")
    expected = IN_PROCESS.infinite("infinite_cnn", x, x[:4], depth=2)
    assert all(torch.equal(a, b) for a, b in zip(cnn, expected, strict=True))
    assert torch.equal(entk, IN_PROCESS.entk(model, x, mode="full"))


def test_cluster_fields_are_execution_settings():
    plain = scaling_laws.Config()
    clustered = scaling_laws.Config(kernel_cluster="tcp://scheduler:8786", kernel_scratch="/s")
    assert canonical_json(clustered) == canonical_json(plain)
    assert config_hash("scaling_laws", clustered) == config_hash("scaling_laws", plain)
    for bad in ("local:0", "local:two", "scheduler:8786"):
        with pytest.raises(ValidationError, match="kernel_cluster: expected 'local:W'"):
            scaling_laws.Config(kernel_cluster=bad)


def test_a_sweep_hands_the_cluster_fields_to_its_runs_and_stores_the_config_without_them(
    tmp_path,
):
    from ntkscope.runner import InlineExecutor, Sweep, load, run_sweep
    from ntkscope.studies import get

    config = scaling_laws.Config(kernel_cluster="local:1", kernel_scratch=str(tmp_path / "no"))
    run_sweep(Sweep(get("scaling_laws"), (config,)), tmp_path / "out", InlineExecutor())
    [row] = load(tmp_path / "out").to_dict("records")
    assert row["status"] == "failed" and "kernel_scratch: no such folder" in row["error"]
    assert {"config.kernel_cluster", "config.kernel_scratch"}.isdisjoint(row)
    assert "config.after_kernel_sizes" in row


def test_the_readmes_cluster_sweep_validates(tmp_path):
    from pathlib import Path

    from ntkscope.runner import load_sweep

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b.split("```")[0] for b in readme.split("```toml\n")[1:]]
    [block] = [b for b in blocks if "kernel_cluster" in b]
    (tmp_path / "sweep.toml").write_text(block)
    [config] = load_sweep(tmp_path / "sweep.toml").configs
    assert config.kernel_cluster == "tcp://scheduler:8786" and config.kernel_memory_budget == "8GB"
