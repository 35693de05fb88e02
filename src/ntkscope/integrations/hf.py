"""`NTKMonitorCallback`: ntkscope's recorders in a Hugging Face ``Trainer`` (``ntkscope[hf]``).

::

    from ntkscope.integrations.hf import NTKMonitorCallback

    probe = {"input_ids": ids[:128], "attention_mask": mask[:128]}   # from the user's data
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset)
    callback = NTKMonitorCallback(probe, every=50).attach(trainer)
    trainer.train()
    callback.frame(), callback.diagnosis.verdict

The callback takes the model from the callback arguments when training begins, creates a
`ntkscope.Monitor` on it, records after every optimizer step that is due
(``state.global_step``) and at the end, and writes ntkscope's diagnosis report in
``<output_dir>/ntkscope``. Attached to its trainer (`NTKMonitorCallback.attach`), it logs each
record through ``Trainer.log`` (as ``ntk/<name>``), so every reporting integration of the
trainer (TensorBoard, W&B, ...) and ``state.log_history`` receive it. A ``TrainerCallback``
is not given its trainer: passed only in ``Trainer(callbacks=[...])``, the records go to
``state.log_history`` alone (saved with the trainer's state).
"""

from __future__ import annotations

from pathlib import Path

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ntkscope.integrations._common import Front, prefixed

__all__ = ["NTKMonitorCallback"]


class NTKMonitorCallback(Front, TrainerCallback):
    """A ``transformers.TrainerCallback`` driving a `ntkscope.Monitor` (module docstring);
    its arguments are those of `ntkscope.integrations._common.Front`.

    Attributes:
        monitor: the `ntkscope.Monitor` (None before training begins).
        diagnosis: the `ntkscope.Diagnosis` of the run, once training has ended.
        trainer: the trainer it logs through (`attach`), or None.
    """

    trainer: Trainer | None = None

    def attach(self, trainer: Trainer) -> NTKMonitorCallback:
        """Add this callback to ``trainer`` and log through its ``log``; returns self."""
        if not callable(getattr(trainer, "add_callback", None)):
            raise TypeError(f"trainer: expected a transformers.Trainer, got {type(trainer)}")
        trainer.add_callback(self)
        self.trainer = trainer
        return self

    def _log(self, state: TrainerState, row: dict[str, float]) -> None:
        if len(row) <= 1:
            return
        if self.trainer is not None:
            self.trainer.log(prefixed(row))
        else:
            state.log_history.append({**prefixed(row), "step": int(row["step"])})

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        """Create the monitor on the trainer's model and record step 0."""
        model = kwargs.get("model")
        if model is None:
            raise ValueError("model: the Trainer passed no model to its callbacks")
        self._log(state, self._create(model).start())

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        """Record after an optimizer step, when one is due."""
        self._log(state, self.monitor.step(state.global_step))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        """Record the last step and write the diagnosis report."""
        self._log(state, self.monitor.finish())
        self._report(Path(args.output_dir))
