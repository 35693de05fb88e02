"""`ntkscope.metrics` against direct NumPy formulas (float64: agreement to 1e-12, rounding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ntkscope import metrics

TOL = 1e-12  # float64 sums of ≤ 100 terms of order 1


def gram(seed: int, n: int = 6) -> torch.Tensor:
    a = torch.randn(n, 3 * n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T


@given(st.integers(0, 10**6))
def test_distances_match_their_formulas(seed):
    a, b = gram(seed), gram(seed + 1)
    an, bn = a.numpy(), b.numpy()
    assert metrics.relative_distance(a, b) == pytest.approx(
        np.linalg.norm(an - bn) / np.linalg.norm(bn), rel=TOL
    )
    cosine = (an * bn).sum() / (np.linalg.norm(an) * np.linalg.norm(bn))
    assert metrics.kernel_distance(a, b) == pytest.approx(1 - cosine, abs=TOL)
    assert metrics.kernel_distance(a, 3.0 * a) == pytest.approx(0.0, abs=TOL)
    assert metrics.rmse(a, b) == pytest.approx(np.sqrt(((an - bn) ** 2).mean()), rel=TOL)


def test_centered_alignment_matches_its_formula_and_is_one_on_the_target_gram():
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 0, 2]), 3).double()
    assert metrics.centered_alignment(y @ y.T * 5.0, y) == pytest.approx(1.0, abs=TOL)
    k = gram(3)
    h = np.eye(6) - 1 / 6
    kc, tc = h @ k.numpy() @ h, h @ (y @ y.T).numpy() @ h
    expected = (kc * tc).sum() / (np.linalg.norm(kc) * np.linalg.norm(tc))
    assert metrics.centered_alignment(k, y) == pytest.approx(expected, rel=TOL)


def test_seed_dispersion_is_the_mean_relative_deviation_from_the_seed_mean():
    kernels = [gram(s) for s in range(4)]
    stack = np.stack([k.numpy() for k in kernels])
    mean = stack.mean(0)
    expected = np.mean([np.linalg.norm(k - mean) / np.linalg.norm(mean) for k in stack])
    assert metrics.seed_dispersion(kernels) == pytest.approx(expected, rel=TOL)
    assert metrics.seed_dispersion([kernels[0]] * 3) == pytest.approx(0.0, abs=TOL)


def test_bad_shapes_name_the_arguments():
    with pytest.raises(ValueError, match="a, b: expected equal shapes"):
        metrics.relative_distance(gram(0, 3), gram(0, 4))
    with pytest.raises(ValueError, match="kernel, y"):
        metrics.centered_alignment(gram(0, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="kernels: expected at least 2"):
        metrics.seed_dispersion([gram(0)])


def test_scalar_kernel_and_spectrum_of_a_full_kernel():
    """The trace kernel is the mean of the O diagonal output blocks; the spectrum of a full
    kernel is that of the (N·O, N·O) matrix over (example, output) pairs (float64, 1e-12)."""
    g = torch.Generator().manual_seed(0)
    jac = torch.randn(5, 3, 20, generator=g, dtype=torch.float64)  # (N, O, P)
    full = torch.einsum("nap,mbp->nmab", jac, jac)
    expected_trace = sum(jac[:, o] @ jac[:, o].T for o in range(3)) / 3
    assert torch.allclose(metrics.scalar_kernel(full), expected_trace, rtol=TOL, atol=TOL)
    flat = jac.reshape(15, 20)
    expected = torch.linalg.eigvalsh(flat @ flat.T).flip(0)
    assert torch.allclose(metrics.spectrum(full), expected, rtol=1e-10, atol=1e-10)


def test_classification_error_reads_signs_and_argmax():
    one = torch.tensor([[0.3], [-0.2], [1.0], [-4.0]])
    assert metrics.classification_error(one, torch.tensor([1, 0, 0, 0])) == 0.25
    many = torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 1.0]])
    assert metrics.classification_error(many, torch.tensor([1, 2])) == 0.5
    with pytest.raises(ValueError, match="outputs, labels"):
        metrics.classification_error(many, torch.tensor([1, 2, 0]))


@pytest.mark.parametrize(
    ("outputs", "labels", "error", "message"),
    [
        ([[0.3], [float("nan")]], [1, 1], ValueError, "outputs: contains NaN"),
        ([[0.1, 0.9], [float("inf"), 0.0]], [1, 0], ValueError, "outputs: contains NaN"),
        ([[0.3], [-0.2]], [1.0, 0.0], TypeError, "labels: expected integer"),
        ([[0.3], [-0.2]], [True, False], TypeError, "labels: expected integer"),
        ([[0.3], [-0.2]], [1, 2], ValueError, r"labels: expected classes in 0\.\.1"),
        ([[0.1, 0.9], [2.0, 0.0]], [1, 2], ValueError, r"labels: expected classes in 0\.\.1"),
        ([[0.1, 0.9, 0.0]], [-1], ValueError, r"labels: expected classes in 0\.\.2"),
    ],
)
def test_classification_error_refuses_non_finite_outputs_and_bad_labels(
    outputs, labels, error, message
):
    # NaN outputs used to score as correct, float labels were truncated and labels
    # outside the classes counted as plain errors.
    with pytest.raises(error, match=message):
        metrics.classification_error(torch.tensor(outputs), torch.tensor(labels))


def test_power_law_recovers_a_known_exponent_with_a_covering_interval():
    n = np.array([16, 32, 64, 128, 256, 512])
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(40):
        losses = 2.0 * n[:, None] ** -0.6 * np.exp(0.2 * rng.standard_normal((6, 5)))
        fit = metrics.fit_power_law(n, losses, n_boot=500, seed=int(rng.integers(1000)))
        assert fit.low <= fit.exponent <= fit.high
        hits += fit.low <= 0.6 <= fit.high
    # a 95% interval (percentile bootstrap over 5 seeds, slightly narrow) covers the truth
    # in about 90% of 40 trials; 30 is more than 3 binomial sd below 36.
    assert hits >= 30
    exact = metrics.fit_power_law(n, 3.0 * n**-0.75)
    assert exact.exponent == pytest.approx(0.75, abs=1e-12) and exact.low == exact.high
    assert np.exp(exact.intercept) == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize(
    ("n", "losses", "message"),
    [
        ([1, 2, 3], [1.0, 0.5, 0.3], "n: expected at least 4"),
        ([1, 2, 3, 4], [[1.0], [0.5]], "losses: expected"),
        ([1, 2, 3, 4], [1.0, 0.5, 0.0, 0.2], "losses: expected finite positive"),
    ],
)
def test_power_law_rejects_bad_input(n, losses, message):
    with pytest.raises(ValueError, match=message):
        metrics.fit_power_law(n, losses)


@pytest.mark.parametrize(
    ("n", "kwargs", "error", "message"),
    [
        ([1, 2, 3, float("nan")], {}, ValueError, "n: expected at least 4 distinct finite"),
        ([1, 2, 3, float("inf")], {}, ValueError, "n: expected at least 4 distinct finite"),
        ([1, 2, 3, 4], {"n_boot": 0}, ValueError, "n_boot"),
        ([1, 2, 3, 4], {"n_boot": 10.0}, TypeError, "n_boot"),
        ([1, 2, 3, 4], {"seed": 0.5}, TypeError, "seed"),
    ],
)
def test_power_law_checks_sizes_replicates_and_seed(n, kwargs, error, message):
    losses = np.ones((4, 3))  # several seeds, so the bootstrap would run
    with pytest.raises(error, match=message):
        metrics.fit_power_law(n, losses, **kwargs)


# --- Predictive quality and continual learning ------------------------------------------------


def probabilities(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def reference_ece(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """ECE by a loop over the bins (b/B, (b+1)/B] (confidences are >= 1/C > 0)."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    total = 0.0
    for b in range(bins):
        inside = (confidence > b / bins) & (confidence <= (b + 1) / bins)
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            total += inside.sum() / len(labels) * gap
    return total


