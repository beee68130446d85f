"""Run directories: what makes a folder a seqrev run, and how to continue one after a crash.

`python -m seqrev.train resume=<run dir>` recomposes the run's own command-line overrides (saved by
Hydra in `.hydra/overrides.yaml`) into the same directory, so the resumed run has the same config,
the same TensorBoard run and its checkpoints in the same place.
"""

from __future__ import annotations

import sys
from pathlib import Path

from seqrev.errors import RunDirError
from seqrev.results import FILENAME, read_results

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def quote(value: str) -> str:
    """Quote a value for Hydra's override grammar (run names contain ',' and '=')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / LAST_CHECKPOINT


def check_checkpoint(path: Path) -> None:
    """RunDirError unless `path` loads as a Lightning training checkpoint."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same one sentence
        raise RunDirError(f"{path} is not a readable checkpoint ({type(error).__name__}); "
                          "it may be corrupt or truncated.") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "loops", "optimizer_states"} <= checkpoint.keys():
        raise RunDirError(f"{path} is not a Lightning training checkpoint (no model, loop or optimiser state).")


def resume_argv(run_dir_arg: str, other_args: list[str]) -> list[str]:
    """The command-line overrides that continue `run_dir_arg`, or RunDirError saying why it can't be."""
    import yaml  # comes with omegaconf

    run_dir = Path(run_dir_arg)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not run_dir.is_dir():
        raise RunDirError(f"resume={run_dir_arg!r}: there is no such directory.")
    if not overrides_file.is_file():
        raise RunDirError(f"resume={run_dir_arg!r} is not a seqrev run directory (it has no .hydra/overrides.yaml).")
    if (run_dir / FILENAME).is_file():
        try:
            status = read_results(run_dir / FILENAME).get("status")
        except (OSError, ValueError):
            status = None
        if status == "ok":
            raise RunDirError(f"resume={run_dir_arg!r}: that run already finished (results.json says status ok).")
    if not last_checkpoint(run_dir).is_file():
        raise RunDirError(f"resume={run_dir_arg!r}: there is no checkpoint to resume from "
                          f"({LAST_CHECKPOINT} is missing; the run stopped before its first epoch ended).")
    check_checkpoint(last_checkpoint(run_dir))
    original = [o for o in yaml.safe_load(overrides_file.read_text()) or [] if not o.startswith("resume=")]
    return original + other_args + [f"hydra.run.dir={quote(str(run_dir))}", f"resume={quote(str(run_dir))}"]


def rewrite_argv_for_resume(argv: list[str]) -> list[str]:
    """Expand `resume=<dir>` on a command line (before Hydra parses it); other lines pass unchanged."""
    resume = [a for a in argv[1:] if a.startswith("resume=")]
    if not resume or any(a in ("-m", "--multirun") for a in argv):
        return argv
    run_dir = resume[-1].split("=", 1)[1].strip("'\"")
    rest = [a for a in argv[1:] if not a.startswith("resume=")]
    return argv[:1] + resume_argv(run_dir, rest)


def refuse_existing_results(argv: list[str]) -> None:
    """A fresh run never writes into a directory that already holds a run's results."""
    for arg in argv[1:]:
        if arg.startswith("hydra.run.dir=") and not any(a.startswith("resume=") for a in argv[1:]):
            run_dir = Path(arg.split("=", 1)[1].strip("'\""))
            if (run_dir / FILENAME).exists():
                raise RunDirError(f"hydra.run.dir={str(run_dir)!r} already holds a run's results.json; choose "
                                  f"another directory, delete it yourself, or continue it with resume={run_dir}.")


def fail(message: str, status: int = 2) -> None:
    print(f"seqrev: {message}", file=sys.stderr)
    raise SystemExit(status)
