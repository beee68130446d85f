"""results.json: what one run measured. Plain JSON, written atomically; no torch needed to read it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

FILENAME = "results.json"


def write_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write through a temporary file and a rename, so a reader never sees half a file."""
    path = Path(run_dir) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(results, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for everyone who reads the run
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    with open(path) as handle:
        results = json.load(handle)
    if not isinstance(results, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return results
