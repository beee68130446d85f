"""What can go wrong, and how each failure is said: in one sentence, never a traceback.

The user's input or the run's numbers raise one of `EXPECTED_ERRORS`; a storage problem (a full disk,
a read-only folder) is found behind whatever error it caused. `describe_error` words them all.
"""

from __future__ import annotations

import errno
from pathlib import Path


class ConfigError(ValueError):
    """A config value is out of range or of the wrong type."""


class RunDirError(ValueError):
    """A path given as a run directory is not one, or cannot be resumed."""


class NonFiniteLossError(RuntimeError):
    """Training diverged: the loss is NaN or infinite."""


def diverged(epoch: int, loss: float) -> NonFiniteLossError:
    """What a run whose epoch's training loss is not finite says, whichever engine trained it."""
    return NonFiniteLossError(f"training diverged at epoch {epoch}: the loss is {loss}; "
                              "try a smaller learning rate (model.optimizer.lr)")


EXPECTED_ERRORS = (ConfigError, RunDirError, NonFiniteLossError)

STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "the file system is read-only",
                  errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                  errno.EDQUOT: "the disk quota is exceeded"}


def storage_problem(error: BaseException | None) -> OSError | None:
    """The OSError about storage (full, read-only, no permission) behind `error`, if that is what it is."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def describe_error(error: BaseException, run_dir: Path | None = None) -> str:
    """One sentence for any failure: the user's mistake as said, a storage problem as what, where, why
    (the run folder stands for the file when the error names none, as TensorBoard's does not)."""
    if isinstance(error, EXPECTED_ERRORS):
        return str(error)
    problem = storage_problem(error)
    if problem is not None:
        where = f" {problem.filename}" if problem.filename else f" in {run_dir}" if run_dir else ""
        return f"could not write{where}: {STORAGE_ERRNOS[problem.errno]}"
    return f"{type(error).__name__}: {error}"
