"""Shared helpers: compose seqrev's real Hydra config the way `python -m seqrev.train` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

from seqrev.catalog import TUTORIAL_WIRINGS, compose

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
MODELS = list(TUTORIAL_WIRINGS)

TINY = ("data.n_train=300", "data.n_test=100")
"""Data small enough for a run of a few epochs in about a second."""
SMALL = (*TINY, "callbacks.early_stopping.patience=100")
"""The same, never stopped early: a test that counts epochs chooses them with trainer.max_epochs."""
SCORES = ("train_acc", "val_acc", "val_loss", "test_acc", "test_seq_acc", "test_loss", "epochs_run")
"""The numbers of results.json that two runs of one experiment must agree on."""
PROBES = {"PYTHONPATH": str(ROOT / "tests")}
"""The environment that lets a run's config name tests/probes.py (`+callbacks.x._target_=probes....`)."""
PAUSE_TARGET = "+callbacks.pause._target_=probes.PauseAtEpoch"  # repeated when resuming: a folder is data


def job_logs(sweep: Path) -> str:
    """Every job's train.log of a sweep folder, one after another: what its jobs said (a sweep's console
    shows only a line per job as it ends; `sweep_console`)."""
    return "".join(log.read_text() for log in sorted(Path(sweep).glob("*/train.log")))


def compose_config(*overrides: str, output_dir: Path | None = None) -> DictConfig:
    """The composed train config; `output_dir` stands in for Hydra's run directory."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else []
    return compose([*overrides, *extra], CONF)


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m seqrev.train ARGS` as a user types it."""
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "seqrev.train", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=environment)


def train_in_process(*args: str) -> int:
    """`python -m seqrev.train ARGS` in this process (its command-line policy, Hydra's run or sweep, the
    job); its exit status. The logging handlers and Hydra's state are as they were afterwards."""
    import logging

    from hydra.core.hydra_config import HydraConfig

    from seqrev.train import cli

    root = logging.getLogger()
    handlers, saved_argv = list(root.handlers), sys.argv
    sys.argv = ["seqrev.train", *args]
    try:
        cli()
        return 0
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.argv = saved_argv
        for handler in set(root.handlers) - set(handlers):  # Hydra's log file for the run, closed
            root.removeHandler(handler)
            handler.close()
        root.handlers[:] = handlers
        HydraConfig.instance().cfg = None


@pytest.fixture
def seqrev_train(monkeypatch, capsys):
    """`python -m seqrev.train ARGS` run in this process: what it printed and its exit status, as `run_cli`
    gives them, without a process's start-up. For what only a process shows (signals, a real exit,
    tracebacks printed by Python), use run_cli."""

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # as a user's shell has it, unless `env` sets it
        for name, value in (env or {}).items():
            if name != "PYTHONPATH":  # tests/ (probes) is on this process's path already
                monkeypatch.setenv(name, value)
        capsys.readouterr()
        status = train_in_process(*args)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["seqrev.train", *args], status, out, err)

    return run


def wait_until_paused(marker: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Wait for a run's probes.PauseAtEpoch to touch `marker`; fail if the run ends or hangs first."""
    import time
    deadline = time.time() + timeout
    while not marker.exists():
        assert process.poll() is None, f"the run ended before it paused (exit status {process.returncode})"
        assert time.time() < deadline, f"the run did not pause within {timeout:.0f} s"
        time.sleep(0.05)


def pause_at(epochs: int, marker: Path, *settings: str) -> tuple[str, ...]:
    """Overrides adding probes.PauseAtEpoch: the run touches `marker` once `epochs` epochs (and their
    checkpoints) are done, then waits for the test's signal."""
    return (PAUSE_TARGET, f"+callbacks.pause.epochs={epochs}", f"+callbacks.pause.marker={marker}", *settings)


def start_paused(line: list[str], marker: Path, **popen) -> subprocess.Popen:
    """`python -m seqrev.train LINE` (which includes `pause_at(..., marker)`), returned once it has paused."""
    environment = {**os.environ, **PROBES}
    environment.pop("HYDRA_FULL_ERROR", None)
    process = subprocess.Popen([sys.executable, "-m", "seqrev.train", *line], cwd=ROOT, env=environment,
                               **{"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen})
    wait_until_paused(marker, process)
    return process


@pytest.fixture(params=MODELS)
def model_name(request) -> str:
    return request.param


def started_a_second_earlier(folder: Path) -> None:
    """Rename a run's TensorBoard event files as if that run had started a second earlier. TensorBoard reads
    a folder's event files in name order, and a name starts with the second its run began: a run resumed in
    this same process a moment later (where a user's resumed run is a later process) then sorts after it,
    with no sleep to wait for the clock."""
    for path in folder.rglob("events.out.tfevents.*"):
        prefix, stamp, rest = path.name.split(".", 3)[:3], path.name.split(".")[3], path.name.split(".", 4)[4]
        path.rename(path.with_name(".".join(prefix) + f".{int(stamp) - 1:010d}.{rest}"))


@pytest.fixture(scope="session")
def shared_runs(tmp_path_factory, worker_id):
    """Reference runs and sweeps trained once per test session for every pytest-xdist worker (xdist's
    documented pattern: a folder all workers share and a file lock). `shared_runs(name, make)` calls
    `make(folder)` the first time `name` is asked for and gives the folder; a test that changes what it
    finds there works on a copy (`copy_of`)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    root = root.parent if worker_id != "master" else root
    shared = root / "shared_runs"
    shared.mkdir(exist_ok=True)

    def get(name: str, make) -> Path:
        folder, done = shared / name, shared / f"{name}.done"
        with FileLock(str(shared / f"{name}.lock")):
            if not done.exists():
                import shutil

                shutil.rmtree(folder, ignore_errors=True)
                make(folder)
                done.touch()
        return folder

    return get


def copy_of(folder: Path, destination: Path) -> Path:
    """A copy of a shared run or sweep, for a test that changes it (paths inside its files keep naming the
    original: what a test changes is what it reads, not what they name)."""
    import shutil

    shutil.copytree(folder, destination, ignore=shutil.ignore_patterns(".seqrev.lock"))
    return destination
