"""Which engine trains a job, and why: one table of what each engine honours, one function that reads it.

- `per_batch`: Lightning's own loop, one batch per call, automatic optimisation: all Lightning documents.
- `grouped`: Lightning's loop, `data.steps_per_call` batches per call, one optimiser step per batch
  (seqrev.models.base). Lightning's fixed cost per call (about 1 ms here, as much as the step itself) is
  paid once per group; Lightning then counts a group as one batch, so nothing may act per batch.
- `packed`: a sweep's seeds of one cell trained as one model (seqrev.packs), outside Lightning's loop:
  only what a pack reproduces exactly.

A job takes the first of them (packed only under hydra/launcher=packed) that honours all it uses; the
console gives what the first refused engine does not honour. The packed launcher asks from the config
alone (without torch); a run asks again with its Trainer and model, whose classes only the objects show.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from omegaconf import DictConfig, OmegaConf

from seqrev.config import TRAINER_KEYS
from seqrev.errors import RunDirError

# Imports inside functions: Lightning and the models load only where a run's objects are asked about: the packed
# launcher's process chooses engines from the config alone, without torch.

Engine = Literal["packed", "grouped", "per_batch"]
ENGINES, LIGHTNING, PER_BATCH = ("packed", "grouped", "per_batch"), ("grouped", "per_batch"), ("per_batch",)


@dataclass
class Job:
    """What the choice reads: a job's config and model name; in a run, also its built Trainer and model,
    and the settings each configured callback was made with (by `id`)."""

    cfg: DictConfig
    model_name: str | None
    trainer: Any = None
    model: Any = None
    callback_settings: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    alone: bool = False  # no other job of the sweep differs from it only in its seed
    continues: str | None = None  # which engine wrote the checkpoint a killed job continues: "lightning", "packed"

    def get(self, key: str) -> Any:
        return OmegaConf.select(self.cfg, key, default=None)


@dataclass(frozen=True)
class Feature:
    """Something a job can use, the engines that honour it, and how to tell (a few words, or None)."""

    what: str
    honoured_by: tuple[Engine, ...]
    used: Callable[[Job], str | None]


def whole(value: Any) -> bool:
    """Lightning reads an int as a number of batches and a float as a fraction: None and 1.0 are all."""
    return value is None or (isinstance(value, float) and value == 1.0)


TRAINER_OPTIONS: dict[str, tuple[Callable[[Any], bool], tuple[Engine, ...], str]] = {
    # option: (is it a value every engine takes, the engines that take any other, what another value does)
    "max_steps": (lambda v: v in (None, -1), PER_BATCH, "counts optimiser steps"),
    "limit_train_batches": (whole, PER_BATCH, "counts batches"),
    "val_check_interval": (whole, PER_BATCH, "counts batches"),
    "gradient_clip_val": (lambda v: not v, PER_BATCH, "clips in Lightning's optimiser step"),
    "accumulate_grad_batches": (lambda v: v in (None, 1), PER_BATCH, "counts batches"),
    "limit_val_batches": (whole, LIGHTNING, "counts batches"),
    "limit_test_batches": (whole, LIGHTNING, "counts batches"),
    "check_val_every_n_epoch": (lambda v: v in (None, 1), LIGHTNING, "skips validations"),
    "precision": (lambda v: str(v) in ("None", "32", "32-true"), LIGHTNING, "changes the arithmetic"),
    "devices": (lambda v: v in (None, 1, "auto"), LIGHTNING, "runs several processes"),
    "accelerator": (lambda v: v in (None, "auto", "cpu", "gpu", "cuda"), LIGHTNING, "is another device"),
}
TRAINER_ANY_VALUE = TRAINER_KEYS - TRAINER_OPTIONS.keys() - {"strategy"}
"""Trainer options every engine takes whatever their value: the rest of seqrev's own (conf/trainer), but
`strategy` (trainer=ddp), which acts inside Lightning's loop."""


def _trainer_option(key: str) -> Callable[[Job], str | None]:
    def used(job: Job) -> str | None:
        value, (is_default, _, why) = job.get(f"trainer.{key}"), TRAINER_OPTIONS[key]
        shown = "" if key == "gradient_clip_val" else f"={value!r}"
        return None if is_default(value) else f"trainer.{key}{shown} {why}"
    return used


def _other_trainer_option(job: Job) -> str | None:
    known = TRAINER_ANY_VALUE | TRAINER_OPTIONS.keys()
    other = [key for key in (job.cfg.get("trainer") or {}).keys() if key not in known]
    return f"trainer.{other[0]}={job.get(f'trainer.{other[0]}')!r} acts inside Lightning's loop" if other else None


