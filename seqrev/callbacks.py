"""Lightning callbacks of seqrev's own."""

from __future__ import annotations

import time
from pathlib import Path

import logging

from lightning.pytorch import Callback

log = logging.getLogger("seqrev")


class EpochLog(Callback):
    """One line every `every_n_epochs` epochs (and the last): the epoch's train and validation scores.

    Seqrev's progress report instead of a progress bar: a bar redrawn per step costs time on runs
    this small and fills log files and parallel sweeps with control characters.
    """

    def __init__(self, every_n_epochs: int = 10) -> None:
        self.every_n_epochs = every_n_epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs < 1 or (epoch % self.every_n_epochs and epoch != trainer.max_epochs
                                       and not trainer.should_stop):
            return
        metrics = trainer.callback_metrics
        shown = [f"{key} {metrics[key].item():.4f}" for key in ("train/loss", "train/acc", "val/loss", "val/acc")
                 if key in metrics]
        log.info(f"epoch {epoch}/{trainer.max_epochs}: " + ", ".join(shown))


class FirstStepTimer(Callback):
    """Writes the wall-clock time (time.time()) at which the first training batch starts to `path`.

    Used by `seqrev.bench` to measure start-up: add it with
    `+callbacks.first_step_timer._target_=seqrev.callbacks.FirstStepTimer +callbacks.first_step_timer.path=FILE`.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.written = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.written:
            self.path.write_text(repr(time.time()))
            self.written = True


class TrainingTimer(Callback):
    """Wall seconds from the start to the end of training (all epochs, validation included)."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.started
