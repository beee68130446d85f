"""A run folder is data and has one writer: resuming never instantiates what the folder alone names, and
no job is trained by two processes at once (real processes, real signals)."""

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PROBES, ROOT, SMALL, pause_at, run_cli, start_paused


class Payload:
    """Unpickling it creates `marker`: what a crafted file in a run folder would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture
def interrupted_run(tmp_path) -> Path:
    """A run folder as a killed run leaves it: .hydra/, a last.ckpt, no results.json."""
    run = tmp_path / "run"
    done = run_cli("model=single_default", *SMALL, "trainer.max_epochs=1", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    (run / "results.json").unlink()
    return run


@pytest.mark.slow
def test_a_crafted_overrides_file_is_refused_and_its_command_never_runs(tmp_path, interrupted_run):
    marker, payload = tmp_path / "code-ran", interrupted_run / "payload.pkl"
    payload.write_bytes(pickle.dumps(Payload(marker)))
    crafted = ["+callbacks.x._target_=torch.load", f"+callbacks.x.f={payload}", "+callbacks.x.weights_only=false"]
    overrides = interrupted_run / ".hydra" / "overrides.yaml"
    overrides.write_text(yaml.safe_dump(yaml.safe_load(overrides.read_text()) + crafted))

    refused = run_cli(f"resume={interrupted_run}")
    assert refused.returncode == 2 and not marker.exists()
    assert refused.stderr.strip().count("\n") == 0, refused.stderr  # one sentence
    assert "+callbacks.x._target_=torch.load" in refused.stderr and "repeat it on the command line" in refused.stderr

    # Said on the command line too, the same folder runs the payload: the refusal alone stopped it above.
    accepted = run_cli(f"resume={interrupted_run}", "+callbacks.x._target_=torch.load")
    assert marker.exists(), accepted.stderr[-2000:]


@pytest.mark.slow
def test_a_crafted_config_file_is_never_instantiated(tmp_path, interrupted_run):
    marker, payload = tmp_path / "code-ran", interrupted_run / "payload.pkl"
    payload.write_bytes(pickle.dumps(Payload(marker)))
    config = interrupted_run / ".hydra" / "config.yaml"
    crafted = yaml.safe_load(config.read_text())
    crafted["callbacks"]["x"] = {"_target_": "torch.load", "f": str(payload), "weights_only": False}
    config.write_text(yaml.safe_dump(crafted))
    resumed = run_cli(f"resume={interrupted_run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not marker.exists()  # the run is composed from seqrev's configs and the overrides, never this file
    assert json.loads((interrupted_run / "results.json").read_text())["status"] == "ok"


def test_a_target_seqrevs_own_configs_name_is_resumed_without_asking():
    from seqrev.rundir import refuse_instantiation, seqrev_targets

    assert "seqrev.models.wirings.BothOutputs" in seqrev_targets()
    refuse_instantiation("RUN", ["model._target_=seqrev.models.wirings.BothOutputs", "seed=3"], [])
    with pytest.raises(ValueError, match="hydra.searchpath"):
        refuse_instantiation("RUN", ["hydra.searchpath=[file:///elsewhere]"], [])
    with pytest.raises(ValueError, match="_target_"):
        refuse_instantiation("RUN", ["+callbacks.x={_target_: torch.load}"], [])
    with pytest.raises(ValueError, match="data.task=my_tasks.rotate"):  # a task's module would be imported
        refuse_instantiation("RUN", ["data.task=my_tasks.rotate"], [])
    refuse_instantiation("RUN", ["data.task=my_tasks.rotate"], ["data.task=my_tasks.rotate"])  # said again: run
    refuse_instantiation("RUN", ["data.task=sort"], [])


def event_writers(job_dir: Path) -> set[str]:
    """The processes that wrote a folder's TensorBoard events (events.out.tfevents.<time>.<host>.<pid>.<n>)."""
    return {p.name.split(".")[-2] for p in job_dir.glob("events.out.tfevents.*")}