ELEMENTWISE_OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD", "torch.optim.RMSprop")
"""Optimisers whose update of each weight reads only that weight's gradient and state: on stacked weights
they take every member's step exactly as on its own."""

ANY = None
PACKED_CALLBACKS = {  # seqrev's own callbacks (conf/callbacks/default.yaml) and the settings a pack reproduces
    "early_stopping": dict(_target_="lightning.pytorch.callbacks.EarlyStopping", monitor=ANY, mode=ANY, patience=ANY,
                           min_delta=ANY, check_finite=ANY, stopping_threshold=ANY, divergence_threshold=ANY,
                           verbose=ANY, strict=ANY, check_on_train_epoch_end=ANY),  # a pack validates every epoch
    "model_checkpoint": dict(_target_="lightning.pytorch.callbacks.ModelCheckpoint", dirpath=ANY, filename="best",
                             monitor=ANY, mode=ANY, save_top_k=1, enable_version_counter=False, save_last=False,
                             verbose=ANY, save_on_train_epoch_end=ANY),
    "last_checkpoint": dict(_target_="lightning.pytorch.callbacks.ModelCheckpoint", dirpath=ANY, filename="last",
                            monitor=ANY, save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=ANY),
    "epoch_log": dict(_target_="seqrev.callbacks.EpochLog", every_n_epochs=ANY),
    "history": dict(_target_="seqrev.callbacks.History"),
    "attention_map": dict(_target_="seqrev.callbacks.AttentionMap", dirpath=ANY, n_examples=ANY),
}
MONITORED = ("val/loss", "val/acc", "val/seq_acc")


def _wiring_does_not_pack(job: Job) -> str | None:
    from seqrev.catalog import wirings

    wiring = wirings().get(job.model_name or "")
    return None if wiring is not None and wiring.packs else (
        f"model={job.model_name} is not one of the tutorial's five wirings, which are what packs train")


def _optimizer(job: Job) -> str | None:
    optimizer = str(job.get("model.optimizer._target_"))
    return None if optimizer in ELEMENTWISE_OPTIMIZERS else (
        f"the optimizer {optimizer} is not one packs step exactly ({', '.join(ELEMENTWISE_OPTIMIZERS)})")


def _callback_settings(job: Job) -> str | None:
    for name, settings in (job.cfg.get("callbacks") or {}).items():
        honoured, target = PACKED_CALLBACKS.get(str(name)), str((settings or {}).get("_target_"))
        if honoured is None or target != honoured["_target_"]:
            return f"the callback callbacks.{name} ({target}) runs inside Lightning's loop"
        for key, value in (settings or {}).items():
            if key not in honoured or (honoured[key] is not ANY and value != honoured[key]):
                return f"callbacks.{name}.{key}={value!r} is not something packs do"
        monitor = (settings or {}).get("monitor")
        if name in ("early_stopping", "model_checkpoint") and monitor not in MONITORED:
            return f"callbacks.{name}.monitor={monitor!r}: packs monitor one of {', '.join(MONITORED)}"
    return None


PER_BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
                   "on_before_zero_grad", "on_before_optimizer_step")
"""Callback and LightningModule hooks that Lightning calls per training batch or per optimiser step."""
MODULE_STEP_HOOKS = ("training_step", "backward", "optimizer_step", "optimizer_zero_grad",
                     "configure_gradient_clipping", "lr_scheduler_step")
"""LightningModule hooks of the step itself: a wiring that overrides one takes charge of the step."""


def _overridden(obj: object, base: type, hooks: tuple[str, ...]) -> list[str]:
    return [hook for hook in hooks if getattr(type(obj), hook) is not getattr(base, hook)]


def _callback_acts_per_batch(job: Job) -> str | None:
    """A callback whose class acts per batch, unless its settings leave those hooks idle (one Lightning
    added itself, with no settings, counts if it could)."""
    if job.trainer is None:  # asked from the config alone
        return None
    from lightning.pytorch import Callback
    from lightning.pytorch import callbacks as cb

    idle = {cb.ModelCheckpoint: lambda s: not s.get("every_n_train_steps") and s.get("train_time_interval") is None,
            cb.LearningRateMonitor: lambda s: s.get("logging_interval") == "epoch",
            cb.Timer: lambda s: s.get("duration") is None or s.get("interval", "step") == "epoch"}
    for callback in job.trainer.callbacks:
        name, settings = type(callback).__name__, job.callback_settings.get(id(callback))
        if isinstance(callback, (cb.StochasticWeightAveraging, cb.GradientAccumulationScheduler)):
            return f"{name} needs Lightning's automatic optimisation"
        hooks = _overridden(callback, Callback, PER_BATCH_HOOKS)
        if not hooks:
            continue
        # A Lightning callback whose per-batch hooks are its class's own may be idle per batch by its settings
        test = next((test for cls, test in idle.items() if not _overridden(callback, cls, tuple(hooks))), None)
        if test is None or settings is None or not test(settings):
            return f"{name} acts on every training batch ({hooks[0]})"
    return None


