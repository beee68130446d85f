"""A sweep run again continues: finished jobs untouched, killed ones resumed exactly, failed ones re-run."""

import hashlib
import json
import os
import re
import signal
from pathlib import Path

import pytest

from conftest import PROBES, SCORES, SMALL, job_logs, pause_at, run_cli, start_paused

FOUR_EPOCHS = (*SMALL, "trainer.max_epochs=4")



def fingerprint(sweep: Path) -> dict[str, str]:
    """Every file a job wrote, with a hash of its bytes (Hydra's own files and the logs may change)."""
    return {str(p.relative_to(sweep)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(sweep.rglob("*"))
            if p.is_file() and ".hydra" not in p.parts and not p.name.endswith(".log") and ".submitit" not in p.parts
            and ".seqrev" not in p.parts and p.name != "multirun.yaml"}


def starts(job_dir: Path) -> set[str]:
    """The processes that wrote a job's TensorBoard events (events.out.tfevents.<time>.<host>.<pid>.<n>)."""
    return {p.name.split(".")[-2] for p in job_dir.glob("events.out.tfevents.*")}


def results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name.split("_")[0]: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


def test_a_finished_sweep_run_again_changes_nothing(tmp_path, seqrev_train):
    sweep = tmp_path / "sweep"
    line = ("-m", "model=return_state,both_outputs", *SMALL, "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}")
    first = seqrev_train(*line)
    assert first.returncode == 0, first.stderr[-3000:]
    before = fingerprint(sweep)
    again = seqrev_train(*line)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped (finished)") == 2
    assert fingerprint(sweep) == before  # byte for byte, and no new files


@pytest.mark.slow
def test_a_sweep_killed_mid_job_continues_where_it_stopped(tmp_path):
    alone = run_cli("model=both_outputs", *FOUR_EPOCHS, f"hydra.run.dir={tmp_path / 'alone'}")
    assert alone.returncode == 0, alone.stderr[-3000:]

    sweep, marker = tmp_path / "sweep", tmp_path / "paused"
    pause = pause_at(2, marker, "+callbacks.pause.only_for=both_outputs")
    line = ["-m", "model=return_state,both_outputs,single_default", *FOUR_EPOCHS, *pause, f"hydra.sweep.dir={sweep}"]
    process = start_paused(line, marker, start_new_session=True)
    os.killpg(process.pid, signal.SIGKILL)  # job 0 done, job 1 after exactly 2 epochs, job 2 not started
    process.wait()
    finished_before = fingerprint(sweep / "0_model=return_state,timesteps=4,units=16,seed=0")
    assert not (sweep / "1_model=both_outputs,timesteps=4,units=16,seed=0" / "results.json").exists()

    again = run_cli(*line, env=PROBES)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skipped (finished)" in again.stdout and "resuming from epoch 2" in job_logs(sweep)
    assert job_logs(sweep).count("took over the lock of a process that is gone") == 1  # job 1's, left by kill -9
    jobs = results(sweep)
    assert sorted(jobs) == ["0", "1", "2"] and all(job["status"] == "ok" for job in jobs.values())
    assert fingerprint(sweep / "0_model=return_state,timesteps=4,units=16,seed=0") == finished_before
    expected = json.loads((tmp_path / "alone" / "results.json").read_text())
    assert jobs["1"]["resumed"] is True and jobs["2"]["resumed"] is False
    assert {key: jobs["1"][key] for key in SCORES} == {key: expected[key] for key in SCORES}
    checkpoints = sorted(p.name for p in (sweep / "1_model=both_outputs,timesteps=4,units=16,seed=0" / "checkpoints")
                         .iterdir())
    assert checkpoints == ["best.ckpt", "last.ckpt"]  # no -v1 copies


def test_a_failed_job_is_run_again_from_scratch(tmp_path, seqrev_train):
    sweep = tmp_path / "sweep"
    fail_once = ("+callbacks.fail._target_=probes.FailOnce", f"+callbacks.fail.marker={tmp_path / 'failed'}",
                 "+callbacks.fail.only_for=both_outputs")
    line = ("-m", "model=return_state,both_outputs", *FOUR_EPOCHS, *fail_once, f"hydra.sweep.dir={sweep}")
    first = seqrev_train(*line, env=PROBES)
    assert first.returncode == 0, first.stderr[-3000:]
    assert results(sweep)["1"]["status"] == "failed"
    again = seqrev_train(*line, env=PROBES)
    assert again.returncode == 0, again.stderr[-3000:]
    job = results(sweep)["1"]
    assert job["status"] == "ok" and job["resumed"] is False and job["epochs_run"] == 4
    job_dir = sweep / "1_model=both_outputs,timesteps=4,units=16,seed=0"
    assert len(starts(job_dir)) == 1  # the failed start's events were cleared: one start's curves only


def test_a_folder_holding_another_job_is_refused_up_front_and_nothing_is_written(tmp_path, seqrev_train):
    # Job folders name what the sweep varies (here lr), not its fixed settings: change one of those and
    # the same folder names now stand for other jobs. The sweep is refused before Hydra writes anything.
    sweep = tmp_path / "sweep"
    first = seqrev_train("-m", "model.optimizer.lr=0.01,0.002", *SMALL, "trainer.max_epochs=1",
                         f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr[-3000:]
    every_file = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    other = seqrev_train("-m", "model.optimizer.lr=0.01,0.002", *SMALL, "trainer.max_epochs=2",
                         f"hydra.sweep.dir={sweep}")
    assert other.returncode == 2 and other.stderr.strip().count("\n") == 0, other.stderr
    assert "holds a job with other settings than this sweep's job there" in other.stderr
    assert "trainer.max_epochs=2" in other.stderr and "trainer.max_epochs=1" in other.stderr
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == every_file  # multirun.yaml included


def test_a_job_that_does_not_train_is_counted_under_its_own_word_and_the_sweep_exits_non_zero(tmp_path,
                                                                                                seqrev_train):
    """A job whose folder another live process holds is neither done, nor failed, nor skipped: the progress
    line and the summary count it as busy, and the sweep ends with exit status 2 naming it and why."""
    import subprocess
    import sys

    from test_run_folders import HOLD_THE_LOCK

    from conftest import ROOT

    sweep = tmp_path / "sweep"
    held = sweep / "1_model=both_outputs,timesteps=4,units=16,seed=0"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(held)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = seqrev_train("-m", "model=return_state,both_outputs", *SMALL, "trainer.max_epochs=1",
                            f"hydra.sweep.dir={sweep}")
    finally:
        holder.kill()
        holder.wait()
    summary = [line for line in done.stdout.splitlines() if line.startswith("sweep finished")]
    assert summary and ": 1 done, 0 failed, 0 skipped, 1 busy;" in summary[0], done.stdout
    assert done.returncode == 2
    assert done.stderr.strip() == (f"seqrev: 1 job of the sweep did not finish: {held.name} (busy: running elsewhere "
                                   f"({os.uname().nodename}, {holder.pid}): {held})")


def test_a_job_killed_after_a_checkpoint_is_resumed_from_it_not_started_again(tmp_path, seqrev_train):
    """The in-process counterpart of the kill test above: a job folder as a kill after its last checkpoint
    leaves it (no results.json), met by the sweep run again."""
    sweep = tmp_path / "sweep"
    line = ("-m", "model=return_state,both_outputs", *SMALL, "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}")
    assert seqrev_train(*line).returncode == 0
    killed = sweep / "1_model=both_outputs,timesteps=4,units=16,seed=0"
    finished = json.loads((killed / "results.json").read_text())
    (killed / "results.json").unlink()
    again = seqrev_train(*line)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped (finished)") == 1 and f"resuming from epoch 2: {killed}" in (
        killed / "train.log").read_text()
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["resumed"] is True and resumed["epochs_run"] == 2
    for key in SCORES:
        assert resumed[key] == finished[key], key


def test_a_job_whose_folder_cannot_be_written_fails_alone_and_the_sweep_goes_on(tmp_path, seqrev_train, monkeypatch):
    import errno

    import seqrev.lifecycle

    def full_disk(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(seqrev.lifecycle, "atomic_write", full_disk)
    sweep = tmp_path / "sweep"
    done = seqrev_train("-m", "model=return_state,both_outputs", *SMALL, "trainer.max_epochs=1",
                        f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    failed = [line for line in done.stdout.splitlines() if re.match(r"job \S+: failed: could not write", line)]
    assert len(failed) == 2 and all("job.json: no space left" in line for line in failed), done.stdout
    assert "0 done, 2 failed, 0 skipped" in done.stdout


@pytest.mark.parametrize(("status", "action"), [(None, "resume"), ("interrupted", "resume"), ("failed", "run"),
                                                ("ok", "skip")])
def test_what_a_sweep_job_does_with_its_folder_follows_its_results(tmp_path, status, action):
    """seqrev.lifecycle.claim, in process: a job killed (no results.json) or interrupted (Ctrl-C) after a
    checkpoint continues from it; a failed one starts again, its files cleared; a finished one is skipped."""
    from contextlib import ExitStack

    from seqrev.lifecycle import JOB_FILE, claim
    from seqrev.run import train

    from conftest import compose_config

    job, overrides = tmp_path / "job", ["seed=0"]
    train(compose_config(*SMALL, "trainer.max_epochs=1", output_dir=job))
    (job / JOB_FILE).write_text(json.dumps({"overrides": overrides}))
    results = json.loads((job / "results.json").read_text())
    (job / "results.json").unlink()
    if status is not None:
        (job / "results.json").write_text(json.dumps({**results, "status": status}))
    with ExitStack() as held:
        claimed = claim(held, job, overrides)
    assert claimed.action == action
    assert (claimed.saved is not None and claimed.saved.run_dir == job) == (action == "resume")
    assert (job / "checkpoints" / "last.ckpt").exists() == (action != "run")


def test_a_results_file_that_is_not_results_is_said_and_its_job_counts_as_unfinished(tmp_path, caplog):
    """A sweep's continuation, resume= and the progress line read results.json through one check: a file
    with a wrong-typed field is named in one line with the field, and the job is taken as unfinished."""
    import logging
    import time
    from contextlib import ExitStack

    from seqrev.lifecycle import JOB_FILE, claim
    from seqrev.progress import read_folders
    from seqrev.rundir import run_status

    job, overrides = tmp_path / "0_job", ["seed=0"]
    job.mkdir()
    (job / JOB_FILE).write_text(json.dumps({"overrides": overrides}))
    started = time.time() - 1
    (job / "results.json").write_text(json.dumps({"status": "ok", "model": "both_outputs", "timesteps": 4,
                                                  "units": 16, "test_acc": "high", "test_seq_acc": 0.1,
                                                  "epochs_run": 3, "test_acc_per_position": [0.5] * 4}))
    with caplog.at_level(logging.WARNING, logger="seqrev"):
        assert run_status(job) is None
        with ExitStack() as held:
            assert claim(held, job, overrides, tmp_path).action == "run"  # not skipped as finished
    said = [r.getMessage() for r in caplog.records if "not read as results" in r.getMessage()]
    assert len(said) == 2 and all("the field 'test_acc' holds \"high\"" in line for line in said)
    (job / "results.json").write_text(json.dumps({"status": "ok", "model": 3}))
    tally = read_folders(tmp_path, started, {})
    assert (tally.done, tally.failed) == (0, 0)
    assert "the field 'timesteps' is missing" in tally.unreadable[str(job / "results.json")]


def test_the_value_a_sweeper_reads_and_the_message_a_failed_job_records(tmp_path):
    """A job that left no results (refused, busy) gives the sweeper NaN, never a number it would rank; a
    failed job's results.json says in one sentence what went wrong (and, for the unexpected, where)."""
    import math

    from seqrev.errors import ConfigError
    from seqrev.lifecycle import metric, record_failure

    from conftest import compose_config

    cfg = compose_config("optimized_metric=test_acc", output_dir=tmp_path / "job")
    assert math.isnan(metric(cfg, None)) and math.isnan(metric(cfg, {"status": "failed"}))
    assert math.isnan(metric(cfg, {"test_acc": "0.9"})) and metric(cfg, {"test_acc": 0.9, "val_acc": 0.1}) == 0.9
    (tmp_path / "job").mkdir()
    said = record_failure(cfg, ConfigError("data.timesteps=0 is not allowed: give 1 or more."), "both_outputs")
    failed = json.loads((tmp_path / "job" / "results.json").read_text())
    assert said == failed["error"] == "data.timesteps=0 is not allowed: give 1 or more."
    assert failed["status"] == "failed" and failed["error_type"] == "ConfigError" and "traceback" not in failed
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError as error:
        said = record_failure(cfg, error, "both_outputs")
    failed = json.loads((tmp_path / "job" / "results.json").read_text())
    assert said == failed["error"] == "ZeroDivisionError: division by zero"
    assert failed["model"] == "both_outputs" and "ZeroDivisionError" in failed["traceback"]
