"""Checkpoints that replace each other atomically, in their own folder.

Lightning's default writes a checkpoint to a temporary file in the *system* temp folder and moves it
into place; when the run folder is on another filesystem (node-local /tmp, shared output storage)
the move is a copy onto the destination, and a crash or a full disk during that copy destroys the
previous good checkpoint and leaves half of the new one. Here the temporary file sits beside the
destination, is flushed and fsynced, and is renamed over it: at every instant the folder holds
either the previous complete checkpoint or the new complete one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
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
