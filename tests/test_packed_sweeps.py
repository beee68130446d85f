"""hydra/launcher=packed as a user runs it: packs spread over processes, and the tutorial's table."""

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SCORES, SMALL, job_logs, run_cli

pytestmark = pytest.mark.slow


def job_results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name.split("_", 1)[1]: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


def test_packs_and_ordinary_jobs_on_several_processes_end_as_they_would_in_one(tmp_path):
    grid = ("model=both_outputs,encoder_decoder", "seed=0,1,2", *SMALL, "trainer.max_epochs=3")
    two = run_cli("-m", "hydra/launcher=packed", "hydra.launcher.n_jobs=2", *grid, f"hydra.sweep.dir={tmp_path}/two")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "6 jobs as 1 packs (3 jobs each) and 3 ordinary jobs, on 2 processes" in two.stdout
    one = run_cli("-m", "hydra/launcher=packed", "hydra.launcher.n_jobs=1", *grid, f"hydra.sweep.dir={tmp_path}/one")
    assert one.returncode == 0 and "on 1 processes" in one.stdout
    spread, together = job_results(tmp_path / "two"), job_results(tmp_path / "one")
    assert spread.keys() == together.keys() and len(spread) == 6
    for name, results in together.items():
        assert spread[name]["status"] == results["status"] == "ok"
        for key in SCORES:  # the same work in other processes: the same numbers
            assert spread[name][key] == pytest.approx(results[key], abs=1e-6), (name, key)


def test_a_packed_sweep_killed_and_run_again_finishes_every_job_with_the_uninterrupted_numbers(tmp_path):
    grid = ["-m", "hydra/launcher=packed", "hydra.launcher.n_jobs=2", "model=return_state", "seed=0,1,2,3", *SMALL,
            "trainer.max_epochs=30", "data.n_train=1000"]
    whole = run_cli(*grid, f"hydra.sweep.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    sweep = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "seqrev.train", *grid, f"hydra.sweep.dir={sweep}"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while len(list(sweep.glob("*/checkpoints/last.ckpt"))) < 4 and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and its workers, as a lost node or `kill -9` of all
    process.wait()
    assert not list(sweep.glob("*/results.json"))  # killed mid-training
    again = run_cli(*grid, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert job_logs(sweep).count("resuming from epoch") == 4  # each member says so, as an ordinary job does
    resumed, uninterrupted = job_results(sweep), job_results(tmp_path / "whole")
    assert resumed.keys() == uninterrupted.keys() and len(resumed) == 4
    for name, results in uninterrupted.items():
        assert resumed[name]["status"] == "ok" and resumed[name]["resumed"] is True
        for key in SCORES:
            assert resumed[name][key] == pytest.approx(results[key], abs=1e-6), (name, key)


def readme_table() -> dict[tuple[int, int], dict[str, float]]:
    """The README's tutorial table: (units, timesteps) -> wiring -> mean test accuracy in %."""
    text = (ROOT / "README.md").read_text()
    header = re.search(r"^\| units \| T \| (.*) \| mode baseline \|$", text, re.M)
    wirings = [w.strip() for w in header.group(1).split("|")]
    table = {}
    for units, timesteps, cells in re.findall(r"^\| (\d+) \| (\d+) \| (.*) \| [\d.]+ \|$", text, re.M):
        means = [float(cell.split("±")[0]) for cell in cells.split("|")]
        table[(int(units), int(timesteps))] = dict(zip(wirings, means))
    return table


def test_the_tutorial_table_packed_matches_the_readmes_within_three_points_and_orders_the_same(tmp_path):
    sweep = tmp_path / "table"
    done = run_cli("-m", "experiment=tutorial_table", "hydra/launcher=packed", f"hydra.sweep.dir={sweep}",
                   timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "60 jobs as 20 packs" in done.stdout
    runs = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert len(runs) == 60 and {r["status"] for r in runs} == {"ok"}
    readme = readme_table()
    assert len(readme) == 4
    for (units, timesteps), expected in readme.items():
        packed = {wiring: 100 * statistics.mean(r["test_acc"] for r in runs if r["model"] == wiring
                                                and r["units"] == units and r["timesteps"] == timesteps)
                  for wiring in expected}
        for wiring, mean in expected.items():
            assert abs(packed[wiring] - mean) <= 3, (units, timesteps, wiring, packed[wiring], mean)
        for a in expected:  # the wirings order as the README's, wherever it tells them apart by over a point
            for b in expected:
                if expected[a] > expected[b] + 1:
                    assert packed[a] > packed[b], (units, timesteps, a, b)
