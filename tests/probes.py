"""Real Lightning callbacks that let tests look inside a run started as a separate process."""

from __future__ import annotations

import time
import types
from pathlib import Path

import torch
from lightning.pytorch import Callback


class SaveWeightsPerRank(Callback):
    """At the end of training, every process saves its model's weights to `dirpath/weights_rank<R>.pt`."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()},
                   self.dirpath / f"weights_rank{trainer.global_rank}.pt")


class PauseAtEpoch(Callback):
    """Once `epochs` epochs have ended (and their checkpoints are written), touch `marker` and wait.

    A test that waits for the marker knows exactly where the run is when it sends a signal: at the
    start of epoch `epochs + 1`, with `last.ckpt` holding epoch `epochs`. It pauses once: a resumed
    run that finds the marker goes straight on.
    """

    def __init__(self, epochs: int, marker: str, seconds: float = 120.0, only_for: str | None = None) -> None:
        self.epochs, self.marker, self.seconds, self.only_for = epochs, Path(marker), seconds, only_for

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.only_for is not None and pl_module.name != self.only_for:
            return  # in a sweep: pause only the job of this wiring
        if trainer.current_epoch == self.epochs and not self.marker.exists():
            checkpoint_io = trainer.strategy.checkpoint_io
            if hasattr(checkpoint_io, "writes"):  # seqrev's writes in the background: its checkpoints on disk first
                checkpoint_io.teardown()
            self.marker.write_text(str(self.epochs))
            time.sleep(self.seconds)  # the signal lands here


class FillDiskAtEpoch(Callback):
    """At the start of epoch `epoch` (0-based), fill the file system of `ballast` with one big file, once.

    The next write of the run (a checkpoint at the end of that epoch) then meets a full disk. The
    `marker` (on another file system) makes a resumed run leave the disk alone.
    """

    def __init__(self, epoch: int, ballast: str, marker: str) -> None:
        self.epoch, self.ballast, self.marker = epoch, Path(ballast), Path(marker)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch or self.marker.exists():
            return
        self.marker.write_text("filled")
        chunk = bytes(4096)
        with open(self.ballast, "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(chunk)
            except OSError:
                pass


class FailOnce(Callback):
    """Fails the first run that reaches epoch `epoch` of wiring `only_for` (creating `marker`); later runs pass."""

    def __init__(self, marker: str, only_for: str, epoch: int = 1) -> None:
        self.marker, self.only_for, self.epoch = Path(marker), only_for, epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if pl_module.name == self.only_for and trainer.current_epoch == self.epoch and not self.marker.exists():
            self.marker.write_text("failed once")
            raise RuntimeError("a failure on purpose (tests/probes.py FailOnce)")


TRAINING_HOOKS = ("on_train_epoch_start", "on_train_batch_start", "on_before_backward", "on_after_backward",
                  "on_before_optimizer_step", "on_before_zero_grad", "on_train_batch_end", "on_validation_start",
                  "on_validation_end", "on_train_epoch_end")


BATCH_INDEX_AT = {"on_train_batch_start": 1, "on_train_batch_end": 2}  # after (trainer, pl_module) for callbacks


def _recorder(hook: str, offset: int):
    """A hook that appends (hook, batch index if the hook has one, global_step) to `self.hook_calls`;
    `offset` is 2 for a callback's hooks (trainer, pl_module first), 0 for a module's."""
    def record(self, *args) -> None:
        trainer = args[0] if offset else self.trainer
        at = BATCH_INDEX_AT.get(hook)
        self.hook_calls.append((hook, None if at is None else args[offset + at], trainer.global_step))
    record.__name__ = hook
    return record


class HookLog(Callback):
    """Records every training hook Lightning calls on callbacks, with its batch index and global_step."""

    def __init__(self) -> None:
        self.hook_calls: list[tuple] = []


for _hook in TRAINING_HOOKS:
    setattr(HookLog, _hook, _recorder(_hook, offset=2))  # (trainer, pl_module, ...)


def record_module_hooks(cls: type) -> type:
    """A subclass of LightningModule `cls` that records the training hooks Lightning calls on the module."""
    def init(self, *args, **kwargs) -> None:
        cls.__init__(self, *args, **kwargs)
        self.hook_calls = []
    namespace = {"__init__": init, **{hook: _recorder(hook, offset=0) for hook in TRAINING_HOOKS
                                      if hook not in ("on_validation_start", "on_validation_end")}}
    from seqrev.models import Seq2SeqModel

    # a recording of a wiring is not a wiring of its own: it stays out of seqrev.models.WIRINGS
    keywords = {"abstract": True} if issubclass(cls, Seq2SeqModel) else {}
    return types.new_class(f"Recorded{cls.__name__}", (cls,), keywords, lambda ns: ns.update(namespace))


def _recorded_both_outputs() -> type:
    from seqrev.models.wirings import BothOutputs

    return record_module_hooks(BothOutputs)


RecordedBothOutputs = _recorded_both_outputs()
"""The tutorial's both_outputs wiring, recording the training hooks Lightning calls on it."""