def _module_takes_the_step(job: Job) -> str | None:
    if job.model is None:  # asked from the config alone
        return None
    from seqrev.models.base import Seq2SeqModel

    if not isinstance(job.model, Seq2SeqModel):
        return f"{type(job.model).__name__} is not a seqrev wiring"
    hooks = _overridden(job.model, Seq2SeqModel, PER_BATCH_HOOKS + MODULE_STEP_HOOKS)
    return f"{type(job.model).__name__} overrides {hooks[0]}" if hooks else None


FEATURES: tuple[Feature, ...] = (
    Feature("a wiring whose class does not pack (the decoders, yours)", LIGHTNING, _wiring_does_not_pack),
    Feature("`resume=` (it continues one run)", LIGHTNING,
            lambda job: "resume= continues one run" if job.get("resume") and job.continues != "packed" else None),
    Feature("a job alone in its cell (no other seed to pack with)", LIGHTNING,
            lambda job: "no other job differs from it only in its seed" if job.alone else None),
    Feature("a killed job's checkpoint written by Lightning's loop, to continue", LIGHTNING,
            lambda job: "it continues an ordinary job's run" if job.continues == "lightning" else None),
    Feature("a checkpoint written by a pack, to continue (alone: a pack of one)", ("packed",),
            lambda job: "it continues a pack's member, which only a pack trains" if job.continues == "packed"
            else None),
    Feature("an optimiser other than Adam, AdamW, SGD, RMSprop", LIGHTNING, _optimizer),
    Feature("`scheduler=plateau` (ReduceLROnPlateau)", LIGHTNING,
            lambda job: "ReduceLROnPlateau follows each run's own validation loss, and a pack shares one rate"
            if str(job.get("model.scheduler._target_") or "").endswith("ReduceLROnPlateau") else None),
    Feature("seqrev's callbacks with other settings (e.g. `save_top_k=3`), callbacks of your own", LIGHTNING,
            _callback_settings),
    *(Feature(f"`trainer.{key}` other than its default", engines, _trainer_option(key))
      for key, (_, engines, _) in TRAINER_OPTIONS.items()),
    Feature("any other Trainer option (`+trainer.min_epochs`, `max_time`, ...)", LIGHTNING, _other_trainer_option),
    Feature("`data.steps_per_call=1`", ("packed", "per_batch"),
            lambda job: "data.steps_per_call=1" if (job.get("data.steps_per_call") or 1) <= 1 else None),
    Feature("a callback acting on every batch (a step-interval LearningRateMonitor, ModelCheckpoint every N "
            "steps, a Timer, StochasticWeightAveraging, ...)", PER_BATCH, _callback_acts_per_batch),
    Feature("a wiring that overrides a step hook (`training_step`, `optimizer_step`, ...)", PER_BATCH,
            _module_takes_the_step),
)
"""What each engine honours: every feature a job uses must be honoured by the engine that trains it."""


class Choice(NamedTuple):
    engine: Engine
    reason: str  # one line: why not the engine before it (or, for a pack, that it is one)


def choose(job: Job, packing: bool = False) -> Choice:
    """The engine that trains `job` and the one-line reason: under `packing` (hydra/launcher=packed) or to
    continue a pack's member, a pack unless a feature refuses; else grouped Lightning unless a feature
    refuses; else per-batch Lightning. RunDirError when none can (a member's checkpoint and a feature only
    Lightning honours)."""
    refused = ""
    for engine in ENGINES[0 if packing or job.continues == "packed" else 1:]:
        reason = next((why for feature in FEATURES if engine not in feature.honoured_by
                       for why in [feature.used(job)] if why), None)
        if reason is None:
            return Choice(engine, refused or ("trained in a pack" if engine == "packed" else "nothing acts per batch"))
        refused = refused or reason
    raise RunDirError(f"it continues a pack's member, which only a pack trains, but {refused}; start a new run "
                      "instead, or continue it without that setting")


def table() -> str:
    """FEATURES as the Markdown table docs/performance.md shows."""
    rows = ["| what a job uses | packed | grouped | per batch |", "|---|---|---|---|"]
    rows += [f"| {f.what} | " + " | ".join("yes" if e in f.honoured_by else "no" for e in ENGINES) + " |"
             for f in FEATURES]
    return "\n".join(rows)
