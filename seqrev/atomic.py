"""Files replaced atomically: a temporary file beside the destination, fsynced, renamed over it.

A reader (or a crash) then sees either the previous complete file or the new complete one, never
half of one. Plain Python, no torch: the report's side uses it too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(binary file)` on a temporary file beside `path`, fsync it, rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OSError(error.errno, os.strerror(error.errno), str(path)) from error
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a run's files are for whoever reads the run
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(error)
        if cause is not None and cause.errno is not None:  # say which file could not be written, not its temporary
            raise OSError(cause.errno, os.strerror(cause.errno), str(path)) from error
        raise
    try:  # the rename itself survives a power cut only once the folder is synced
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass  # some filesystems cannot fsync a folder; the file itself is complete either way
    finally:
        os.close(directory)


def _os_error(error: BaseException | None) -> OSError | None:
    """The OSError behind `error` (torch.save wraps a failed write in a RuntimeError)."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error
