"""Finite-width diagnostics (docs/conventions.md, "Metrics"), in float64.

Kernels here are matrices: an (N, N) scalar kernel or any tensor compared entrywise
(a full (N, N, O, O) kernel is compared as a whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ntkscope._checks import finite, integer, positive_int, tensor


def _pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> tuple:
    a, b = tensor(a, names[0]), tensor(b, names[1])
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]}, {names[1]}: expected equal shapes, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    return a.detach().to(torch.float64), b.detach().to(torch.float64)


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖A − B‖_F / ‖B‖_F``: e.g. the kernel change ‖Θ̂_t − Θ̂_0‖ / ‖Θ̂_0‖, or the relative
    parameter change ‖θ_t − θ_0‖ / ‖θ_0‖ (Lee et al. 2019)."""
    a, b = _pair(a, b, ("a", "b"))
    return float((a - b).norm() / b.norm())


def kernel_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fort et al. 2020: ``S(K, K') = 1 − ⟨K, K'⟩_F / (‖K‖_F ‖K'‖_F)``, in [0, 2]; 0 when one
    kernel is a positive multiple of the other."""
    a, b = _pair(a, b, ("a", "b"))
    return float(1.0 - (a * b).sum() / (a.norm() * b.norm()))


def _centered(k: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I − 11ᵀ/N``."""
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def centered_alignment(kernel: torch.Tensor, y: torch.Tensor) -> float:
    """Centered kernel-target alignment CKA(K, yyᵀ) (Cortes et al. 2012):

        ⟨HKH, H yyᵀ H⟩_F / (‖HKH‖_F ‖H yyᵀ H‖_F),  H = I − 11ᵀ/N,

    for a scalar kernel (N, N) and targets y (N,) or (N, O) (one-hot labels for classes).
    In [0, 1]; 1 when the centered kernel is a multiple of the centered target Gram matrix.
    """
    kernel, y = tensor(kernel, "kernel"), tensor(y, "y")
    n = kernel.shape[0]
    if kernel.shape != (n, n) or y.shape[0] != n:
        raise ValueError(
            f"kernel, y: expected (N, N) and (N,) or (N, O), got {tuple(kernel.shape)} and "
            f"{tuple(y.shape)}"
        )
    y = y.detach().to(torch.float64).reshape(n, -1)
    k, t = _centered(kernel.detach().to(torch.float64)), _centered(y @ y.T)
    return float((k * t).sum() / (k.norm() * t.norm()))


def seed_dispersion(kernels: Sequence[torch.Tensor]) -> float:
    """Seed-to-seed spread of kernels drawn at independent initializations:
    ``mean_s ‖K_s − K̄‖_F / ‖K̄‖_F`` with K̄ the mean over seeds. Of order
    ``√(Var_θ[Θ̂]/E_θ[Θ̂]²)`` (docs/conventions.md, "Metrics") averaged over the entries; it
    shrinks as 1/√width in NTK parameterization (Hanin & Nica 2019)."""
    if len(kernels) < 2:
        raise ValueError(f"kernels: expected at least 2 seeds, got {len(kernels)}")
    stack = torch.stack([tensor(k, "kernels").detach().to(torch.float64) for k in kernels])
    mean = stack.mean(dim=0)
    return float(((stack - mean).flatten(1).norm(dim=1) / mean.norm()).mean())


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root mean square difference ``√(mean (a − b)²)``, e.g. between f_t and f_lin,t."""
    a, b = _pair(a, b, ("a", "b"))
    return float((a - b).pow(2).mean().sqrt())


def scalar_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """An (N, N) kernel as is; a full (N, N, O, O) one as its mean over outputs."""
    return kernel if kernel.dim() == 2 else torch.einsum("ijkk->ij", kernel) / kernel.shape[-1]


def flat_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """A full kernel Θ(X, X') (N, M, O, O) as the (N·O, M·O) matrix over (example, output)
    pairs, row n·O + o and column m·O + o' in the order of ``f(X).reshape(-1)``; for
    Θ(X, X) it is J Jᵀ."""
    kernel = tensor(kernel, "kernel")
    if kernel.dim() != 4 or kernel.shape[2] != kernel.shape[3]:
        raise ValueError(f"kernel: expected a full kernel (N, M, O, O), got {tuple(kernel.shape)}")
    n, m, o = kernel.shape[0], kernel.shape[1], kernel.shape[2]
    return kernel.permute(0, 2, 1, 3).reshape(n * o, m * o)


def spectrum(kernel: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (descending, float64) of a scalar (N, N) or full (N, N, O, O) kernel, the
    latter as the (N·O, N·O) matrix over (example, output) pairs (`flat_kernel`)."""
    k = kernel.detach().to(torch.float64)
    k = flat_kernel(k) if k.dim() == 4 else k
    return torch.linalg.eigvalsh((k + k.T) / 2).flip(0)


def largest_eigenvalue(kernel: torch.Tensor) -> float:
    """λ_max (float64) of a scalar (N, N) or full (N, N, O, O) kernel, as `spectrum`'s first
    entry: Lanczos (``scipy.sparse.linalg.eigsh``, tol 1e-12 relative, O(n²) per product)
    above n = 512 rows, where a full eigendecomposition (O(n³)) would dominate, e.g. the
    (N·O)² kernel of ``diagnose``'s default learning rate; the dense `spectrum` below."""
    k = kernel.detach().to(torch.float64)
    k = flat_kernel(k) if k.dim() == 4 else k
    if len(k) <= 512:
        return float(spectrum(k)[0])
    from scipy.sparse.linalg import eigsh

    symmetric = ((k + k.T) / 2).cpu().numpy()
    return float(eigsh(symmetric, k=1, which="LA", tol=1e-12, return_eigenvectors=False)[0])


def classification_error(outputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of misclassified examples: one output (N, 1) or (N,) predicts class 1 when
    it is positive (targets ±1, `ntkscope.data.targets`); O > 1 outputs predict the argmax.

    Raises:
        ValueError: naming ``outputs`` (shapes, NaN or infinite entries) or ``labels``
            (outside {0, 1} for one output, outside 0..O−1 for O outputs). TypeError: for
            labels that are not integers.
    """
    outputs, labels = tensor(outputs, "outputs").detach(), tensor(labels, "labels")
    if labels.dim() != 1 or outputs.shape[0] != labels.shape[0] or outputs.dim() not in (1, 2):
        raise ValueError(
            f"outputs, labels: expected (N, O) or (N,) and (N,), got {tuple(outputs.shape)} "
            f"and {tuple(labels.shape)}"
        )
    finite(outputs, "outputs")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected integer class labels, got {labels.dtype}")
    outputs = outputs.reshape(len(labels), -1)
    classes = max(outputs.shape[1], 2)
    if ((labels < 0) | (labels >= classes)).any():
        raise ValueError(
            f"labels: expected classes in 0..{classes - 1} for {outputs.shape[1]} output(s), "
            f"got values from {int(labels.min())} to {int(labels.max())}"
        )
    predicted = (outputs[:, 0] > 0).long() if outputs.shape[1] == 1 else outputs.argmax(dim=1)
    return float((predicted != labels.long()).double().mean())


class PowerLaw(NamedTuple):
    """A fitted ``loss ≈ exp(intercept) · n^(−exponent)`` with a bootstrap 95% interval
    ``[low, high]`` of the exponent."""

    exponent: float
    intercept: float
    low: float
    high: float


def _log_fit(log_n: np.ndarray, mean_losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (−slope, intercept) of log loss on log n, for each row of mean_losses."""
    slope, intercept = np.polynomial.polynomial.polyfit(log_n, np.log(mean_losses).T, 1)[::-1]
    return -slope, intercept


def fit_power_law(
    n: Sequence[float], losses: np.ndarray, *, n_boot: int = 2000, seed: int = 0
) -> PowerLaw:
    """Data-scaling exponent α of ``log(test loss) = c − α log n`` (docs/conventions.md).

    The fit is least squares on the seed means of each n. The 95% interval is the percentile
    bootstrap over seeds: each replicate redraws, for every n independently, as many seeds
    as there are (with replacement), averages them, and refits.

    Args:
        n: the sample sizes (at least 4 distinct, finite, positive).
        losses: positive test losses, (len(n), seeds) with seeds ≥ 2 (or (len(n),) for one
            seed, when the interval is the point estimate).
        n_boot: bootstrap replicates (a positive int).
        seed: seed (an int) of the bootstrap's random draws.

    Raises:
        ValueError: naming ``n`` or ``losses`` (too few sizes, shapes, non-positive or
            non-finite values) or ``n_boot`` (not positive). TypeError: naming ``n_boot`` or
            ``seed`` when not an int.
    """
    n_boot, seed = positive_int(n_boot, "n_boot"), integer(seed, "seed")
    sizes = np.asarray(n, dtype=float)
    values = np.asarray(losses, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    if sizes.ndim != 1 or len(np.unique(sizes)) < 4 or not np.all(np.isfinite(sizes) & (sizes > 0)):
        raise ValueError(
            f"n: expected at least 4 distinct finite positive sizes, got {sizes.tolist()}"
        )
    if values.ndim != 2 or values.shape[0] != len(sizes):
        raise ValueError(f"losses: expected ({len(sizes)}, seeds), got {values.shape}")
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError("losses: expected finite positive values (the fit is on log loss)")
    log_n = np.log(sizes)
    exponent, intercept = _log_fit(log_n, values.mean(axis=1))
    n_seeds = values.shape[1]
    if n_seeds == 1:
        return PowerLaw(float(exponent), float(intercept), float(exponent), float(exponent))
    rng = np.random.default_rng(seed)
    draws = rng.integers(n_seeds, size=(n_boot, len(sizes), n_seeds))
    resampled = np.take_along_axis(values[None], draws, axis=2).mean(axis=2)
    boot, _ = _log_fit(log_n, resampled)
    low, high = np.percentile(boot, [2.5, 97.5])
    return PowerLaw(float(exponent), float(intercept), float(low), float(high))


# --- Predictive quality and continual learning (Wenger, Dangel & Kristiadi 2023) -------------
#
# "On the disconnect between theory and practice of neural networks: limits of the NTK
# perspective" compares wide networks with their NTK predictions on calibration (negative
# log-likelihood, expected calibration error), out-of-distribution detection (AUROC) and
# catastrophic forgetting (docs/conventions.md, "Metrics").


def _classes(probs: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked float64 class probabilities (N, C) and int64 labels (N,) in 0..C-1."""
    probs, labels = tensor(probs, "probs"), tensor(labels, "labels")
    if probs.dim() != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ValueError(
            f"probs: expected class probabilities (N, C) with N >= 1 and C >= 2, got shape "
            f"{tuple(probs.shape)}"
        )
    if not probs.is_floating_point():
        raise TypeError(f"probs: expected a floating-point tensor, got {probs.dtype}")
    probs = probs.detach().to(torch.float64)
    if not torch.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise ValueError("probs: entries must be probabilities in [0, 1]")
    if ((probs.sum(dim=1) - 1).abs() > 1e-4).any():
        raise ValueError("probs: every row must sum to 1 (within 1e-4); pass softmax(logits)")
    if labels.shape != probs.shape[:1] or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels: expected int class labels of shape ({probs.shape[0]},), got "
            f"{labels.dtype} of shape {tuple(labels.shape)}"
        )
    if (labels < 0).any() or (labels >= probs.shape[1]).any():
        raise ValueError(f"labels: expected classes in 0..{probs.shape[1] - 1}")
    return probs, labels.to(torch.int64)


def negative_log_likelihood(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of the labels, ``−(1/N) Σ_i log p_i[y_i]``.

    Args:
        probs: class probabilities (N, C), rows summing to 1 (for a network's logits pass
            ``torch.softmax(logits.double(), dim=1)``).
        labels: int class labels (N,) in 0..C-1.

    Returns:
        The mean NLL in nats; ``inf`` if some label has probability 0.
    """
    probs, labels = _classes(probs, labels)
    return float(-probs.gather(1, labels[:, None]).log().mean())


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error (Naeini et al. 2015; Guo et al. 2017):

        ECE = Σ_b |B_b| / N · |acc(B_b) − conf(B_b)|,

    where the confidence of an example is its largest class probability, B_b are the
    examples whose confidence falls in the b-th of ``bins`` equal-width intervals
    ``(b/B, (b+1)/B]`` of [0, 1] (the first one closed at 0), acc the fraction of them whose
    most probable class is the label, and conf their mean confidence. In [0, 1]; 0 for a
    perfectly calibrated classifier. Ties in the largest probability go to the lowest class.

    Args:
        probs: class probabilities (N, C), rows summing to 1.
        labels: int class labels (N,) in 0..C-1.
        bins: number of equal-width confidence bins (docs/conventions.md: 15).
    """
    probs, labels = _classes(probs, labels)
    bins = positive_int(bins, "bins")
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).to(torch.float64)
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    count = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(correct))
    gap = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct - confidence)
    return float(gap.abs().sum() / count.sum())


def ood_auroc(scores_in: torch.Tensor, scores_out: torch.Tensor) -> float:
    """Area under the ROC curve of telling out-of-distribution from in-distribution inputs
    by a score that is larger for inputs believed to be out of distribution (e.g. the
    predictive entropy, or 1 − max probability).

    Equals P(s_out > s_in) + ½ P(s_out = s_in) for independent draws from the two sets: 1 for
    a perfect detector, ½ for chance, and ``1 − x`` when the two sets are swapped.

    Args:
        scores_in: scores (N_in,) of in-distribution inputs.
        scores_out: scores (N_out,) of out-of-distribution inputs.
    """
    from sklearn.metrics import roc_auc_score

    checked = []
    for scores, name in ((scores_in, "scores_in"), (scores_out, "scores_out")):
        scores = tensor(scores, name)
        if scores.dim() != 1 or scores.shape[0] == 0:
            raise ValueError(f"{name}: expected a non-empty (N,) tensor, got {tuple(scores.shape)}")
        checked.append(finite(scores.detach().to(torch.float64), name).numpy())
    truth = [0] * len(checked[0]) + [1] * len(checked[1])
    return float(roc_auc_score(truth, list(checked[0]) + list(checked[1])))


def _accuracy_matrix(accuracy_matrix: object) -> torch.Tensor:
    """A checked float64 (T, T) matrix of accuracies in [0, 1], T >= 2, from a tensor or array."""
    if isinstance(accuracy_matrix, np.ndarray):
        accuracy_matrix = torch.tensor(accuracy_matrix)
    matrix = tensor(accuracy_matrix, "accuracy_matrix").detach().to(torch.float64)
    t = matrix.shape[0] if matrix.dim() == 2 else 0
    if matrix.shape != (t, t) or t < 2:
        raise ValueError(
            "accuracy_matrix: expected a square (T, T) matrix with T >= 2 tasks, got shape "
            f"{tuple(matrix.shape)}"
        )
    if not torch.isfinite(matrix).all() or (matrix < 0).any() or (matrix > 1).any():
        raise ValueError("accuracy_matrix: entries must be accuracies in [0, 1]")
    return matrix


def average_forgetting(accuracy_matrix: torch.Tensor | np.ndarray) -> float:
    """Average forgetting over a sequence of T tasks (Chaudhry et al. 2018):

        F = 1/(T−1) Σ_{j < T−1} ( max_{j ≤ i ≤ T−1} a[i, j] − a[T−1, j] ),

    with ``a[i, j]`` the accuracy on task j after training task i (0-based): for each task
    but the last, the best accuracy it had during the sequence (from the end of its own
    training on) minus its accuracy at the end. In [0, 1]; 0 when nothing is forgotten.

    Args:
        accuracy_matrix: (T, T) accuracies in [0, 1], T >= 2; entries above the diagonal
            (tasks not yet trained) are checked but not used.
    """
    matrix = _accuracy_matrix(accuracy_matrix)
    best = matrix.tril().max(dim=0).values[:-1]
    return float((best - matrix[-1, :-1]).mean())


def average_accuracy(accuracy_matrix: torch.Tensor | np.ndarray) -> float:
    """Final average accuracy ``(1/T) Σ_j a[T−1, j]``: the mean accuracy over all T tasks
    after training the last one (``a`` as in `average_forgetting`)."""
    return float(_accuracy_matrix(accuracy_matrix)[-1].mean())
