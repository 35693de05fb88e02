import pytest
import torch

from ntkscope.data import load
from ntkscope.dynamics import KernelRegressionRecorder, checkpoint_steps, regression_scores


def test_checkpoint_steps_are_log_spaced_from_zero():
    assert checkpoint_steps(1000, 5) == (0, 1, 10, 100, 1000)
    assert checkpoint_steps(3, 8) == (0, 1, 2, 3)  # duplicates after rounding dropped


def test_regression_scores_reject_a_kernel_of_the_wrong_shape():
    with pytest.raises(ValueError, match="kernel"):
        regression_scores(torch.eye(4), torch.zeros(4, 1), n_train=4, n_val=0)


def test_regression_scores_interpolate_the_training_rows():
    x = torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kernel, y = (x @ x.T + 1) ** 2, torch.sign(x[:, :1])
    # test rows = training rows 0..3 repeated: ridgeless regression reproduces their targets
    k_all = torch.cat([kernel[:8, :8], kernel[8:, :8], kernel[:4, :8]])
    y_all = torch.cat([y[:8], y[8:], y[:4]])
    scores = regression_scores(k_all, y_all, 8, 4, labels=(y[:4, 0] > 0).long())
    assert scores["test_mse"] == pytest.approx(0.0, abs=1e-12)
    assert scores["test_error"] == 0.0


@pytest.mark.parametrize("steps", [[], [0, 5, 5], [-1, 2], [3, 1]])
def test_recorder_rejects_steps_that_do_not_increase(steps):
    data = load("digits", 8)
    with pytest.raises(ValueError, match="steps"):
        KernelRegressionRecorder(steps, data, data)


def test_recorder_rejects_non_datasets():
    with pytest.raises(TypeError, match="val"):
        KernelRegressionRecorder([0, 1], (torch.zeros(2, 2), torch.zeros(2)), load("digits", 8))
