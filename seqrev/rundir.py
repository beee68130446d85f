"""Run directories: what makes a folder a seqrev run, and how to continue one after a crash.

`python -m seqrev.train resume=<run dir>` recomposes the run's own command-line overrides (saved by
Hydra in `.hydra/overrides.yaml`) into the same directory, so the resumed run has the same config,
the same TensorBoard run and its checkpoints in the same place.
"""

from __future__ import annotations

import logging
import pickle
import re
import shlex
from pathlib import Path
from typing import NamedTuple

import yaml  # comes with omegaconf

from seqrev.catalog import CONFIG_DIR
from seqrev.commandline import given, is_sweep, quote
from seqrev.errors import RunDirError
from seqrev.results import FILENAME, read_results

# Imports inside functions: torch loads only where a checkpoint is read: the report reads run folders without it.

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / LAST_CHECKPOINT


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint's contents, read without running code from the file (`weights_only=True`).

    RunDirError, in one sentence, for a file that is not a readable checkpoint, and for one that holds
    Python objects beyond plain data: unpickling those could run code, so they are never loaded.
    """
    import torch

    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "Unsupported class" in str(error):  # torch's weights-only refusal
            raise RunDirError(f"{path} was refused: it holds Python objects beyond plain data, and reading those "
                              "could run code from the file; seqrev only reads checkpoints it wrote.") from None
        raise RunDirError(f"{path} is not a readable checkpoint (UnpicklingError); "
                          "it may be corrupt or truncated.") from None
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same one sentence
        raise RunDirError(f"{path} is not a readable checkpoint ({type(error).__name__}); "
                          "it may be corrupt or truncated.") from None
    if not isinstance(checkpoint, dict):
        raise RunDirError(f"{path} is not a Lightning checkpoint (it holds a {type(checkpoint).__name__}).")
    for earlier, now in RENAMED_STATE.items():  # Lightning restores a data module's state by its class's name
        if earlier in checkpoint and now not in checkpoint:
            checkpoint[now] = checkpoint.pop(earlier)
    return checkpoint


RENAMED_STATE = {"ReversedSequenceData": "SequenceData"}
"""Checkpoint keys under an earlier name of the class whose state they hold: read under today's name."""


PACK_STATE = "seqrev_pack"
"""The key of a packed member's own training state in its checkpoints (seqrev.packs)."""


class SavedTraining(NamedTuple):
    """A training checkpoint, read once: where it is, how far its run got, and what it holds. The file's
    size and time of change when it was read tell whether it is still the same file (`unchanged`)."""

    path: Path
    epochs: int
    steps: int
    contents: dict
    stamp: tuple[int, int]

    @property
    def run_dir(self) -> Path:
        return self.path.parent.parent

    @property
    def packed(self) -> bool:
        """Whether a pack's member wrote it (which only a pack continues)."""
        return PACK_STATE in self.contents

    def unchanged(self) -> bool:
        return file_stamp(self.path) == self.stamp


def read_resume(run_dir: str | None) -> SavedTraining | None:
    """The last checkpoint of the run a config's `resume` names, read; None for a config that resumes nothing."""
    return read_training(last_checkpoint(Path(run_dir))) if run_dir else None


def file_stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def read_training(path: Path) -> SavedTraining:
    """A training checkpoint that can be continued (Lightning's, with its loops' state, or a pack's member's,
    with its own), read once; RunDirError, in one sentence, for any other file."""
    stamp = file_stamp(path)
    checkpoint = load_checkpoint(path)
    loop_state = "loops" if PACK_STATE not in checkpoint else PACK_STATE
    if not {"state_dict", loop_state, "optimizer_states", "epoch"} <= checkpoint.keys():
        raise RunDirError(f"{path} is not a Lightning training checkpoint (no model, loop or optimiser state).")
    epoch, step = checkpoint["epoch"], checkpoint.get("global_step", 0)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (epoch + 1, step)):
        raise RunDirError(f"{path} is not a Lightning training checkpoint (its epoch or global_step is not a count).")
    return SavedTraining(path, epoch + 1, step, checkpoint, stamp)


def run_status(run_dir: Path) -> str | None:
    """The `status` a run folder's results.json records (ok, failed, interrupted); None without one, and
    (said in one line) without one that reads as results: the run is then taken as unfinished."""
    path = run_dir / FILENAME
    if not path.is_file():
        return None
    try:
        return read_results(path).get("status")
    except (OSError, ValueError) as error:
        reason = str(error) if str(path) in str(error) else f"{path}: {error}"
        logging.getLogger("seqrev").warning(f"not read as results, so the run counts as unfinished: {reason}")
        return None


