import os
from pathlib import Path

import pytest
from hypothesis import settings

from ntkscope.runner import InlineExecutor, expand, run_sweep

# Kernel computations take variable time on shared CI machines: no per-example deadline.
settings.register_profile("ntkscope", deadline=None, print_blob=True)
settings.load_profile("ntkscope")


TOY = Path(__file__).resolve().parent / "runner"
"""Folder of the test-only study ``_toy_study``."""


@pytest.fixture
def toy(monkeypatch):
    """The test-only study ``_toy_study``, importable here and in spawned workers."""
    monkeypatch.syspath_prepend(str(TOY))
    path = os.pathsep.join(p for p in (str(TOY), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    return "_toy_study"


@pytest.fixture
def toy_store(toy, tmp_path):
    """A store with 4 toy runs, one of which (value 3) failed."""
    run_sweep(expand({"study": toy, "product": {"value": [0, 1, 2]}}), tmp_path, InlineExecutor())
    failing = {"study": toy, "fixed": {"value": 3, "fail": True}}
    run_sweep(expand(failing), tmp_path, InlineExecutor())
    return tmp_path


@pytest.fixture
def two_torch_threads():
    """Two torch threads (what concurrent jobs need), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)