@pytest.mark.slow
def test_the_same_sweep_started_twice_trains_every_job_once(tmp_path):
    sweep = tmp_path / "sweep"
    line = [sys.executable, "-m", "seqrev.train", "-m", "model=return_state,both_outputs", "seed=0,1", *SMALL,
            "trainer.max_epochs=6", f"hydra.sweep.dir={sweep}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    both = [subprocess.Popen(line, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in both]
    for process, output in zip(both, outputs):  # a job left to the other process is counted and named: exit 2
        busy = sum(line.startswith("job ") and ": busy: running elsewhere" in line for line in output.splitlines())
        assert process.returncode == (2 if busy else 0), output
        assert (f"{busy} busy;" in output) if busy else (" busy" not in output), output
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 4
    for job in jobs:
        assert json.loads((job / "results.json").read_text())["status"] == "ok"
        assert len(event_writers(job)) == 1, job  # one process trained it
        assert not (job / ".seqrev.lock").exists()  # released at the end
    said = "".join(outputs)
    # every job was met twice: trained by one process, left alone ("running elsewhere") or found finished by the other
    assert said.count(": busy: running elsewhere (") + said.count("skipped (finished)") == 4, said
    assert "resuming from epoch" not in said


@pytest.mark.slow
def test_a_run_and_its_resume_at_once_then_after_a_kill(tmp_path):
    run, marker = tmp_path / "run", tmp_path / "paused"
    pause = pause_at(1, marker)
    first = start_paused(["model=single_default", *SMALL, "trainer.max_epochs=3", *pause, f"hydra.run.dir={run}"],
                         marker, start_new_session=True)
    try:
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
        second = run_cli(f"resume={run}", pause[0], env=PROBES)  # the probe's _target_, accepted knowingly
        assert second.returncode == 2
        assert second.stderr.strip() == f"seqrev: running elsewhere ({os.uname().nodename}, {first.pid}): {run}"
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # not a file touched
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    resumed = run_cli(f"resume={run}", pause[0], env=PROBES)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"took over the lock of a process that is gone ({os.uname().nodename}, {first.pid})" in resumed.stdout
    assert json.loads((run / "results.json").read_text())["status"] == "ok"


HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from seqrev.runlock import run_folder_lock
with run_folder_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_folder_another_live_process_holds_is_refused_at_once_and_left_untouched(tmp_path):
    """In seconds: another process holds a run folder's lock; a run, and a sweep's job, are refused at once
    (no waiting for the lease), each with the holder named, and nothing in the folder changes."""
    import time
    from contextlib import ExitStack

    from seqrev.lifecycle import claim
    from seqrev.runlock import FolderBusy, run_folder_lock

    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
        started = time.perf_counter()
        with pytest.raises(FolderBusy) as busy, run_folder_lock(folder):
            pass
        assert busy.value.pid == holder.pid
        with ExitStack() as held:
            assert claim(held, folder, ["seed=0"]).action == "busy"
        assert time.perf_counter() - started < 2
        assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_whose_holder_was_killed_is_taken_over_at_once_while_it_is_still_a_zombie(tmp_path):
    """In a second: a process holding a folder's lock is killed and not yet collected by its parent (a
    zombie, which `kill(pid, 0)` still finds): the next run takes the lock over at once and says so."""
    import signal
    import time

    from seqrev.runlock import run_folder_lock

    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)
        deadline = time.time() + 10
        while Path(f"/proc/{holder.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.time() < deadline, "the killed holder did not become a zombie"
            time.sleep(0.01)
        with run_folder_lock(folder) as taken:  # not "running elsewhere"
            assert (folder / ".seqrev.lock").is_file()
            assert f"took over the lock of a process that is gone ({os.uname().nodename}, {holder.pid})" in (
                taken.took_over)
        assert Path(f"/proc/{holder.pid}").exists()  # still a zombie: nothing waited for it
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_run_killed_once_its_checkpoint_is_on_disk_resumes_at_once(tmp_path):
    """kill -9 of a real run after its first checkpoint, and `resume=` at once, while the killed process is
    still a zombie (this test collects it only afterwards): no refusal, the run finishes."""
    import time

    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "seqrev.train", "model=single_default", *SMALL,
                              "trainer.max_epochs=40", f"hydra.run.dir={run}"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "last.ckpt").is_file():
            assert first.poll() is None and time.time() < deadline, "the run ended or hung before its checkpoint"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        resumed = run_cli(f"resume={run}", "trainer.max_epochs=41")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"took over the lock of a process that is gone ({os.uname().nodename}, {first.pid})" in resumed.stdout
        assert json.loads((run / "results.json").read_text())["status"] == "ok"
    finally:
        first.kill()
        first.wait()


def test_a_crafted_target_in_a_folders_overrides_is_refused_unless_the_command_line_repeats_it(tmp_path):
    """In process: resume= rebuilds a folder's overrides, but one naming something to instantiate is refused
    in one sentence, unless the user repeats it; seqrev's own targets pass."""
    import torch

    from seqrev.errors import RunDirError
    from seqrev.rundir import rewrite_argv_for_resume

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "loops": {}, "optimizer_states": [], "epoch": 0}, run / "checkpoints" / "last.ckpt")
    crafted = "+callbacks.x._target_=os.system"
    for override in (crafted, "hydra.searchpath=[file:///elsewhere]", "data.task=mine.Task"):
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=1", override]))
        with pytest.raises(RunDirError, match="would have code instantiated on the folder's say-so") as refused:
            rewrite_argv_for_resume(["seqrev.train", f"resume={run}"])
        assert repr(override) in str(refused.value) and "\n" not in str(refused.value)
        assert override in rewrite_argv_for_resume(["seqrev.train", f"resume={run}", override])[0]  # the user's say-so
    (run / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["callbacks.epoch_log._target_=seqrev.callbacks.EpochLog"]))
    assert "callbacks.epoch_log._target_=seqrev.callbacks.EpochLog" in rewrite_argv_for_resume(
        ["seqrev.train", f"resume={run}"])[0]
