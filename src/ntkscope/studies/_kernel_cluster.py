"""Where a study computes its kernels on large n: in its own process, or tile by tile on Dask.

The studies whose kernels grow with the sample size (scaling_laws, kernel_over_time,
width_effect) take `ClusterFields`. With ``kernel_cluster`` set, `kernel_functions` yields
kernel functions (eNTK, infinite MLP and CNN kernels) that write each kernel into a
temporary zarr store through `ntkscope.kernel_store.compute` on that cluster (tiles on the
workers, the model and the inputs scattered once per kernel), read it back and delete the
store. Each kernel is the one the in-memory function returns, tile for tile (the store
holds its tiles), so these fields are execution settings, not part of what a run measures:
they are left out of the config's stored JSON and of its hash, and a result computed on a
cluster stands for the same config computed in one process.

Layering: `ntkscope.kernel_store` composes the runner and the kernels, and the runner
imports the studies, so this module imports the store and the executor when a cluster is
used, after every package is loaded.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator

from ntkscope.kernels import empirical_ntk, infinite_cnn_kernels, infinite_kernels
from ntkscope.studies._base import EXECUTION, StudyConfig

LOCAL = "local:"

INFINITE = {"infinite": infinite_kernels, "infinite_cnn": infinite_cnn_kernels}
"""The in-memory functions of `ntkscope.kernel_store`'s infinite kinds."""


class ClusterFields(StudyConfig):
    """The fields that send a study's large kernels to a Dask cluster (execution only)."""

    kernel_cluster: str | None = Field(None, json_schema_extra=EXECUTION)
    """Where the kernels are computed: None, in the run's process; ``"local:W"``, a
    LocalCluster of W single-threaded workers; or a scheduler address
    ``"tcp://host:8786"`` (any Dask cluster, e.g. dask-jobqueue on Slurm or PBS, whose
    workers see ``kernel_scratch``). Not stored with the config nor hashed (`EXECUTION`):
    the kernels are those computed in one process."""
    kernel_scratch: str | None = Field(None, json_schema_extra=EXECUTION)
    """Folder of the temporary kernel stores, on a file system the workers share; None:
    the system's temporary folder (enough for ``"local:W"``)."""
    kernel_memory_budget: str | None = Field(None, json_schema_extra=EXECUTION)
    """Working memory of one worker ("2GB"; it sets the tile size); None: a quarter of
    the free memory, as `empirical_ntk`."""

    @field_validator("kernel_cluster")
    @classmethod
    def _cluster_address(cls, value: str | None) -> str | None:
        if value is not None:
            _executor_arguments(value)
        return value


def _executor_arguments(cluster: str) -> dict[str, Any]:
    """``DaskExecutor`` keywords of a ``kernel_cluster`` value."""
    if cluster.startswith(LOCAL):
        workers = cluster.removeprefix(LOCAL)
        if not workers.isdigit() or int(workers) < 1:
            raise ValueError(f"kernel_cluster: expected 'local:W' with W ≥ 1, got {cluster!r}")
        return {"local_workers": int(workers)}
    if "://" not in cluster:
        raise ValueError(
            f"kernel_cluster: expected 'local:W' or a scheduler address such as "
            f"'tcp://host:8786', got {cluster!r}"
        )
    return {"address": cluster}


class InProcess:
    """The kernel functions themselves, in the run's process."""

    @staticmethod
    def entk(model: Any, x1: Any, x2: Any = None, **options: Any) -> torch.Tensor:
        """`ntkscope.empirical_ntk` (``mode``, ``method``, ``memory_budget``)."""
        return empirical_ntk(model, x1, x2, **options)

    @staticmethod
    def infinite(kind: str, x1: torch.Tensor, x2: torch.Tensor | None = None, **arguments: Any):
        """(NNGP, NTK) of `infinite_kernels` (kind "infinite") or `infinite_cnn_kernels`
        ("infinite_cnn") with their keyword arguments."""
        return INFINITE[kind](x1, x2, **arguments)


class OnCluster:
    """The same kernels as `InProcess`, computed tile by tile on a Dask client's workers
    into temporary stores under ``folder`` (each read back, then deleted)."""

    def __init__(self, client: Any, folder: Path, memory_budget: str | None) -> None:
        self.client, self.memory_budget = client, memory_budget
        self._stores = (folder / f"kernel-{i}.zarr" for i in itertools.count())

    def _compute(self, kind: str, x1, x2, **arguments: Any) -> dict[str, torch.Tensor]:
        from ntkscope import kernel_store  # here, not at import: see the module's docstring

        store = next(self._stores)
        report = kernel_store.compute(
            kind, x1, x2, store=store, client=self.client,
            memory_budget=arguments.pop("memory_budget", None) or self.memory_budget,
            **arguments,
        )  # fmt: skip
        if report.failed:
            raise RuntimeError(
                f"kernel_cluster: {len(report.failed)} of {report.tiles} tiles failed, "
                f"the first: {report.failed[0]}"
            )
        stored = kernel_store.open(store)
        arrays = {name: torch.from_numpy(array.compute()) for name, array in stored.arrays.items()}
        shutil.rmtree(store)
        return arrays

    def entk(self, model: Any, x1: Any, x2: Any = None, **options: Any) -> torch.Tensor:
        """`InProcess.entk`, on the cluster."""
        return self._compute("entk", x1, x2, model=model, **options)["kernel"]

    def infinite(self, kind: str, x1: torch.Tensor, x2: torch.Tensor | None = None, **arguments):
        """`InProcess.infinite`, on the cluster."""
        arrays = self._compute(kind, x1, x2, **arguments)
        return arrays["nngp"], arrays["ntk"]


IN_PROCESS = InProcess()


@contextmanager
def kernel_functions(config: ClusterFields) -> Iterator[InProcess | OnCluster]:
    """The kernel functions of a run: `InProcess`, or `OnCluster` on ``kernel_cluster``.

    The cluster (a LocalCluster is started here) lives as long as the ``with`` block, so a
    run that builds many kernels (one per checkpoint or seed) connects once.
    """
    if config.kernel_cluster is None:
        yield IN_PROCESS
        return
    from ntkscope.runner.executors import DaskExecutor  # see the module's docstring

    if config.kernel_scratch is not None and not Path(config.kernel_scratch).is_dir():
        raise ValueError(f"kernel_scratch: no such folder {config.kernel_scratch!r}")
    arguments = _executor_arguments(config.kernel_cluster)
    with (
        tempfile.TemporaryDirectory(dir=config.kernel_scratch) as folder,
        DaskExecutor(**arguments) as executor,
    ):
        yield OnCluster(executor.client, Path(folder), config.kernel_memory_budget)