def test_negative_log_likelihood_by_hand():
    probs = probabilities([[0.5, 0.5], [0.25, 0.75]])
    expected = -(np.log(0.5) + np.log(0.75)) / 2
    assert metrics.negative_log_likelihood(probs, torch.tensor([0, 1])) == pytest.approx(
        expected, rel=TOL
    )
    assert metrics.negative_log_likelihood(probs[:1], torch.tensor([1])) == pytest.approx(
        np.log(2), rel=TOL
    )


def test_expected_calibration_error_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 0, 1])
    # confidence 0.75 with 3 of 4 right, 0.5 with 1 of 2 right: perfectly calibrated
    calibrated = probabilities([[0.75, 0.25]] * 4 + [[0.5, 0.5]] * 2)
    assert metrics.expected_calibration_error(calibrated, labels) == pytest.approx(0.0, abs=TOL)
    # one bin: confidence 0.9, 2 of 3 right -> |2/3 - 0.9|
    one_bin = probabilities([[0.9, 0.1]] * 3)
    ece = metrics.expected_calibration_error(one_bin, torch.tensor([0, 0, 1]))
    assert ece == pytest.approx(0.9 - 2 / 3, abs=TOL)
    # two bins of 2: (acc 1, conf 0.9) and (acc 0.5, conf 0.6) -> 1/2·0.1 + 1/2·0.1
    two_bins = probabilities([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.6, 0.4]])
    ece = metrics.expected_calibration_error(two_bins, torch.tensor([0, 1, 0, 1]))
    assert ece == pytest.approx(0.1, abs=TOL)


