"""A job's lifecycle, whichever engine trains it: its folder's lock, what it does with what the folder
holds, the record of a failure or an interrupt, the metric a sweeper reads. `seqrev.train.job` (runs and
ordinary sweep jobs) and the packed launcher (each member) go through these functions alone.

A sweep run again continues: finished jobs skipped, killed ones resumed, failed ones run again. Each job
records its overrides in `job.json` (Hydra rewrites `.hydra/` at every start), so a folder that holds
another job than the sweep wants there is refused, never reused.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal, NamedTuple

from omegaconf import DictConfig, OmegaConf

from seqrev.atomic import atomic_write
from seqrev.errors import EXPECTED_ERRORS, RunDirError, describe_error, storage_problem
from seqrev.results import FILENAME, RunIdentity, RunResults, describe, read_results, write_results
from seqrev.rundir import SavedTraining, last_checkpoint, read_training, run_status
from seqrev.runlock import LOCK_FILE, FolderBusy, HeldFolder, run_folder_lock
from seqrev.sweepfolder import record_outcome, record_trained

JOB_FILE = "job.json"

log = logging.getLogger("seqrev")


class Claim(NamedTuple):
    """What a job does with its folder: run, resume (from `saved`, read once), skip (finished: its `results`),
    or nothing: refused (it holds another job), busy (another live process holds it) or failed (it cannot
    be written)."""

    action: Literal["run", "resume", "skip", "refused", "busy", "failed"]
    results: RunResults | None = None
    saved: SavedTraining | None = None

    @property
    def trains(self) -> bool:
        return self.action in ("run", "resume")


def claim(held: ExitStack, run_dir: Path, overrides: list[str] | None = None, sweep_dir: Path | None = None,
          taken: HeldFolder | None = None) -> Claim:
    """Take `run_dir`'s lock (seqrev.runlock) for as long as `held` lasts (unless the caller holds it: `taken`), then
    decide. A single run (no `overrides`) only takes the lock, and a refusal raises. A sweep's job is skipped
    when it finished, resumed when it was killed or interrupted after a checkpoint, else run from scratch (a
    failed job's files cleared); each said in one line, and so is a job that does not train: another process
    holds the folder (busy), it holds a job of other overrides (refused), it cannot be written (failed). A job
    that does not train is recorded in the sweep's folder (seqrev.sweepfolder), so that the launching process
    counts it and names it."""
    job_file = run_dir / JOB_FILE
    try:
        if taken is None or taken.folder != run_dir.absolute():
            taken = held.enter_context(run_folder_lock(run_dir))
        if taken.took_over:
            log.info(taken.took_over)
        if overrides is None:
            return Claim("run")
        saved = read_job_overrides(job_file) if job_file.is_file() else overrides
        if saved != overrides:
            raise RunDirError(f"{run_dir} holds a job with other settings than this sweep's job there (differing: "
                              f"{', '.join(sorted(set(saved or []) ^ set(overrides)))}); use another "
                              "hydra.sweep.dir, or delete that folder.")
        status = run_status(run_dir)
        if status == "ok":
            log.info(f"skipped (finished): {run_dir}")
            _record(sweep_dir, run_dir, "skipped")
            return Claim("skip", results=read_results(run_dir / FILENAME))
        if status != "failed" and last_checkpoint(run_dir).is_file():
            try:
                saved = read_training(last_checkpoint(run_dir))
                log.info(f"resuming from epoch {saved.epochs}: {run_dir}")
                _trains(sweep_dir, run_dir)
                return Claim("resume", saved=saved)
            except RunDirError as cannot:  # killed before a complete checkpoint existed: start again
                log.info(f"starting again: {cannot}")
        clear_run(run_dir)
        atomic_write(job_file, lambda handle: handle.write(json.dumps({"overrides": overrides}).encode()))
        _trains(sweep_dir, run_dir)
        return Claim("run")
    except (RunDirError, OSError) as refused:  # OSError: the folder cannot be written (a full disk)
        if overrides is None:
            raise
        reason = describe_error(refused, run_dir)
        if isinstance(refused, FolderBusy):
            log.warning(f"job busy: {reason}")
            action = "busy"
        elif isinstance(refused, RunDirError):
            log.error(f"job refused: {reason}")
            action = "refused"
        else:
            log.error(f"job failed: {reason}")
            action = "failed"
        _record(sweep_dir, run_dir, action, reason)
        return Claim(action)


def _trains(sweep_dir: Path | None, run_dir: Path) -> None:
    if sweep_dir is not None:
        record_trained(sweep_dir, run_dir)


def _record(sweep_dir: Path | None, run_dir: Path, status: str, reason: str = "") -> None:
    if sweep_dir is None:
        return
    try:
        record_outcome(sweep_dir, run_dir, status, reason)
    except OSError as error:  # the sweep's folder cannot be written either: said on the console, whatever it shows
        print(f"job {status}: {reason} ({run_dir.name}); the sweep's folder could not record it either "
              f"({describe_error(error, sweep_dir)})", file=sys.stderr)


def read_job_overrides(job_file: Path) -> list[str]:
    """The overrides a job folder's job.json records; RunDirError, naming the file, when it holds no list of them."""
    try:
        overrides = json.loads(job_file.read_text()).get("overrides")
    except (ValueError, AttributeError):
        overrides = None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise RunDirError(f"{job_file} is not a job record seqrev wrote (its field 'overrides' is not a list of "
                          "strings); use another hydra.sweep.dir, or delete that folder.")
    return overrides


def folders_by_job(sweep_dir: Path) -> dict[tuple[str, ...], Path]:
    """Each job folder of the sweep, by the overrides its job.json records."""
    found = {}
    for job_file in sweep_dir.glob(f"*/{JOB_FILE}"):
        try:
            found[tuple(read_job_overrides(job_file))] = job_file.parent
        except RunDirError as error:  # said once here; the job itself refuses the folder
            log.warning(str(error))
    return found


def clear_run(run_dir: Path) -> None:
    """Remove what a previous start of a run wrote, keeping Hydra's own `.hydra/`, the log and the lock."""
    for path in run_dir.iterdir() if run_dir.is_dir() else ():
        if path.name in (".hydra", "train.log", LOCK_FILE) or path.name.startswith("train_ddp_process_"):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def record_failure(cfg: DictConfig, error: BaseException, model_name: str | None) -> str:
    """results.json with `status: failed`, the cause and (for an unexpected error) its traceback; the one
    sentence that says what went wrong (and, when results.json could not be written, why not)."""
    run_dir = Path(OmegaConf.select(cfg, "paths.output_dir", default="."))
    message = describe_error(error, run_dir)
    results = {**describe(cfg, model_name), "status": "failed", "error": message,
               "error_type": type(error).__name__, "run_dir": str(run_dir)}
    if not isinstance(error, EXPECTED_ERRORS) and storage_problem(error) is None:
        results["traceback"] = traceback.format_exc()
    try:
        write_results(run_dir, results)
    except OSError as second:
        return f"{message}; results.json could not be written either ({second.strerror or second})"
    return message


def say_failed(message: str, run_dir: Path, sweep_dir: Path) -> None:
    """The log's line for a sweep's job that failed (the sweep goes on; its folder says what went wrong);
    when its results.json could not be written, the sweep's folder records the failure instead."""
    log.error(f"job failed: {message} ({run_dir.name})")
    if run_status(run_dir) != "failed":
        _record(sweep_dir, run_dir, "failed", message)


def job_failed(cfg: DictConfig, error: BaseException, model_name: str | None, sweep_dir: Path | None) -> str:
    """The rule for a job that failed, whichever engine trained it: its results.json says why; in a sweep
    (`sweep_dir`), which goes on, its log says so too, and the sweep's folder records it when results.json
    could not be written. The one sentence, for a single run's caller to say."""
    message = record_failure(cfg, error, model_name)
    if sweep_dir is not None:
        say_failed(message, Path(OmegaConf.select(cfg, "paths.output_dir", default=".")), sweep_dir)
    return message


def job_interrupted(run_dir: Path, about: RunIdentity, epochs_run: int,
                    say: Callable[[str], None] = log.info) -> None:
    """The rule for a job stopped by Ctrl-C, whichever engine trained it: its results.json says so, and its
    log how to continue it from its last checkpoint."""
    write_results(run_dir, {**about, "status": "interrupted", "epochs_run": epochs_run,
                            "error": "interrupted by the user (SIGINT)", "run_dir": str(run_dir)})
    say(f"interrupted: the last checkpoint is {last_checkpoint(run_dir)}; "
        f"continue with: python -m seqrev.train resume={run_dir}")


def metric(cfg: DictConfig, results: dict[str, Any] | None) -> float:
    """What a sweeper reads of a job: its results' `optimized_metric`, NaN for a job with no results."""
    value = (results or {}).get(cfg.optimized_metric)
    return float(value) if isinstance(value, (int, float)) else math.nan
