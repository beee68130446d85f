"""A job's lifecycle, the same whichever engine trains it (seqrev.engines): its folder's lock, what it
does with what the folder already holds, the record of a failure or an interrupt, and the metric a
sweeper reads. `seqrev.train.job` (every run and ordinary sweep job) and a pack's launcher (each of
its members, seqrev.packs.launcher) go through these functions and nothing else.

A sweep run again continues where it stopped: finished jobs are skipped, killed ones resumed from their
last checkpoint, failed ones run again from scratch. Each job records its own overrides in `job.json`
when it starts (Hydra rewrites `.hydra/` at every start), so a folder that holds another job than the
sweep now wants there is refused, never reused.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import traceback
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from seqrev.atomic import atomic_write
from seqrev.errors import EXPECTED_ERRORS, RunDirError, describe_error, storage_problem
from seqrev.results import FILENAME, RunIdentity, RunResults, describe, read_results, write_results
from seqrev.rundir import check_checkpoint, last_checkpoint, run_status
from seqrev.runlock import LOCK_FILE

JOB_FILE = "job.json"

log = logging.getLogger("seqrev")


@dataclass
class Claim:
    """What a job does with its folder: run, resume (from `resume_from`), skip (finished: its `results`),
    or nothing (refused: another process holds it, it holds another job, or it cannot be written)."""

    action: Literal["run", "resume", "skip", "refused"]
    results: RunResults | None = None
    resume_from: Path | None = None


def claim(held: ExitStack, run_dir: Path, overrides: list[str] | None, packed: bool = False) -> Claim:
    """Take `run_dir`'s lock (seqrev.runlock) for as long as `held` lasts, then decide, in one line. A sweep's
    job (its `overrides` given) continues what its folder holds (`packed`: as a pack's member) and a refusal
    is said in one line; a single run only takes the lock, and a refusal raises."""
    from seqrev.runlock import FolderBusy, run_folder_lock

    try:
        held.enter_context(run_folder_lock(run_dir))
        if overrides is None:
            return Claim("run")
        action, epochs = continue_job(run_dir, overrides, packed)
    except (RunDirError, OSError) as refused:  # OSError: the folder cannot be written (a full disk)
        if overrides is None:
            raise
        if isinstance(refused, FolderBusy):
            log.warning(str(refused))
        else:
            log.error(f"job {'refused' if isinstance(refused, RunDirError) else 'failed'}: "
                      f"{describe_error(refused, run_dir)}")
        return Claim("refused")
    if action == "skip":
        log.info(f"skipped (finished): {run_dir}")
        return Claim("skip", results=read_results(run_dir / FILENAME))
    if action == "resume":
        log.info(f"resuming from epoch {epochs}: {run_dir}")
        return Claim("resume", resume_from=run_dir)
    return Claim("run")


def continue_job(job_dir: Path, overrides: list[str], packed: bool = False) -> tuple[str, int]:
    """What a sweep job does with its folder: ("skip", 0) when it finished, ("resume", epochs done) when
    it was killed or interrupted after a checkpoint, ("run", 0) otherwise (a failed job's files cleared).

    RunDirError when the folder holds a job with other overrides (the sweep's parameters changed).
    """
    job_file = job_dir / JOB_FILE
    if job_file.is_file():
        saved = json.loads(job_file.read_text()).get("overrides")
        if saved != overrides:
            changed = sorted(set(saved or []) ^ set(overrides))
            raise RunDirError(f"{job_dir} holds a job with other settings than this sweep's job there "
                              f"(differing: {', '.join(changed)}); use another hydra.sweep.dir, or delete that folder.")
    status = run_status(job_dir)
    if status == "ok":
        return "skip", 0
    if status != "failed" and last_checkpoint(job_dir).is_file():
        try:
            return "resume", check_checkpoint(last_checkpoint(job_dir), packed)
        except RunDirError as cannot:  # killed before a complete checkpoint existed, or a pack's: start again
            log.info(f"starting again: {cannot}")
    clear_run(job_dir)
    atomic_write(job_file, lambda handle: handle.write(json.dumps({"overrides": overrides}).encode()))
    return "run", 0


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


def say_failed(message: str, run_dir: Path) -> None:
    """The console's line for a sweep's job that failed (the sweep goes on; its folder says what went wrong)."""
    log.error(f"job failed: {message} ({run_dir.name})")


def record_interrupt(run_dir: Path, about: RunIdentity, epochs_run: int) -> None:
    """results.json for a job stopped by Ctrl-C: its last checkpoint is where it continues from."""
    write_results(run_dir, {**about, "status": "interrupted", "epochs_run": epochs_run,
                            "error": "interrupted by the user (SIGINT)", "run_dir": str(run_dir)})


def metric(cfg: DictConfig, results: dict[str, Any] | None) -> float:
    """What a sweeper reads of a job: its results' `optimized_metric`, NaN for a job with no results."""
    value = (results or {}).get(cfg.optimized_metric)
    return float(value) if isinstance(value, (int, float)) else math.nan