def test_expected_calibration_error_puts_a_confidence_on_a_bin_edge_in_the_lower_bin():
    # bins (0, 1/2] and (1/2, 1]: 0.5 (right) alone in the first -> (|1 − 0.5| + |0 − 1|) / 2;
    # were it in the second with 1.0 (wrong), the ECE would be |0.5 − 0.75| = 0.25
    probs = probabilities([[0.5, 0.5], [1.0, 0.0]])
    ece = metrics.expected_calibration_error(probs, torch.tensor([0, 1]), bins=2)
    assert ece == pytest.approx(0.75, abs=TOL)


@given(st.integers(0, 10**6), st.integers(1, 40), st.integers(2, 6), st.integers(1, 20))
def test_expected_calibration_error_is_in_unit_interval_and_matches_a_loop(seed, n, c, bins):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, c, generator=generator, dtype=torch.float64)
    probs, labels = logits.softmax(dim=1), torch.randint(c, (n,), generator=generator)
    ece = metrics.expected_calibration_error(probs, labels, bins=bins)
    assert 0.0 <= ece <= 1.0
    assert ece == pytest.approx(reference_ece(probs.numpy(), labels.numpy(), bins), abs=TOL)


def test_ood_auroc_by_hand():
    def auroc(a, b):
        return metrics.ood_auroc(torch.tensor(a, dtype=torch.float64), torch.tensor(b))

    assert auroc([0.0, 1.0, 2.0], [3.0, 4.0]) == pytest.approx(1.0, abs=TOL)
    assert auroc([3.0, 4.0], [0.0, 1.0, 2.0]) == pytest.approx(0.0, abs=TOL)
    assert auroc([1.0, 2.0], [1.0, 2.0]) == pytest.approx(0.5, abs=TOL)
    # out 0.8 beats all 3 in-scores, out 0.3 beats only 0.1: 4 of 6 pairs
    assert auroc([0.1, 0.4, 0.35], [0.8, 0.3]) == pytest.approx(4 / 6, abs=TOL)


@given(st.integers(0, 10**6), st.integers(1, 30), st.integers(1, 30))
def test_ood_auroc_swapped_is_one_minus(seed, n_in, n_out):
    generator = torch.Generator().manual_seed(seed)
    # rounded scores, so that ties (which count 1/2) occur
    scores_in = torch.randn(n_in, generator=generator).round(decimals=1)
    scores_out = (torch.randn(n_out, generator=generator) + 0.5).round(decimals=1)
    auroc = metrics.ood_auroc(scores_in, scores_out)
    assert 0.0 <= auroc <= 1.0
    assert metrics.ood_auroc(scores_out, scores_in) == pytest.approx(1 - auroc, abs=TOL)


ACCURACIES = np.array([[0.9, 0.1, 0.1], [0.6, 0.95, 0.2], [0.5, 0.7, 0.8]])


