"""Recorders for `ntkscope.train`: each measures one way training departs from NTK theory.

- `LossRecorder`: loss and accuracy on the training and test sets.
- `KernelRecorder`: the eNTK on a probe set; kernel change, distance, velocity, alignment.
- `ParameterRecorder`: relative parameter change, per layer and in total.
- `LinearizedRecorder`: the linearized network trained alongside; output gap and losses.
- `PredictionRecorder`: the NTK-predicted MSE loss curve (eNTK at t = 0, infinite NTK).

Formulas and sources are in docs/conventions.md ("Metrics") and in each class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ntkscope import _batch, metrics
from ntkscope._checks import choice, positive_int
from ntkscope.dynamics.linearize import linearize
from ntkscope.dynamics.mse import predict_mse, stability_limit
from ntkscope.dynamics.state import Loss, Optimizer, Recorder, Split, TrainState, objective
from ntkscope.kernels import (
    Method,
    Mode,
    PreparedNTK,
    empirical_ntk,
    infinite_kernels,
    resolve_method,
)
from ntkscope.models.spec import mlp_spec


def _like(state: TrainState) -> torch.Tensor:
    """A trainable parameter of the model: inputs take its dtype and device."""
    return next(p for p in state.model.parameters() if p.requires_grad)


def _evaluate(state: TrainState, split: Split, prefix: str) -> dict[str, float]:
    with torch.no_grad():
        outputs = _batch.forward(state.model, split.x)
    row = {f"{prefix}_loss": float(state.objective(outputs, split.targets))}
    if split.labels is not None:
        row[f"{prefix}_accuracy"] = float((outputs.argmax(dim=1) == split.labels).double().mean())
    return row


class LossRecorder(Recorder):
    """``train_loss``, ``test_loss`` (full sets) and, for class labels, ``*_accuracy``."""

    needs = ("targets",)

    def __init__(self, every: int = 1) -> None:
        self.every = positive_int(every, "every")

    def record(self, state: TrainState) -> dict[str, float]:
        row = _evaluate(state, state.train, "train")
        if state.test is not None:
            row.update(_evaluate(state, state.test, "test"))
        return row


class KernelRecorder(Recorder):
    """The eNTK Θ̂_t on a fixed probe set, every ``every`` steps.

    Records ``kernel_change`` ‖Θ̂_t − Θ̂_0‖_F / ‖Θ̂_0‖_F, ``kernel_distance`` S(Θ̂_t, Θ̂_0) and
    ``kernel_velocity`` S(Θ̂_t, Θ̂_t') / (t − t') since the previous record (Fort et al. 2020,
    "Deep learning versus kernel learning"), and ``kernel_alignment`` CKA(Θ̂_t, yyᵀ) when
    the probe has targets. Keeps ``initial`` and ``latest`` kernels (float64) for spectra.

    Args:
        probe_x: probe inputs (P, ...); None: the first ``probe_size`` training inputs, with
            their targets for the alignment.
        every: steps between records.
        probe_y: targets of ``probe_x`` for the alignment (labels or reals), optional.
        mode: "trace" (default) or "full" eNTK (see `ntkscope.Mode`).
        probe_size: probe size when ``probe_x`` is None.
        **ntk_options: passed to `ntkscope.empirical_ntk` (method, memory_budget).
    """

    def __init__(
        self,
        probe_x: torch.Tensor | None = None,
        every: int = 50,
        *,
        probe_y: torch.Tensor | None = None,
        mode: str | Mode = "trace",
        probe_size: int = 256,
        **ntk_options,
    ) -> None:
        self.probe_x = probe_x
        self.probe_y, self.mode, self.options = probe_y, mode, ntk_options
        self.every, self.probe_size = (
            positive_int(every, "every"),
            positive_int(probe_size, "probe_size"),
        )
        self.initial = self.latest = None
        self.latest_step = 0
        """The step of ``latest``."""
        self._ntk: PreparedNTK | None = None

    def _kernel(self, state: TrainState) -> torch.Tensor:
        """Θ̂ on the probe, planned (and checked) at the first record of a run and on a new
        model only: the probe and the model's structure stay, its parameters change in
        place (`ntkscope.kernels.PreparedNTK`)."""
        if self._ntk is None or self._ntk.model is not state.model:
            self._ntk = PreparedNTK(state.model, self.probe_x, mode=self.mode, **self.options)
        return self._ntk().detach().to(torch.float64)

    def start(self, state: TrainState) -> dict[str, float]:
        if self.probe_x is None:
            self.probe_x = _batch.take(state.train.x, slice(0, self.probe_size))
            y = state.train.labels if state.train.labels is not None else state.train.targets
            self.probe_y = None if y is None else y[: self.probe_size]
        self.probe_x = _batch.like(self.probe_x, "probe_x", _like(state))
        self._ntk = None  # a new run: planned and checked again
        self.initial = self.latest = self._kernel(state)
        return {"kernel_change": 0.0, "kernel_distance": 0.0, **self._alignment(self.initial)}

    def _alignment(self, kernel: torch.Tensor) -> dict[str, float]:
        if self.probe_y is None:
            return {}
        y = self.probe_y
        if not y.is_floating_point():
            y = F.one_hot(y.long(), int(y.max()) + 1)
        return {"kernel_alignment": metrics.centered_alignment(metrics.scalar_kernel(kernel), y)}

    def record(self, state: TrainState) -> dict[str, float]:
        kernel = self._kernel(state)
        row = {
            "kernel_change": metrics.relative_distance(kernel, self.initial),
            "kernel_distance": metrics.kernel_distance(kernel, self.initial),
            "kernel_velocity": metrics.kernel_distance(kernel, self.latest)
            / max(state.step - self.latest_step, 1),
            **self._alignment(kernel),
        }
        self.latest, self.latest_step = kernel, state.step
        return row


def _layer(name: str) -> str:
    return name.rpartition(".")[0] or name


class ParameterRecorder(Recorder):
    """``param_change`` ‖θ_t − θ_0‖ / ‖θ_0‖ over all trainable parameters (Lee et al. 2019:
    O(1/√width) in NTK parameterization), and ``param_change/<layer>`` per module."""

    def __init__(self, every: int = 1) -> None:
        self.every = positive_int(every, "every")
        self._initial: dict[str, torch.Tensor] = {}

    def _current(self, state: TrainState) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in state.model.named_parameters() if p.requires_grad}

    def start(self, state: TrainState) -> dict[str, float]:
        self._initial = {n: p.clone() for n, p in self._current(state).items()}
        return {}

    def record(self, state: TrainState) -> dict[str, float]:
        squares: dict[str, list[float]] = {}
        for name, p in self._current(state).items():
            p0 = self._initial[name].double()
            sums = squares.setdefault(_layer(name), [0.0, 0.0])
            sums[0] += float((p.double() - p0).pow(2).sum())
            sums[1] += float(p0.pow(2).sum())
        change, size = (sum(s[i] for s in squares.values()) for i in (0, 1))
        row = {"param_change": math.sqrt(change / size)}
        row.update(
            {f"param_change/{k}": math.sqrt(c / max(s, 1e-300)) for k, (c, s) in squares.items()}
        )
        return row


class LinearizedRecorder(Recorder):
    """Trains the linearized network f_lin (`ntkscope.linearize`, Lee et al. 2019) with the
    same optimizer, batches and steps as the network, and records on ``test_x``:

    ``linear_rmse`` RMSE(f_t, f_lin,t); ``linear_gap`` = RMSE(f_t, f_lin,t) / RMS(f_t − f_0),
    the part of the network's change that the linear model misses (from step 1 on); and the
    losses ``linear_train_loss`` (and ``linear_test_loss``) of f_lin on the full sets.

    Args:
        test_x: inputs to compare on; None: the test set's (or, without one, the training
            set's) inputs.
        every: steps between records.
    """

    needs = ("targets", "optimizer", "lr", "batch")

    def __init__(self, test_x: torch.Tensor | None = None, every: int = 1) -> None:
        self.test_x = test_x
        self.every = positive_int(every, "every")

    def start(self, state: TrainState) -> dict[str, float]:
        if self.test_x is None:
            self.test_x = (state.test or state.train).x
        self.test_x = _batch.like(self.test_x, "test_x", _like(state))
        self.linear = linearize(state.model)
        self.optimizer = state.make_optimizer(self.linear)
        with torch.no_grad():
            self._f0 = _batch.forward(state.model, self.test_x).detach()
        return self.record(state)

    def after_step(self, state: TrainState) -> None:
        x, targets = state.batch
        self.optimizer.zero_grad(set_to_none=True)
        objective(state.loss, self.linear(x), targets).backward()
        self.optimizer.step()

    def record(self, state: TrainState) -> dict[str, float]:
        with torch.no_grad():
            f, f_lin = _batch.forward(state.model, self.test_x), self.linear(self.test_x)
            row = {"linear_rmse": metrics.rmse(f, f_lin)}
            moved = metrics.rmse(f, self._f0)
            if state.step > 0 and moved > 0:
                row["linear_gap"] = row["linear_rmse"] / moved
            for split, name in ((state.train, "train"), (state.test, "test")):
                if split is not None:
                    value = state.objective(self.linear(split.x), split.targets)
                    row[f"linear_{name}_loss"] = float(value)
        return row


FULL_KERNEL_LIMIT = 4096
"""Largest N·O for which `PredictionRecorder` uses the full eNTK by default."""


class PredictionRecorder(Recorder):
    """The loss curve NTK theory predicts for this run (`ntkscope.predict_mse`).

    With Θ the eNTK at t = 0 on the training set and, for an NTK-parameterized ntkscope
    MLP, the infinite NTK Θ_∞ ⊗ I_O, records ``predicted_train_loss`` and
    ``predicted_train_loss_infinite`` on the training set (``predicted_test_loss*`` on the test
    set), both started from the network's own f_0. Full-batch SGD without momentum is
    predicted step by step (discrete gradient descent: exact for the linearized network
    when Θ is the full eNTK); mini-batches and momentum μ by gradient flow with rate
    η/(1 − μ) per step (their average drift). Needs ``loss="mse"`` and ``optimizer="sgd"``.
    Full-batch SGD at or above a kernel's `stability_limit` 2N/λ_max is predicted to
    diverge: those predicted losses are inf.

    Args:
        every: steps between records.
        mode: "full" (N, N, O, O) eNTK, "trace" (the mean over outputs, ⊗ I_O: O² times
            cheaper to contract, exact only when the output blocks are ∝ I_O), or "auto":
            full when N·O ≤ `FULL_KERNEL_LIMIT` and the structured eNTK method applies
            (the full kernel costs O² times the trace one on the generic methods).
        infinite: also predict with the infinite NTK when the model is a ntkscope MLP.
        **ntk_options: passed to `ntkscope.empirical_ntk` (method, memory_budget).

    Attributes:
        predictions: the predicted outputs (T, N, O) at every record step, as
            ``train_outputs``, ``test_outputs`` and, with the infinite NTK, ``*_infinite``.
    """

    needs = ("train_set", "steps")

    def __init__(
        self, every: int = 1, *, mode: str = "auto", infinite: bool = True, **ntk_options
    ) -> None:
        self.every, self.infinite, self.options = (
            positive_int(every, "every"),
            infinite,
            ntk_options,
        )
        self.mode = None if mode == "auto" else choice(Mode, mode, "mode")
        self.predictions: dict[str, torch.Tensor] = {}
        self._losses: dict[str, torch.Tensor] = {}

    def start(self, state: TrainState) -> dict[str, float]:
        if state.loss is not Loss.MSE or state.optimizer is not Optimizer.SGD:
            raise ValueError(
                "recorders: PredictionRecorder predicts MSE training by SGD; got "
                f"loss={state.loss.value!r}, optimizer={state.optimizer.value!r}"
            )
        steps = sorted({*range(0, state.steps + 1, self.every), state.steps})
        self._index = {s: i for i, s in enumerate(steps)}
        test = (
            state.test
            if state.test is not None
            else Split(_batch.take(state.train.x, slice(0, 0)), state.train.targets[:0], None)
        )
        kernels = {"": self._entk(state, test.x)}
        spec = mlp_spec(state.model) if self.infinite else None
        if spec is not None:
            options = dict(
                depth=spec.depth,
                activation=spec.activation,
                sigma_w=spec.sigma_w,
                sigma_b=spec.sigma_b,
            )
            x = state.train.x.flatten(1)
            k = infinite_kernels(x, **options)[1]
            k_test = infinite_kernels(test.x.flatten(1), x, **options)[1] if len(test) else k[:0]
            kernels["_infinite"] = (k, k_test)
        with torch.no_grad():
            f0, f0_test = (_batch.forward(state.model, s.x) for s in (state.train, test))
        lr, discrete = state.lr / (1 - state.momentum), state.full_batch and state.momentum == 0
        for suffix, (k, k_test) in kernels.items():
            if discrete and lr >= stability_limit(k):  # the kernel predicts divergence
                for prefix, split in (("train_", state.train), ("test_", test)):
                    if len(split):
                        self._losses[f"predicted_{prefix}loss{suffix}"] = torch.full(
                            (len(steps),), math.inf, dtype=torch.float64
                        )
                continue
            prediction = predict_mse(
                k, k_test, state.train.targets, f0, f0_test, t=steps, lr=lr, discrete=discrete
            )
            for prefix, split, outputs in (
                ("train_", state.train, prediction.train),
                ("test_", test, prediction.test),
            ):
                if len(split):
                    self.predictions[f"{prefix}outputs{suffix}"] = outputs
                    error = (outputs - split.targets.double()).pow(2).sum(dim=(1, 2))
                    self._losses[f"predicted_{prefix}loss{suffix}"] = error / len(split) / 2
        return self.record(state)

    def _entk(self, state: TrainState, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Θ̂_0(X, X) and Θ̂_0(X*, X) in the chosen mode, float64."""
        x, model = state.train.x, state.model
        mode = self.mode
        if mode is None:
            small = _batch.size(x) * state.train.targets.shape[1] <= FULL_KERNEL_LIMIT
            structured = (
                resolve_method(model, x, mode=Mode.FULL, **self.options) is Method.STRUCTURED
            )
            mode = Mode.FULL if small and structured else Mode.TRACE
        k = empirical_ntk(model, x, mode=mode, **self.options).double()
        if _batch.size(x_test) == 0:
            return k, k[:0]
        return k, empirical_ntk(model, x_test, x, mode=mode, **self.options).double()

    def record(self, state: TrainState) -> dict[str, float]:
        i = self._index.get(state.step)
        return {} if i is None else {k: float(v[i]) for k, v in self._losses.items()}
