import os
from pathlib import Path

import pytest

import ntkscope
from ntkscope.runner import InlineExecutor, expand, run_sweep

HERE = Path(__file__).resolve().parent


@pytest.fixture
def toy(monkeypatch):
    """The test-only study ``_toy_study``, importable here and in spawned workers."""
    monkeypatch.syspath_prepend(str(HERE))
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    return "_toy_study"


@pytest.fixture
def toy_store(toy, tmp_path):
    """A store with 4 toy runs, one of which (value 3) failed."""
    spec = {"study": toy, "product": {"value": [0, 1, 2]}}
    run_sweep(expand(spec), tmp_path, InlineExecutor())
    run_sweep(
        expand({"study": toy, "fixed": {"value": 3, "fail": True}}), tmp_path, InlineExecutor()
    )
    return tmp_path


def python_env() -> dict[str, str]:
    """Environment of a subprocess that imports this ntkscope and the toy study."""
    src = str(Path(ntkscope.__file__).resolve().parents[1])
    return os.environ | {"PYTHONPATH": os.pathsep.join([str(HERE), src])}
