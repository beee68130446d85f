"""Checkpoints: written atomically in their own folder, off the training thread, and laid out as Lightning
lays them out.

Lightning's default moves a checkpoint into place from the *system* temp folder: across filesystems that
is a copy, and a crash or a full disk during it destroys the previous checkpoint. Here the temporary file
sits beside the destination, fsynced, and is renamed over it: the folder always holds a whole checkpoint.
The bytes are taken when Lightning asks, and written by a thread of their own, so training goes on while
the disk syncs.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, __version__
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seqrev.atomic import atomic_write
from seqrev.rundir import load_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO plugin, writing each checkpoint atomically in its own folder, in the
    background (seqrev.checkpointing.BackgroundWrites). Every write asked so far is on disk before a read,
    a removal, and the Trainer's teardown (the end of fit or test, and Ctrl-C's graceful stop), so what a
    run writes after training, results.json, comes after its checkpoints. A write that failed leaves the
    previous file in place and raises at the next save or at teardown, as Lightning's AsyncCheckpointIO does."""

    def __init__(self, background: bool = True) -> None:
        super().__init__()
        self.writes = BackgroundWrites() if background else None  # None: each written before training goes on

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        if self.writes is None:
            atomic_write(path, lambda handle: torch.save(checkpoint, handle))
            return
        self._raise_failure(self.writes.wait(block=False))
        self.writes.write(self, checkpoint, [Path(path)])

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        """Read with `weights_only=True` whatever the caller asks: a checkpoint from elsewhere never runs code."""
        self.teardown()
        return load_checkpoint(Path(path), map_location=map_location or (lambda storage, loc: storage))

    def remove_checkpoint(self, path) -> None:
        self.teardown()
        super().remove_checkpoint(path)

    def teardown(self) -> None:
        """Every write asked so far on disk; the first failure raised."""
        if self.writes is not None:
            self._raise_failure(self.writes.wait())

    @staticmethod
    def _raise_failure(failed: list[tuple[Any, BaseException]]) -> None:
        if failed:
            raise failed[0][1]


def training_checkpoint(model: LightningModule, datamodule: LightningDataModule, callbacks: Iterable[Callback],
                        epoch: int, global_step: int, state_dict: dict[str, torch.Tensor],
                        optimizer_state: dict[str, Any], lr_schedulers: list[dict[str, Any]]) -> dict[str, Any]:
    """A training checkpoint in the layout Lightning writes, without its loop state: what a run that
    Lightning's loop does not drive (a pack's member, seqrev.packs) saves, so that `seqrev.load`,
    `Seq2SeqModel.load_from_checkpoint`, predict and the report read it as an ordinary run's."""
    checkpoint = {"epoch": epoch, "global_step": global_step, "pytorch-lightning_version": __version__,
                  "state_dict": state_dict, "optimizer_states": [optimizer_state], "lr_schedulers": lr_schedulers,
                  "callbacks": {callback.state_key: state for callback in callbacks
                                if (state := callback.state_dict())},  # as Lightning: none that are empty
                  type(datamodule).__qualname__: datamodule.state_dict(),
                  model.CHECKPOINT_HYPER_PARAMS_KEY: dict(model.hparams),
                  # How the hyperparameters were given, as Lightning records it: a wiring saves all of its
                  # constructor's arguments (`save_hyperparameters()` with no names), which Lightning calls "kwargs".
                  model.CHECKPOINT_HYPER_PARAMS_NAME: "kwargs"}
    model.on_save_checkpoint(checkpoint)
    return checkpoint


class BackgroundWrites:
    """Checkpoints serialised when asked for (once, whatever the number of files), then written atomically
    by a thread of their own, in order: the disk's waits overlap the work that goes on, and the thread holds
    Python's lock only briefly. `wait` waits for every write asked so far and hands back the owners whose
    writes failed, each with its first error."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="seqrev-checkpoints")
        self.pending: list[tuple[Any, Any]] = []

    def write(self, owner: Any, checkpoint: dict[str, Any], paths: list[Path]) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # the state now: the work goes on while it is written
        data = buffer.getvalue()
        self.pending += [(owner, self.pool.submit(atomic_write, path, lambda handle: handle.write(data)))
                         for path in paths]

    def wait(self, block: bool = True) -> list[tuple[Any, BaseException]]:
        """The owners whose writes failed, each with its first error, of the writes asked so far (without
        `block`: of those already done)."""
        failed: dict[int, tuple[Any, BaseException]] = {}  # by identity: an owner need not be hashable
        still = []
        for owner, write in self.pending:
            if not (block or write.done()):
                still.append((owner, write))
            elif write.exception() is not None:
                failed.setdefault(id(owner), (owner, write.exception()))
        self.pending = still
        return list(failed.values())

    def close(self) -> None:
        self.pool.shutdown()
