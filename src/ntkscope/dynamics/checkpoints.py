"""The eNTK at training time t used for kernel regression: K^t (Vyas, Bansal & Nakkiran 2022).

Vyas, Bansal & Nakkiran, "Limitations of the NTK for understanding generalization in deep
learning" (2022), take the empirical NTK K^t of a network at training time t and use it for
kernel regression on the whole training set; the test loss of K^t keeps falling throughout
training, not only in its first epochs. `KernelRegressionRecorder` measures that during
`ntkscope.train`, next to the network's own test loss and the kernel's motion (Fort et al.
2020). `regression_scores` is the evaluation it uses, for any scalar kernel.

Losses are mean squared errors over examples and outputs, ``mean((ŷ − y)²)``, for the network
and the kernels alike; errors are `ntkscope.metrics.classification_error`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ntkscope import metrics
from ntkscope._checks import positive_int
from ntkscope.data import Dataset, targets
from ntkscope.dynamics.ridge import DEFAULT_RIDGES, KernelRidge, select_ridge
from ntkscope.dynamics.state import Recorder, TrainState
from ntkscope.kernels import empirical_ntk


def _mse(predictions: torch.Tensor, y: torch.Tensor) -> float:
    return float((predictions.double() - y.double()).square().mean())


def _scores(predictions: torch.Tensor, y: torch.Tensor, labels: torch.Tensor | None) -> tuple:
    error = float("nan") if labels is None else metrics.classification_error(predictions, labels)
    return _mse(predictions, y), error


def regression_scores(
    kernel: torch.Tensor,
    y: torch.Tensor,
    n_train: int,
    n_val: int,
    labels: torch.Tensor | None = None,
    relative_ridges: Sequence[float] = DEFAULT_RIDGES,
) -> dict[str, float]:
    """Test loss and error of kernel regression on the training rows, ridgeless and with the
    ridge chosen on the validation rows.

    Predictions are ``K(X*, X) (K(X, X) + λ I)⁻¹ Y`` (`KernelRidge`): λ = 0 (the t → ∞ limit of
    gradient flow from f = 0) and λ chosen by `select_ridge` on the validation rows among 0
    and ``relative_ridges`` × tr(K)/N.

    Args:
        kernel: scalar kernel (N_all, n_train) between the rows [train; val; test] and the
            training inputs.
        y: targets (N_all, O) of the same rows.
        n_train, n_val: the first ``n_train`` rows are the training set, the next ``n_val``
            the validation set, the rest the test set.
        labels: class labels of the test rows for the error (None: errors are NaN).
        relative_ridges: the ridge grid of `select_ridge`.

    Returns:
        ``test_mse``, ``test_error`` (λ = 0), ``test_mse_ridge``, ``test_error_ridge`` (chosen
        λ) and ``relative_ridge`` (the chosen λ / (tr K / N)).
    """
    if kernel.dim() != 2 or kernel.shape != (len(y), n_train) or len(y) <= n_train + n_val:
        raise ValueError(
            f"kernel: expected (N_all, n_train) = ({len(y)}, {n_train}) with test rows after "
            f"{n_train} + {n_val}, got {tuple(kernel.shape)}"
        )
    kernel, y = kernel.double(), y.double()
    val, test = slice(n_train, n_train + n_val), slice(n_train + n_val, None)
    model = KernelRidge(kernel[:n_train], y[:n_train])
    ridge, _ = select_ridge(model, kernel[val], y[val], relative_ridges)
    mse, error = _scores(model.predict(kernel[test]), y[test], labels)
    mse_ridge, error_ridge = _scores(model.predict(kernel[test], ridge), y[test], labels)
    return {
        "test_mse": mse,
        "test_error": error,
        "test_mse_ridge": mse_ridge,
        "test_error_ridge": error_ridge,
        "relative_ridge": ridge / model.scale,
    }


def checkpoint_steps(steps: int, count: int) -> tuple[int, ...]:
    """Step 0 and ``count − 1`` log-spaced steps from 1 to ``steps`` (rounded, duplicates
    dropped, so fewer when ``steps`` is small)."""
    grid = np.geomspace(1, positive_int(steps, "steps"), positive_int(count, "count") - 1)
    return (0, *(int(s) for s in np.unique(np.round(grid))))


class KernelRegressionRecorder(Recorder):
    """At chosen steps t: the eNTK K^t on [train; val; test] × train, its kernel regression
    scores, the network's own test scores, and the kernel's motion.

    Records, at every step of ``steps`` (step 0 always):

    - ``test_mse``, ``test_error``: the network f_t on the test set;
    - ``kernel_test_mse``, ``kernel_test_error`` (ridgeless), ``kernel_test_mse_ridge``,
      ``kernel_test_error_ridge``, ``kernel_relative_ridge``: `regression_scores` of K^t with
      the training targets of the run;
    - on a probe (the first ``probe_size`` training inputs): ``kernel_change``
      ‖K^t − K^0‖_F / ‖K^0‖_F, ``kernel_distance`` S(K^t, K^0) and ``kernel_velocity``
      S(K^t, K^t') / (t − t') since the previous checkpoint t' (Fort et al. 2020; not at 0).

    K^t is the trace-mode eNTK (`ntkscope.empirical_ntk`) of a float64 copy of the network,
    so ridgeless regression is not limited by float32 rounding.

    Args:
        steps: checkpoint steps, strictly increasing, ≥ 0.
        val, test: validation and test sets (their inputs are reshaped like the training
            inputs, e.g. into images); targets by `ntkscope.data.targets`, which must have
            as many columns as the training targets.
        probe_size: probe inputs of the kernel distances.
        relative_ridges: ridge grid of the validation choice.
        entk: the eNTK function, called as `ntkscope.empirical_ntk` (the default) is; e.g.
            one that computes the tiles on a Dask cluster (the studies' ``kernel_cluster``).
        **ntk_options: passed to ``entk`` (method, memory_budget).

    Attributes:
        steps_recorded: the checkpoint steps recorded so far.
        probe_kernels: K^t on the probe (float64), one per recorded checkpoint.
    """

    needs = ("train_set",)

    every = 1

    def __init__(
        self,
        steps: Sequence[int],
        val: Dataset,
        test: Dataset,
        *,
        probe_size: int = 256,
        relative_ridges: Sequence[float] = DEFAULT_RIDGES,
        entk: Callable[..., torch.Tensor] = empirical_ntk,
        **ntk_options,
    ) -> None:
        steps = list(steps)
        if any(isinstance(s, bool) or not isinstance(s, int) for s in steps):
            raise TypeError(f"steps: expected ints, got {steps!r}")
        if not steps or steps[0] < 0 or any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps: expected strictly increasing steps ≥ 0, got {steps}")
        for data, argument in ((val, "val"), (test, "test")):
            if not isinstance(data, Dataset):
                raise TypeError(f"{argument}: expected a ntkscope Dataset")
        self.checkpoints = {0, *steps}
        self.val, self.test = val, test
        self.probe_size = positive_int(probe_size, "probe_size")
        self.relative_ridges, self.options = tuple(relative_ridges), ntk_options
        self.entk = entk
        self.steps_recorded: list[int] = []
        self.probe_kernels: list[torch.Tensor] = []

    def start(self, state: TrainState) -> dict[str, float]:
        y = state.train.targets.double()
        y_other = [targets(d) for d in (self.val, self.test)]
        if any(t.shape[1] != y.shape[1] for t in y_other):
            raise ValueError(
                f"val, test: targets have {[t.shape[1] for t in y_other]} columns, the "
                f"training targets {y.shape[1]}"
            )
        shape = state.train.x.shape[1:]
        self._x = torch.cat(
            [
                state.train.x,
                *(d.x.reshape(len(d), *shape).to(state.train.x) for d in (self.val, self.test)),
            ]
        )
        self._y = torch.cat([y, *y_other])
        self._n = (len(state.train), len(self.val))
        self._labels = self.test.y if self.test.n_classes is not None else None
        return self.record(state)

    def record(self, state: TrainState) -> dict[str, float]:
        if state.step not in self.checkpoints:
            return {}
        model = copy.deepcopy(state.model).double()
        x = self._x.double()
        n_train, n_val = self._n
        with torch.no_grad():
            outputs = model(x[n_train + n_val :])
        mse, error = _scores(outputs, self._y[n_train + n_val :], self._labels)
        kernel = self.entk(model, x, x[:n_train], mode="trace", **self.options).double()
        scores = regression_scores(
            kernel, self._y, n_train, n_val, self._labels, self.relative_ridges
        )
        row = {"test_mse": mse, "test_error": error}
        row |= {f"kernel_{k}": v for k, v in scores.items()}
        return row | self._motion(kernel[: self.probe_size, : self.probe_size], state.step)

    def _motion(self, probe: torch.Tensor, step: int) -> dict[str, float]:
        """Kernel change, distance and velocity of the probe kernel; keeps it."""
        if self.probe_kernels:
            initial, latest = self.probe_kernels[0], self.probe_kernels[-1]
            row = {
                "kernel_change": metrics.relative_distance(probe, initial),
                "kernel_distance": metrics.kernel_distance(probe, initial),
                "kernel_velocity": metrics.kernel_distance(probe, latest)
                / (step - self.steps_recorded[-1]),
            }
        else:
            row = {"kernel_change": 0.0, "kernel_distance": 0.0}
        self.steps_recorded.append(step)
        self.probe_kernels.append(probe.clone())
        return row
