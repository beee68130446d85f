"""A sweep's progress line, printed by the process that launched it, whichever launcher runs the jobs.

A Hydra callback (conf/hydra/default.yaml): when a sweep starts, a thread reads the job folders every
second, as they are on disk (`results.json`, the folder's lock, what jobs that did not train recorded),
so jobs on other nodes (Slurm) count alike and no training step does any work for it. A line for each
job as it ends (how it ended, and how many have), and the progress line at least every 30 s: on a
terminal updated in place, in a log or a pipe plain lines. At the end, the sweep's report is written
and a summary line says where.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from seqrev.errors import RunDirError
from seqrev.results import FILENAME, read_results
from seqrev.runlock import LOCK_FILE

# Imports inside functions: the report's modules load once, when the sweep has ended.

EVERY_SECONDS = 30.0  # at least this often a line, with nothing ended


def sweep_size(config: DictConfig) -> int | None:
    """How many jobs a sweep launches: the product of its swept values (Hydra's basic sweeper, command line
    and `hydra.sweeper.params`), or an optimising sweeper's `n_trials`; None when it cannot be told."""
    sweeper = config.hydra.sweeper
    if OmegaConf.select(sweeper, "n_trials") is not None:
        return int(sweeper.n_trials)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(sweeper, "params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
        last = {o.key_or_group: o for o in overrides}  # the command line's value of a key wins
        return math.prod(len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in last.values())
    except Exception:  # noqa: BLE001 - glob() and friends: counted as they finish, without a total
        return None


@dataclass
class Tally:
    """The sweep's jobs as their folders show them: trained (done, failed), not trained (skipped: finished
    before; refused, busy: see seqrev.lifecycle.claim), running; and why each job that did not run didn't."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    refused: int = 0
    busy: int = 0
    unfinished: int = 0  # began, then ended with nothing recorded (counted once the sweep has ended)
    running: int = 0
    durations: list[float] = field(default_factory=list)  # of the jobs that ended in this sweep
    not_run: dict[str, str] = field(default_factory=dict)  # refused, busy or unfinished job -> "refused: why"
    endings: dict[str, str] = field(default_factory=dict)  # each job that ended -> how (job_line)
    unreadable: dict[str, str] = field(default_factory=dict)  # results.json that are not results -> why

    @property
    def ended(self) -> int:
        return self.done + self.failed + self.skipped + self.refused + self.busy + self.unfinished


def read_folders(sweep_dir: Path, started: float, first_seen: dict[str, float], final: bool = False) -> Tally:
    """Count this start's jobs: what its jobs recorded of not training (seqrev.sweepfolder: skipped, refused,
    busy, failed), else ended (ok or failed, results.json written since `started`), else running (locked).
    A folder whose results.json cannot be read as results is not counted until it can. `first_seen`: when
    each job was first seen running. Once the sweep has ended (`final`), a job that began in this start and
    left neither results nor a record (nor, with its lock left behind, ended) is counted as unfinished."""
    from seqrev.sweepfolder import read_outcomes, read_trained

    tally, now = Tally(), time.time()
    outcomes, trained = read_outcomes(sweep_dir, started), read_trained(sweep_dir)
    for outcome in outcomes.values():
        status = outcome["status"]
        setattr(tally, status, getattr(tally, status) + 1)
        if status in ("refused", "busy"):
            tally.not_run[outcome["job"]] = f"{status}: {outcome['reason']}"
        tally.endings[outcome["job"]] = "skipped (finished)" if status == "skipped" else (
            f"{status}: {outcome['reason']}")
    for folder in (p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name in outcomes:
            continue
        # another start's job (the same sweep started twice at once) is not this start's to count
        mine = trained is None or folder.name in trained
        results_file = folder / FILENAME
        try:
            ended_at = results_file.stat().st_mtime if mine and results_file.is_file() else None
            results = read_results(results_file) if ended_at is not None and ended_at >= started else {}
        except (OSError, ValueError) as error:  # written by another tool: not counted, and said once
            ended_at, results = None, {}
            tally.unreadable[str(results_file)] = str(error)
        status = results.get("status")
        if status in ("ok", "failed"):
            tally.done += status == "ok"
            tally.failed += status == "failed"
            tally.endings[folder.name] = job_ending(results)
            seen = first_seen.get(folder.name)  # a job too short to be seen running: its own fit time
            tally.durations.append(ended_at - seen if seen is not None else float(results.get("fit_seconds") or 0))
        elif (folder / LOCK_FILE).exists() and not (final and trained is not None and mine):
            if mine:
                tally.running += 1
                first_seen.setdefault(folder.name, now)
        elif final and _started_since(folder, started):  # began in this start, ended without a word
            tally.unfinished += 1
            tally.not_run[folder.name] = "ended without results: see its train.log"
            tally.endings[folder.name] = "ended without results (see its train.log)"
    return tally


def _started_since(folder: Path, started: float) -> bool:
    """Whether a job began in its folder since `started`: Hydra writes its `.hydra/` at every start."""
    try:
        return (folder / ".hydra" / "config.yaml").stat().st_mtime >= started
    except OSError:
        return False


def job_ending(results: dict[str, Any]) -> str:
    """How a job that trained ended, in a few words: its scores, epochs and time, or why it failed."""
    if results.get("status") != "ok":
        return f"failed: {results.get('error', 'no error recorded')}"
    return (f"done, test acc {100 * results['test_acc']:.2f}%, seq acc {100 * results['test_seq_acc']:.2f}%, "
            f"{results['epochs_run']} epochs" + (f", {results['fit_seconds']:.1f} s" if results.get("fit_seconds")
                                                 is not None else ""))


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def counts(tally: Tally) -> str:
    """'10 done, 1 failed, 1 skipped' and, when there are any, the refused, busy and unfinished jobs."""
    return ", ".join([f"{tally.done} done", f"{tally.failed} failed", f"{tally.skipped} skipped"]
                     + [f"{n} {word}" for word, n in (("refused", tally.refused), ("busy", tally.busy),
                                                    ("unfinished", tally.unfinished)) if n])


def progress_line(tally: Tally, total: int | None, elapsed: float, workers: int, note: str = "") -> str:
    """'sweep: 12/60 ended (10 done, 1 failed, 1 skipped), 2 running; 2m05s elapsed, about 6m10s left';
    a total that grows with rounds says so: 'sweep: 12/60 so far (round 1 of at most 5) ended (...'."""
    of = (f"/{total}" if total else "") + (f" so far ({note})" if note else "")
    line = f"sweep: {tally.ended}{of} ended ({counts(tally)}), {tally.running} running; {clock(elapsed)} elapsed"
    if total and tally.durations and tally.ended < total:
        per_job = sum(tally.durations) / len(tally.durations)  # the finished jobs' own times
        line += f", about {clock(per_job * (total - tally.ended) / max(1, workers))} left"
    return line


def _number(name: str) -> tuple[int, str]:
    number = name.partition("_")[0]
    return (int(number) if number.isdigit() else -1, name)


class JobsNotRun(RunDirError):
    """Jobs of a sweep that did not train in this start, neither finished before nor failed: the sweep ends
    with a non-zero exit status that names them and says why."""

    def __init__(self, not_run: dict[str, str]) -> None:
        self.not_run = not_run
        named = "; ".join(f"{job} ({why})" for job, why in sorted(not_run.items()))
        super().__init__(f"{len(not_run)} job{'s' if len(not_run) > 1 else ''} of the sweep did not finish: {named}")


class SweepProgress(Callback):
    """Hydra's callback for seqrev's sweeps: the progress line while they run, their report at the end."""

    def __init__(self, stream: TextIO | None = None, every_seconds: float = EVERY_SECONDS) -> None:
        self.stream, self.every_seconds = stream, every_seconds
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:  # Hydra's context travels to each job's process: without the thread
        return {"every_seconds": self.every_seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from seqrev.console import per_job_listing

        per_job_listing(OmegaConf.select(config, "sweep_console", default="jobs") == "all")
        self.announced: set[str] = set()
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.total, self.started, self.first_seen = sweep_size(config), time.time(), {}
        self.out = self.stream or sys.stdout
        self.in_place = self.out.isatty()
        self.thread = threading.Thread(target=self._watch, name="seqrev-progress", daemon=True)
        self.thread.start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.thread is None:
            return
        self.stop.set()
        self.thread.join()
        from seqrev.console import per_job_listing

        per_job_listing(True)
        tally = read_folders(self.sweep_dir, self.started, self.first_seen, final=True)
        self._announce(tally, self._planned()[0])
        written = self._report()
        self._say(f"sweep finished in {clock(time.time() - self.started)}: {counts(tally)}; "
                  + (f"report: {written}" if written else f"no results to report in {self.sweep_dir}"), final=True)
        from seqrev.sweepfolder import read_settle

        settle, _ = read_settle(self.sweep_dir)
        if settle.get("summary"):  # a settle sweep's verdicts, per cell: the last line
            self._say(str(settle["summary"]), final=True)

    def _planned(self) -> tuple[int | None, str]:
        """The sweep's total so far and why it grows: what a sweeper that adds rounds recorded, else the
        command line's count."""
        from seqrev.sweepfolder import read_planned

        planned = read_planned(self.sweep_dir, self.started)
        return planned if planned is not None else (self.total, "")

    def _watch(self) -> None:
        last_said, workers, warned = 0.0, 1, set()
        while not self.stop.wait(1.0):
            if not self.sweep_dir.is_dir():
                continue
            tally = read_folders(self.sweep_dir, self.started, self.first_seen)
            for path, why in tally.unreadable.items():
                if path not in warned:
                    warned.add(path)
                    self._say(f"sweep: not counted, not read as results: {why}", final=True)
            workers = max(workers, tally.running)
            total, note = self._planned()
            if self._announce(tally, total):  # a job's line when it ends says how far the sweep has got
                last_said = time.time()
            if time.time() - last_said >= (1.0 if self.in_place else self.every_seconds):
                self._say(progress_line(tally, total, time.time() - self.started, workers, note))
                last_said = time.time()

    def _announce(self, tally: Tally, total: int | None) -> bool:
        """A line for each job that ended since the last look: its name, how it ended, and how many of the
        sweep's jobs have ended; whether there was any."""
        new = [(name, ending) for name, ending in sorted(tally.endings.items(), key=lambda item: _number(item[0]))
               if name not in self.announced]
        for name, ending in new:
            self.announced.add(name)
            self._say(f"job {name}: {ending} ({len(self.announced)}{f'/{total}' if total else ''} ended)",
                      final=True)
        return bool(new)

    def _say(self, line: str, final: bool = False) -> None:
        try:
            self.out.write(("\r\033[K" + line + ("\n" if final else "")) if self.in_place else line + "\n")
            self.out.flush()
        except ValueError:  # the stream was closed under the thread, as its process ends: no one to tell
            self.stop.set()

    def _report(self) -> Path | None:
        """The sweep's report (seqrev.report) written into its folder: report.html, or report.md without
        matplotlib; None when no job has results."""
        from seqrev.report import write_report

        try:
            return write_report([self.sweep_dir], quiet=True)
        except OSError:
            return None
