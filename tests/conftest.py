"""Shared helpers: compose seqrev's real Hydra config the way `python -m seqrev.train` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import seqrev.config  # noqa: F401 - registers the resolver the configs use
from seqrev.catalog import TUTORIAL_WIRINGS

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
MODELS = list(TUTORIAL_WIRINGS)


def compose_config(*overrides: str, output_dir: Path | None = None) -> DictConfig:
    """The composed train config; `output_dir` stands in for Hydra's run directory."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, *extra])


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m seqrev.train ARGS` as a user types it."""
    environment = {**os.environ}
    environment.pop("HYDRA_FULL_ERROR", None)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "seqrev.train", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=environment)


def wait_until_paused(marker: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Wait for a run's probes.PauseAtEpoch to touch `marker`; fail if the run ends or hangs first."""
    import time
    deadline = time.time() + timeout
    while not marker.exists():
        assert process.poll() is None, f"the run ended before it paused (exit status {process.returncode})"
        assert time.time() < deadline, f"the run did not pause within {timeout:.0f} s"
        time.sleep(0.05)


@pytest.fixture(params=MODELS)
def model_name(request) -> str:
    return request.param