def resume_argv(run_dir_arg: str, other_args: list[str]) -> tuple[list[str], SavedTraining]:
    """The command-line overrides that continue `run_dir_arg` and the checkpoint it continues from, or
    RunDirError saying why it can't be."""
    run_dir = Path(run_dir_arg)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not run_dir.is_dir():
        raise RunDirError(f"resume={run_dir_arg!r}: there is no such directory.")
    if not overrides_file.is_file():
        raise RunDirError(f"resume={run_dir_arg!r} is not a seqrev run directory (it has no .hydra/overrides.yaml).")
    original = [str(o) for o in yaml.safe_load(overrides_file.read_text()) or [] if not str(o).startswith("resume=")]
    if run_status(run_dir) == "ok":
        check_longer(run_dir_arg, read_results(run_dir / FILENAME), original, other_args)
    if not last_checkpoint(run_dir).is_file():
        raise RunDirError(f"resume={run_dir_arg!r}: there is no checkpoint to resume from "
                          f"({LAST_CHECKPOINT} is missing; the run stopped before its first epoch ended).")
    saved = read_training(last_checkpoint(run_dir))
    check_budget(run_dir_arg, saved.epochs, saved.steps, other_args)
    refuse_instantiation(run_dir_arg, original, other_args)
    original = [o for o in original if o not in other_args]  # what the command line repeats, it says once
    return original + other_args + [f"hydra.run.dir={quote(str(run_dir))}", f"resume={quote(str(run_dir))}"], saved


def check_longer(run_dir_arg: str, results: dict, original: list[str], other_args: list[str]) -> None:
    """A finished run is continued only to train it longer: RunDirError, saying why and what to type
    instead, unless it ended by using its whole budget (epochs, or steps) and the command line raises it."""
    config = results.get("config") or {}
    epochs, patience = results.get("epochs_run", 0), (config.get("early_stopping") or {}).get("patience")
    if results.get("stopped_early"):
        raise RunDirError(f"resume={run_dir_arg!r}: that run finished: early stopping ended it after epoch {epochs}, "
                          "so more epochs would stop it again at once; for a longer run, start a new one with more "
                          f"patience: python -m seqrev.train {shlex.join(original)} "
                          f"callbacks.early_stopping.patience={2 * (patience or 5)}")
    trainer = config.get("trainer") or {}
    if (trainer.get("max_steps") or -1) > 0 and epochs < (trainer.get("max_epochs") or epochs):
        key, used = "max_steps", trainer["max_steps"]  # it ended at its budget of steps
    else:
        key, used = "max_epochs", epochs
    asked = given(other_args, f"trainer.{key}")
    if not asked or not asked[-1].isdigit() or int(asked[-1]) <= used:
        raise RunDirError(f"resume={run_dir_arg!r}: that run finished when it reached trainer.{key}={used}; to "
                          f"train it longer, raise it: python -m seqrev.train resume={run_dir_arg} "
                          f"trainer.{key}={2 * used}")


def check_budget(run_dir_arg: str, epochs: int, steps: int, other_args: list[str]) -> None:
    """RunDirError when the command line gives a run it continues fewer epochs or steps than it has trained."""
    for key, done in (("max_epochs", epochs), ("max_steps", steps)):
        asked = given(other_args, f"trainer.{key}")
        if asked and asked[-1].lstrip("-").isdigit() and 0 < int(asked[-1]) < done:
            unit = key.removeprefix("max_")
            raise RunDirError(f"resume={run_dir_arg!r} trainer.{key}={asked[-1]}: that run has already trained {done} "
                              f"{unit}; give at least {done}, or leave trainer.{key} as the run had it.")


def seqrev_targets() -> set[str]:
    """Every class or function seqrev's own configs (`conf/`) name with `_target_`."""
    return {match for path in CONFIG_DIR.rglob("*.yaml")
            for match in re.findall(r"_target_:\s*([\w.]+)", path.read_text())}


def refuse_instantiation(run_dir_arg: str, folder_overrides: list[str], command_line: list[str]) -> None:
    """RunDirError for the first override a run folder names that would have something instantiated (a
    `_target_`, a task's dotted path, or a setting of Hydra's own, such as its search path or callbacks,
    which Hydra never writes there) unless the command line repeats it or it names what seqrev's own configs name.
    A folder is data: what it says is run only when the user says so too."""
    known = seqrev_targets()
    for override in folder_overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        instantiates = "_target_" in override or key.startswith(("hydra.", "hydra/")) or (
            key == "data.task" and "." in value)  # a task of one's own: its module would be imported
        if not instantiates or override in command_line:
            continue
        if key.endswith("._target_") and value.strip("'\"") in known:
            continue
        raise RunDirError(
            f"resume={run_dir_arg!r} was refused: its .hydra/overrides.yaml names {override!r}, which would have "
            "code instantiated on the folder's say-so; if you trust it, repeat it on the command line: "
            f"python -m seqrev.train resume={run_dir_arg} {quote(override)}")


def rewrite_argv_for_resume(argv: list[str]) -> tuple[list[str], SavedTraining | None]:
    """Expand `resume=<dir>` on a command line (before Hydra parses it), with the checkpoint it continues
    from; other lines pass unchanged, with None."""
    resume = given(argv, "resume")
    if not resume or is_sweep(argv):
        return argv, None
    run_dir = resume[-1]
    rest = [a for a in argv[1:] if not a.startswith("resume=")]
    overrides, saved = resume_argv(run_dir, rest)
    return argv[:1] + overrides, saved


def refuse_existing_results(argv: list[str]) -> None:
    """A fresh run never writes into a directory that already holds a run's results."""
    if given(argv, "resume"):
        return
    for run_dir in map(Path, given(argv, "hydra.run.dir")):
        if (run_dir / FILENAME).exists():
            raise RunDirError(f"hydra.run.dir={str(run_dir)!r} already holds a run's results.json; choose "
                              f"another directory, delete it yourself, or continue it with resume={run_dir}.")
