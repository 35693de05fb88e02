"""The README's Python examples run as written (a user copies them first)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


STATED_METHOD = re.compile(r'^(ns\.kernels\.resolve_method\(.*\))\s+# "(\w+)"', flags=re.M)
"""A README line ``ns.kernels.resolve_method(...)  # "method"``: a claim the test checks."""


def test_readme_python_blocks_run():
    """The blocks run in order, and each ``resolve_method`` line returns the method its
    comment names (the tour and the BERT example state one each)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    stated = 0
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
        for call, method in STATED_METHOD.findall(block):
            assert eval(call, namespace) == method, call
            stated += 1
    assert namespace["K"].shape == (128, 128)
    assert stated >= 2


def _test_command(text: str) -> str:
    """The default test command: the ``python -m pytest -m "not slow" ...`` of a line."""
    [command] = re.findall(r'python -m pytest -m "not slow"[^\n&]*', text)
    return command.strip()


def test_readme_and_ci_run_the_same_parallel_test_command():
    """README's command 2 and ``.ci/run`` stay identical, run with pytest-xdist."""
    command = _test_command(README.read_text())
    assert command == _test_command((ROOT / ".ci" / "run").read_text())
    assert "-n auto" in command


def test_the_conventions_referred_to_exist():
    """Every ``docs/conventions.md, "Section"`` reference names a heading of the file."""
    conventions = ROOT / "docs" / "conventions.md"
    headings = re.findall(r"^#+ (?:\d+\. )?(.+)$", conventions.read_text(), flags=re.M)
    sources = [*(ROOT / "src").rglob("*.py"), README]
    for path in sources:
        for section in re.findall(r'docs/conventions\.md,? \(?"([^"]+)"', path.read_text()):
            assert any(section in h for h in headings), (path, section)
