"""Use what you trained: a model back from a run folder or a checkpoint, with no config at hand.

Checkpoints are read with `weights_only=True` (seqrev.rundir.load_checkpoint): a file from elsewhere
never runs code. The wiring is found by the name in the checkpoint among the wirings registered in
this process (`seqrev.models.WIRINGS`: seqrev's own, and any of yours you have imported), never
imported on the file's say-so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqrev.errors import RunDirError
from seqrev.rundir import load_checkpoint

# Imports inside functions: the models (torch) load when a checkpoint is read, not when seqrev is imported.

CHECKPOINTS = ("best", "last")


def checkpoint_path(run: str | Path, checkpoint: str = "best") -> Path:
    """The checkpoint file a run folder (or a sweep's job folder) or a `.ckpt` path stands for."""
    path = Path(run)
    if path.is_file():
        return path
    if not path.exists():
        raise RunDirError(f"{run} is neither a run folder nor a checkpoint: there is no such file or folder.")
    if checkpoint not in CHECKPOINTS:
        raise RunDirError(f"--checkpoint {checkpoint!r} is not allowed: choose one of {', '.join(CHECKPOINTS)}.")
    found = path / "checkpoints" / f"{checkpoint}.ckpt"
    if not found.is_file():
        if not (path / ".hydra").is_dir() and not (path / "checkpoints").is_dir():
            raise RunDirError(f"{run} is not a seqrev run folder (it has no checkpoints/ and no .hydra/).")
        raise RunDirError(f"{run} has no {checkpoint}.ckpt (the run stopped before its first epoch ended, or its "
                          "checkpoints were removed).")
    return found


def read(run: str | Path, checkpoint: str = "best", map_location: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, what the checkpoint says about its data: task, min_timesteps) for a run or .ckpt."""
    path = checkpoint_path(run, checkpoint)
    contents = load_checkpoint(path, map_location=map_location)
    hparams = contents.get("hyper_parameters")
    name = contents.get("seqrev_wiring")
    if not isinstance(hparams, dict) or not isinstance(name, str):
        raise RunDirError(f"{path} does not record which model it holds and how it was built: it was written by an "
                          "older seqrev (or is not seqrev's); train it again with this version.")
    from seqrev.models import WIRINGS

    wiring = WIRINGS.get(name)
    if wiring is None:
        raise RunDirError(f"{path} holds a {name!r} model, a wiring not imported here: import the module that "
                          "defines it first (python -m seqrev.predict --import MODULE ...).")
    model = wiring(**hparams)
    model.load_state_dict(contents["state_dict"])
    data = {key: value for key, value in (contents.get("SequenceData") or {}).items()
            if key in ("task", "min_timesteps")}
    return model.to(map_location if isinstance(map_location, str) else "cpu").eval(), data


def load(run: str | Path, checkpoint: str = "best", map_location: Any = "cpu"):
    """The trained model of a run folder (its `best.ckpt`, or `checkpoint="last"`) or of a `.ckpt` file,
    in eval mode on the CPU (or `map_location`). Finds the right wiring itself."""
    return read(run, checkpoint, map_location)[0]
