"""What a sweep's folder holds beside its job folders (in `.seqrev/`): a record of each job of this start
that did not train (skipped, refused, busy, or failed before it could start) with its reason, and the
number of jobs planned so far (a sweeper that adds rounds raises it). Jobs write it wherever they run
(other processes, Slurm nodes); the launching process reads it for the progress line and the summary.
Each start of a sweep keeps its records apart (`SEQREV_SWEEP_START`, which its jobs inherit), so that the
same sweep started twice at once counts, in each, only what its own jobs did. Plain JSON, no torch.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypedDict

from seqrev.atomic import atomic_write

RECORD_DIR = ".seqrev"
START_VARIABLE = "SEQREV_SWEEP_START"
"""The environment variable naming this start of a sweep: set by the launching process, inherited by its
jobs' processes (Hydra's launchers and Slurm pass the environment on)."""
NotRun = Literal["skipped", "refused", "busy", "failed"]
NOT_RUN: tuple[NotRun, ...] = ("skipped", "refused", "busy", "failed")


class Outcome(TypedDict):
    """A job that did not train in this start of the sweep: `status` and, but for skipped, why."""

    job: str
    status: NotRun
    reason: str


@contextmanager
def new_start() -> Iterator[str]:
    """A new start of a sweep, named in this process and the jobs it launches for as long as it lasts."""
    before = os.environ.get(START_VARIABLE)
    os.environ[START_VARIABLE] = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
    try:
        yield os.environ[START_VARIABLE]
    finally:
        if before is None:
            os.environ.pop(START_VARIABLE, None)
        else:
            os.environ[START_VARIABLE] = before


def _outcomes_dir(sweep_dir: Path) -> Path:
    start = os.environ.get(START_VARIABLE, "").replace("/", "_")
    return Path(sweep_dir) / RECORD_DIR / "jobs" / start if start else Path(sweep_dir) / RECORD_DIR / "jobs"


def job_name(sweep_dir: Path, job_dir: Path) -> str:
    """A job's name: its folder's path within the sweep's folder."""
    return Path(os.path.relpath(Path(job_dir).absolute(), Path(sweep_dir).absolute())).as_posix()


def record_outcome(sweep_dir: Path, job_dir: Path, status: NotRun, reason: str = "") -> None:
    """Record that a job did not train in this start (written atomically; its folder is left alone)."""
    name = job_name(sweep_dir, job_dir)
    outcome = Outcome(job=name, status=status, reason=reason)
    path = _outcomes_dir(sweep_dir) / (name.replace("/", "%2F") + ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: handle.write(json.dumps(outcome).encode()))


def record_trained(sweep_dir: Path, job_dir: Path) -> None:
    """Record that this start of the sweep trains a job (so that its results are counted as this start's)."""
    path = _outcomes_dir(sweep_dir) / (job_name(sweep_dir, job_dir).replace("/", "%2F") + ".trains")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def read_trained(sweep_dir: Path) -> set[str] | None:
    """The jobs this start of the sweep trains; None when no start is named (then any results written since
    it began count as its own)."""
    if not os.environ.get(START_VARIABLE):
        return None
    folder = _outcomes_dir(sweep_dir)
    return {p.name.removesuffix(".trains").replace("%2F", "/") for p in folder.glob("*.trains")} if (
        folder.is_dir()) else set()


def read_outcomes(sweep_dir: Path, since: float) -> dict[str, Outcome]:
    """The outcomes recorded at or after `since` (a time.time()), by job name; a file that is not one (being
    written, or not seqrev's) is left out."""
    outcomes: dict[str, Outcome] = {}
    folder = _outcomes_dir(sweep_dir)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            if path.stat().st_mtime < since:
                continue
            outcome = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(outcome, dict) and isinstance(outcome.get("job"), str) and outcome.get("status") in NOT_RUN
                and isinstance(outcome.get("reason", ""), str)):
            outcomes[outcome["job"]] = Outcome(job=outcome["job"], status=outcome["status"],
                                               reason=outcome.get("reason", ""))
    return outcomes


def write_planned(sweep_dir: Path, total: int, note: str = "") -> None:
    """The number of jobs the sweep has planned so far, and a few words on why it grew (`note`)."""
    path = Path(sweep_dir) / RECORD_DIR / "planned.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: handle.write(json.dumps({"total": total, "note": note}).encode()))


def read_planned(sweep_dir: Path, since: float) -> tuple[int, str] | None:
    """The planned total and its note, when written at or after `since`."""
    path = Path(sweep_dir) / RECORD_DIR / "planned.json"
    try:
        if path.stat().st_mtime < since:
            return None
        planned = json.loads(path.read_text())
        total = planned["total"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        return None
    return total, str(planned.get("note", ""))


def write_settle(sweep_dir: Path, looks: int, delta: float, summary: str = "") -> None:
    """A settle sweep's promise, for its report: how many looks its error rate is split over, and its delta;
    at its end, its summary line."""
    path = Path(sweep_dir) / RECORD_DIR / "settle.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"looks": looks, "delta": delta, "summary": summary}
    atomic_write(path, lambda handle: handle.write(json.dumps(record).encode()))


def read_settle(sweep_dir: Path) -> tuple[dict[str, float | int], str | None]:
    """The settle sweep's looks and delta recorded in `sweep_dir` ({} for another folder), and a warning
    naming the file and the field when it holds something else (the report then uses its defaults)."""
    path = Path(sweep_dir) / RECORD_DIR / "settle.json"
    if not path.is_file():
        return {}, None
    try:
        settle = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return {}, f"{path} is not readable ({error}); the report counts one look"
    looks, delta = (settle.get("looks"), settle.get("delta")) if isinstance(settle, dict) else (None, None)
    if isinstance(looks, bool) or not isinstance(looks, int) or looks < 1:
        return {}, f"{path}: the field 'looks' is not a whole number of at least 1; the report counts one look"
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not delta > 0:
        return {}, f"{path}: the field 'delta' is not a number above 0; the report uses its own"
    summary = settle.get("summary")
    return {"looks": looks, "delta": float(delta), "summary": summary if isinstance(summary, str) else ""}, None
