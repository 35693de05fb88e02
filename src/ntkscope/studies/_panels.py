"""Panel helpers shared by the studies' figures."""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes


def without_errors(axes: Axes, errors: pd.Series) -> bool:
    """Blank ``axes`` with a note when ``errors`` (a test-error series) is all NaN, as on a
    task with real targets; returns whether it did."""
    if not errors.isna().all():
        return False
    axes.set_axis_off()
    axes.text(0.5, 0.5, "real targets: no test error", ha="center", va="center")
    return True
