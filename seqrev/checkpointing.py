"""Checkpoints: written atomically in their own folder, and laid out as Lightning lays them out.

Lightning's default moves a checkpoint into place from the *system* temp folder: across filesystems that
is a copy, and a crash or a full disk during it destroys the previous checkpoint. Here the temporary file
sits beside the destination, fsynced, and is renamed over it: the folder always holds a whole checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seqrev.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO plugin, writing each checkpoint atomically in its own folder."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_write(path, lambda handle: torch.save(checkpoint, handle))

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        """Read with `weights_only=True` whatever the caller asks: a checkpoint from elsewhere never runs code."""
        from seqrev.rundir import load_checkpoint

        return load_checkpoint(Path(path), map_location=map_location or (lambda storage, loc: storage))


def training_checkpoint(model: LightningModule, datamodule: LightningDataModule, callbacks: Iterable[Callback],
                        epoch: int, global_step: int, state_dict: dict[str, torch.Tensor],
                        optimizer_state: dict[str, Any], lr_schedulers: list[dict[str, Any]]) -> dict[str, Any]:
    """A training checkpoint in the layout Lightning writes, without its loop state: what a run that
    Lightning's loop does not drive (a pack's member, seqrev.packs) saves, so that `seqrev.load`,
    `Seq2SeqModel.load_from_checkpoint`, predict and the report read it as an ordinary run's."""
    from lightning.pytorch import __version__

    checkpoint = {"epoch": epoch, "global_step": global_step, "pytorch-lightning_version": __version__,
                  "state_dict": state_dict, "optimizer_states": [optimizer_state], "lr_schedulers": lr_schedulers,
                  "callbacks": {callback.state_key: state for callback in callbacks
                                if (state := callback.state_dict())},  # as Lightning: none that are empty
                  type(datamodule).__qualname__: datamodule.state_dict(),
                  model.CHECKPOINT_HYPER_PARAMS_KEY: dict(model.hparams)}
    if hasattr(model, "_hparams_name"):  # as Lightning records how the hyperparameters were given
        checkpoint[model.CHECKPOINT_HYPER_PARAMS_NAME] = model._hparams_name
    model.on_save_checkpoint(checkpoint)
    return checkpoint


class BackgroundWrites:
    """Checkpoints serialised when asked for (once, whatever the number of files), then written atomically
    by a thread of their own, in order: the disk's waits overlap the work that goes on, and the thread holds
    Python's lock only briefly. `wait` waits for every write asked so far and hands back the owners whose
    writes failed, each with its first error."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1, thread_name_prefix="seqrev-checkpoints")
        self.pending: list[tuple[Any, Any]] = []

    def write(self, owner: Any, checkpoint: dict[str, Any], paths: list[Path]) -> None:
        import io

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # the state now: the work goes on while it is written
        data = buffer.getvalue()
        self.pending += [(owner, self.pool.submit(atomic_write, path, lambda handle: handle.write(data)))
                         for path in paths]

    def wait(self) -> list[tuple[Any, BaseException]]:
        failed: dict[int, tuple[Any, BaseException]] = {}  # by identity: an owner need not be hashable
        for owner, write in self.pending:
            if write.exception() is not None:
                failed.setdefault(id(owner), (owner, write.exception()))
        self.pending = []
        return list(failed.values())

    def close(self) -> None:
        self.pool.shutdown()
