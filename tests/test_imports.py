"""``import ntkscope`` stays light: the optional integrations' frameworks are imported only
by the modules that use them."""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = ("lightning", "pytorch_lightning", "transformers", "tensorboard", "wandb",
            "torch.utils.tensorboard", "matplotlib.pyplot")  # fmt: skip


def test_import_ntkscope_imports_no_optional_framework():
    code = (
        "import sys, ntkscope, ntkscope.log, ntkscope.integrations; "
        f"print([m for m in {OPTIONAL!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
