"""Whether a run may hand Lightning several batches per call (`data.steps_per_call`), or must not.

Grouping spreads Lightning's fixed per-call cost (about 1 ms a call here, as much as the step itself)
over many optimiser steps. But Lightning then counts a group as one batch, so its per-batch hooks and
the Trainer options counted in batches or steps would see groups. So seqrev groups only when nothing in
the run acts per batch. Otherwise the run takes Lightning's own loop (one batch per call, automatic
optimisation), exactly as Lightning documents it, and the console says why in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import (
    GradientAccumulationScheduler,
    LearningRateMonitor,
    ModelCheckpoint,
    StochasticWeightAveraging,
    Timer,
)

log = logging.getLogger("seqrev")

PER_BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
                   "on_before_zero_grad", "on_before_optimizer_step")
"""Callback and LightningModule hooks that Lightning calls per training batch or per optimiser step."""

MODULE_STEP_HOOKS = ("training_step", "backward", "optimizer_step", "optimizer_zero_grad",
                     "configure_gradient_clipping", "lr_scheduler_step")
"""LightningModule hooks of the step itself: a wiring that overrides one takes charge of the step."""

IDLE_PER_BATCH: dict[type[Callback], Callable[[Mapping[str, Any]], bool]] = {
    ModelCheckpoint: lambda s: not s.get("every_n_train_steps") and s.get("train_time_interval") is None,
    LearningRateMonitor: lambda s: s.get("logging_interval") == "epoch",
    Timer: lambda s: s.get("duration") is None or s.get("interval", "step") == "epoch",
}
"""Lightning callbacks whose per-batch hooks do nothing unless their settings (constructor arguments,
as the config gives them) ask for it."""

NEEDS_AUTOMATIC = (StochasticWeightAveraging, GradientAccumulationScheduler)
"""Callbacks that work only under Lightning's automatic optimisation (they drive its schedule or
accumulation)."""


def _overridden(obj: object, base: type, hooks: tuple[str, ...]) -> list[str]:
    return [hook for hook in hooks if getattr(type(obj), hook) is not getattr(base, hook)]


def _callback_reason(callback: Callback, settings: Mapping[str, Any] | None) -> str | None:
    name = type(callback).__name__
    if isinstance(callback, NEEDS_AUTOMATIC):
        return f"{name} needs Lightning's automatic optimisation"
    hooks = _overridden(callback, Callback, PER_BATCH_HOOKS)
    if not hooks:
        return None
    idle = next((test for cls, test in IDLE_PER_BATCH.items()
                 if all(getattr(type(callback), hook) is getattr(cls, hook) for hook in hooks)), None)
    if idle is not None and settings is not None and idle(settings):
        return None
    return f"{name} acts on every training batch ({hooks[0]})"


def _trainer_reason(trainer: Trainer) -> str | None:
    def whole(value: Any) -> bool:  # Lightning reads an int as a number of batches, a float as a fraction
        return value is None or (isinstance(value, float) and value == 1.0)

    if trainer.max_steps not in (-1, None):
        return f"trainer.max_steps={trainer.max_steps} counts optimiser steps"
    if not whole(trainer.limit_train_batches):
        return f"trainer.limit_train_batches={trainer.limit_train_batches!r} counts batches"
    if not whole(trainer.val_check_interval):
        return f"trainer.val_check_interval={trainer.val_check_interval!r} counts batches"
    if trainer.gradient_clip_val:
        return "trainer.gradient_clip_val clips in Lightning's optimiser step"
    if trainer.accumulate_grad_batches != 1:
        return f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches} counts batches"
    return None


def per_batch_reason(trainer: Trainer, model: LightningModule,
                     callback_settings: Mapping[int, Mapping[str, Any]]) -> str | None:
    """Why this run must be trained one batch per Lightning call; None if groups change nothing.

    `callback_settings` maps `id(callback)` to the settings a configured callback was made with; a
    callback without them (one Lightning added itself) counts as acting per batch if it could.
    """
    from seqrev.models.base import Seq2SeqModel

    if not isinstance(model, Seq2SeqModel):
        return f"{type(model).__name__} is not a seqrev wiring"
    hooks = _overridden(model, Seq2SeqModel, PER_BATCH_HOOKS + MODULE_STEP_HOOKS)
    if hooks:
        return f"{type(model).__name__} overrides {hooks[0]}"
    reason = _trainer_reason(trainer)
    for callback in trainer.callbacks:
        reason = reason or _callback_reason(callback, callback_settings.get(id(callback)))
    return reason


def plan_steps(trainer: Trainer, model: LightningModule, datamodule: Any,
               callback_settings: Mapping[int, Mapping[str, Any]]) -> bool:
    """Group `datamodule.steps_per_call` batches per Lightning call when nothing acts per batch, else
    leave Lightning's own loop and say why. Whether the run is grouped."""
    if datamodule.steps_per_call <= 1:
        return False
    reason = per_batch_reason(trainer, model, callback_settings)
    if reason is not None:
        log.info(f"training one batch per Lightning call: {reason}")
        return False
    model.use_grouped_steps()
    datamodule.group_size = datamodule.steps_per_call
    return True
