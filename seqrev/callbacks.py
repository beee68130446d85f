"""Lightning callbacks of seqrev's own."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback

# Imports inside functions: matplotlib (the `plot` extra) loads only when a picture is drawn.

log = logging.getLogger("seqrev")


class EpochLog(Callback):
    """One line every `every_n_epochs` epochs (and the last): the epoch's train and validation scores.

    Seqrev's progress report instead of a progress bar: a bar redrawn per step costs time on runs
    this small and fills log files and parallel sweeps with control characters. Lightning calls a
    callback's `on_train_epoch_end` before the module's, where the epoch's training scores are logged,
    so an epoch's line is written when the next epoch starts, or when training ends.
    """

    def __init__(self, every_n_epochs: int = 10) -> None:
        self.every_n_epochs = every_n_epochs
        self.finished_epoch: int | None = None  # the latest epoch whose line is still to be written

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.finished_epoch = trainer.current_epoch + 1

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        due = self.finished_epoch is not None and self.every_n_epochs > 0
        if due and self.finished_epoch % self.every_n_epochs == 0:
            self._write(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.finished_epoch is not None and self.every_n_epochs > 0:
            self._write(trainer)

    def _write(self, trainer) -> None:
        metrics = {key: value.item() for key, value in trainer.callback_metrics.items()}
        log.info(epoch_line(self.finished_epoch, trainer.max_epochs, metrics))
        self.finished_epoch = None


def epoch_line(epoch: int, max_epochs: int, metrics: dict[str, float]) -> str:
    """EpochLog's line for an epoch: its train and validation scores (a pack writes one per member)."""
    keys = ("train/loss", "train/acc", "val/loss", "val/acc")
    shown = [f"{key} {metrics[key]:.4f}" for key in keys if key in metrics]
    return f"epoch {epoch}/{max_epochs}: " + ", ".join(shown)


class History(Callback):
    """Each validation's `val/loss` and `val/acc`, by epoch: kept in the run's checkpoints (a resumed run
    goes on with it) and written to results.json, where the report draws learning curves from, with no
    torch or TensorBoard. A pack updates each member's own (`record`)."""

    KEYS = ("val/loss", "val/acc")

    def __init__(self) -> None:
        self.validations: list[dict[str, float]] = []

    def record(self, epoch: int, metrics: dict) -> None:
        self.validations.append({"epoch": epoch, **{key: float(metrics[key]) for key in self.KEYS if key in metrics}})

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.record(trainer.current_epoch, trainer.callback_metrics)

    def state_dict(self) -> dict:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict) -> None:
        self.validations = list(state_dict["validations"])


class AttentionMap(Callback):
    """After testing a model that has attention, pictures its weights for the first few test inputs.

    Decoder step x encoder step heatmaps (for reversal, the anti-diagonal), logged to TensorBoard's
    IMAGES tab and saved as `attention.png` in `dirpath`. Needs matplotlib (the `plot` extra); without
    it, says so once. Models without attention are left alone.
    """

    def __init__(self, dirpath: str, n_examples: int = 4) -> None:
        self.dirpath, self.n_examples = Path(dirpath), n_examples

    def on_test_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:  # with several processes (trainer=ddp) one picture, by rank 0
            return
        if not hasattr(pl_module, "attention_weights") or trainer.datamodule is None:
            return
        from seqrev.plotting import MISSING, attention_figure, pyplot

        plt = pyplot()
        if plt is None:
            log.warning(f"no attention picture: {MISSING}")
            return
        inputs, targets = (t[: self.n_examples] for t in trainer.datamodule.test)
        weights = pl_module.attention_weights(inputs).cpu().numpy()
        fig = attention_figure(plt, weights, inputs.argmax(-1).tolist(), targets.tolist(),
                               title="attention weights of greedy decoding on test inputs")
        self.dirpath.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.dirpath / "attention.png", dpi=100)
        for logger in trainer.loggers:
            if hasattr(logger.experiment, "add_figure"):
                logger.experiment.add_figure("attention", fig, trainer.global_step)
        plt.close(fig)