def test_forgetting_and_final_accuracy_of_a_3_task_sequence_by_hand():
    # task 0: best 0.9, end 0.5 -> 0.4; task 1: best 0.95 (0.1 before training it is not
    # counted), end 0.7 -> 0.25; mean 0.325. Final accuracy (0.5 + 0.7 + 0.8) / 3.
    assert metrics.average_forgetting(ACCURACIES) == pytest.approx(0.325, abs=TOL)
    assert metrics.average_accuracy(torch.from_numpy(ACCURACIES)) == pytest.approx(2 / 3, abs=TOL)
    # the best accuracy may come after the task's own training (backward transfer)
    later = ACCURACIES.copy()
    later[1, 0] = 0.95
    assert metrics.average_forgetting(later) == pytest.approx((0.45 + 0.25) / 2, abs=TOL)
    assert metrics.average_forgetting(np.tril(np.ones((3, 3)))) == pytest.approx(0.0, abs=TOL)


@given(st.integers(0, 10**6), st.integers(2, 8))
def test_forgetting_is_in_unit_interval(seed, t):
    matrix = np.random.default_rng(seed).uniform(size=(t, t))
    assert 0.0 <= metrics.average_forgetting(matrix) <= 1.0
    assert 0.0 <= metrics.average_accuracy(matrix) <= 1.0


def test_bad_predictions_and_accuracy_matrices_name_the_argument():
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="probs: every row must sum to 1"):
        metrics.negative_log_likelihood(probabilities([[0.5, 0.4], [0.5, 0.5]]), labels)
    with pytest.raises(ValueError, match="probs: entries must be probabilities"):
        metrics.expected_calibration_error(probabilities([[1.5, -0.5], [0.5, 0.5]]), labels)
    with pytest.raises(ValueError, match="probs: expected class probabilities"):
        metrics.expected_calibration_error(probabilities([0.5, 0.5]), labels)
    with pytest.raises(ValueError, match=r"labels: expected classes in 0\.\.1"):
        metrics.negative_log_likelihood(probabilities([[0.5, 0.5]] * 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="labels: expected int class labels"):
        metrics.negative_log_likelihood(probabilities([[0.5, 0.5]] * 2), torch.tensor([0.0, 1]))
    with pytest.raises(ValueError, match="bins: expected a positive int"):
        metrics.expected_calibration_error(probabilities([[0.5, 0.5]] * 2), labels, bins=0)
    with pytest.raises(ValueError, match="scores_out: expected a non-empty"):
        metrics.ood_auroc(torch.zeros(3), torch.zeros(0))
    with pytest.raises(ValueError, match="accuracy_matrix: expected a square"):
        metrics.average_forgetting(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="accuracy_matrix: entries must be accuracies"):
        metrics.average_accuracy(np.full((2, 2), 1.5))
    with pytest.raises(TypeError, match="accuracy_matrix: expected a torch"):
        metrics.average_forgetting([[1.0, 0.0], [1.0, 1.0]])


def test_flat_kernel_orders_rows_like_flattened_outputs():
    """Entry (n·O + a, m·O + b) of the flat kernel is Θ(x_n, x_m)_ab, also for a rectangular
    (N, M, O, O) kernel (exact: a permutation of entries)."""
    kernel = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    flat = metrics.flat_kernel(kernel)
    assert flat.shape == (8, 12)
    assert all(
        flat[n * 4 + a, m * 4 + b] == kernel[n, m, a, b]
        for n in range(2) for m in range(3) for a in range(4) for b in range(4)
    )  # fmt: skip
    with pytest.raises(ValueError, match="kernel: expected a full kernel"):
        metrics.flat_kernel(torch.zeros(2, 2, 3, 1))


@pytest.mark.parametrize("shape", [(40, 40), (700, 700), (100, 100, 6, 6)])
def test_largest_eigenvalue_is_the_top_of_the_spectrum(shape):
    """Lanczos (above 512 rows) and the dense path agree with `spectrum` to 1e-10 relative:
    eigsh is asked for 1e-12 and the matrices are well conditioned at the top."""
    g = torch.Generator().manual_seed(0)
    rows = int(np.prod(shape[::2]))
    a = torch.randn(rows, rows // 2, generator=g, dtype=torch.float64)
    flat = a @ a.T
    kernel = flat
    if len(shape) == 4:
        n, o = shape[0], shape[2]
        kernel = flat.reshape(n, o, n, o).permute(0, 2, 1, 3)
    top = metrics.largest_eigenvalue(kernel)
    assert top == pytest.approx(float(metrics.spectrum(kernel)[0]), rel=1e-10)
