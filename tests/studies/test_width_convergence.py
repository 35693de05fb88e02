import numpy as np
import pandas as pd
import pytest

from ntkscope.studies import Results
from ntkscope.studies.width_convergence import EXPECTED_SLOPE, Config, figures, run

WIDTHS = (64, 128, 256, 512, 1024)


def test_distance_falls_as_inverse_square_root_of_width():
    calls = []
    result = run(Config(depth=1, widths=WIDTHS, seeds=4), lambda d, t: calls.append((d, t)))
    table = result.tables["distances"]
    assert len(table) == 20 and calls[-1] == (20, 20)
    assert list(result.arrays["widths"]) == list(WIDTHS)
    # Over 10 data/initialization seeds at these sizes the fitted slope has mean −0.49 and
    # sd 0.07 (depth 1) / 0.06 (depth 2); 0.25 is > 3.5 sd, and a wrong scaling (1/width:
    # slope −1; no convergence: 0) fails.
    assert abs(result.metrics["slope"] - EXPECTED_SLOPE) < 0.25
    assert result.metrics["distance_at_widest"] == pytest.approx(result.arrays["mean_distance"][-1])


@pytest.mark.slow
def test_slope_averaged_over_seeds_is_minus_one_half():
    slopes = [run(Config(depth=2, widths=WIDTHS, seeds=4, seed=10 * k), lambda d, t: None)
              .metrics["slope"] for k in range(10)]  # fmt: skip
    # sd of one slope ≈ 0.06, so of the mean of 10 ≈ 0.02; 0.08 is 4 sd.
    assert abs(np.mean(slopes) - EXPECTED_SLOPE) < 0.08, slopes


def test_figures_draw_from_stored_results():
    result = run(Config(n=8, widths=(16, 32), seeds=2), lambda d, t: None)
    runs = pd.DataFrame(
        {"hash": ["h"], "config.depth": [2]}
        | {f"metrics.{k}": [v] for k, v in result.metrics.items()}
    )
    tables = {"distances": result.tables["distances"].assign(hash="h")}
    drawn = figures(Results(runs, tables, lambda h: result.arrays))
    assert set(drawn) == {"distance_vs_width", "slopes"}
    assert all(len(f.axes) == 1 for f in drawn.values())
