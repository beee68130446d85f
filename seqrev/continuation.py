"""A sweep run again continues where it stopped: finished jobs are skipped, killed ones resumed from
their last checkpoint, failed ones run again from scratch.

Each job records its own overrides in `job.json` when it starts (Hydra rewrites `.hydra/` at every
start), so a folder that holds another job than the sweep now wants there is refused, never reused.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from seqrev.atomic import atomic_write
from seqrev.errors import RunDirError
from seqrev.results import FILENAME, RunResults, read_results
from seqrev.rundir import check_checkpoint, last_checkpoint, run_status
from seqrev.runlock import LOCK_FILE

log = logging.getLogger("seqrev")
JOB_FILE = "job.json"


def continue_sweep_job(job_dir: Path, overrides: list[str],
                       packed: bool = False) -> tuple[RunResults | None, Path | None]:
    """(the stored results of a finished job, None), or (None, the folder to resume from) for a job killed
    mid-training, or (None, None) for a job to run from scratch. Says which in one line. `packed`: the
    caller is a pack, which also continues a pack's member."""
    action, epochs = continue_job(job_dir, overrides, packed)
    if action == "skip":
        log.info(f"skipped (finished): {job_dir}")
        return read_results(job_dir / FILENAME), None
    if action == "resume":
        log.info(f"resuming from epoch {epochs}: {job_dir}")
        return None, job_dir
    return None, None


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
