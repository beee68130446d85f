"""docs/your_own_experiments.md, run as a user would: a wiring, a config and a callback of their
own in their own folder (docs/own_experiment), nothing in seqrev edited."""

import csv
import json
import shutil
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT

pytestmark = pytest.mark.slow  # the docs' example as a user runs it, in processes of its own

# The page's commands, word for word but for a shorter epoch budget.
SWEEP = ["-m", "hydra.searchpath=[file://my_conf]", "model=reversed_input,both_outputs", "optimizer=adam,sgd",
         "trainer.max_epochs=5", "+callbacks.largest_weight._target_=my_callbacks.LargestWeight",
         "hydra.sweep.dir=sweep"]


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine") / "own_experiment"
    shutil.copytree(ROOT / "docs" / "own_experiment", folder, ignore=shutil.ignore_patterns("sweep", "outputs"))
    done = subprocess.run([sys.executable, "-m", "seqrev.train", *SWEEP], cwd=folder, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def test_a_wiring_of_your_own_runs_sweeps_and_reports_under_its_own_name(own_folder):
    sweep = own_folder / "sweep"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs[0] == "0_model=reversed_input,timesteps=4,units=16,seed=0,optimizer=adam"
    results = json.loads((sweep / jobs[0] / "results.json").read_text())
    assert results["model"] == "reversed_input" and results["status"] == "ok"
    assert results["trainable_params"] == 4010
    assert results["extra"]["largest_output_weight"] > 0  # the callback's extra/ scalar
    events = EventAccumulator(str(sweep / jobs[0]))
    events.Reload()
    assert "hparams/extra/largest_output_weight" in events.Tags()["scalars"]

    report = subprocess.run([sys.executable, "-m", "seqrev.report", "sweep"], cwd=own_folder, capture_output=True,
                            text=True)
    assert report.returncode == 0, report.stderr
    text = (sweep / "report.md").read_text()
    assert "# model.optimizer=Adam(lr=0.001, eps=1e-07)" in text and "# model.optimizer=SGD(" in text
    header = next(line for line in text.splitlines() if line.startswith("| units"))
    assert header.index("both_outputs") < header.index("reversed_input")  # the tutorial's first, then yours
    rows = [row for row in csv.DictReader(open(sweep / "report.csv")) if row["kind"] == "run"]
    assert rows and all(float(row["extra/largest_output_weight"]) > 0 for row in rows)


def test_a_wiring_of_your_own_loads_and_predicts(own_folder):
    code = ("import sys, seqrev, my_wirings; m = seqrev.load(sys.argv[1]); "
            "print(type(m).__name__, m.predict_symbols([[3, 2, 9, 1]]))")
    job = next((own_folder / "sweep").glob("0_*"))
    done = subprocess.run([sys.executable, "-c", code, str(job)], cwd=own_folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ReversedInput [[")


def test_a_typo_in_your_own_wirings_name_is_one_sentence(own_folder):
    done = subprocess.run([sys.executable, "-m", "seqrev.train", "hydra.searchpath=[file://my_conf]",
                           "model=reversed_inptu"], cwd=own_folder, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "model='reversed_inptu' is not allowed" in done.stderr and "reversed_input" in done.stderr


def test_a_task_of_your_own_sweeps_reports_and_predicts_under_its_own_name(tmp_path):
    folder = tmp_path / "own_experiment"
    shutil.copytree(ROOT / "docs" / "own_experiment", folder, ignore=shutil.ignore_patterns("sweep", "rotate"))
    sweep = ["-m", "data.task=my_tasks.rotate", "seed=0,1", "data.n_train=300", "data.n_test=50",
             "trainer.max_epochs=2", "hydra.sweep.dir=rotate"]
    done = subprocess.run([sys.executable, "-m", "seqrev.train", *sweep], cwd=folder, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    job = folder / "rotate" / "0_model=both_outputs,timesteps=4,units=16,seed=0"
    assert json.loads((job / "results.json").read_text())["task"] == "my_tasks.rotate"

    report = subprocess.run([sys.executable, "-m", "seqrev.report", "rotate"], cwd=folder, capture_output=True,
                            text=True)
    assert report.returncode == 0, report.stderr
    assert "data.task=my_tasks.rotate" in (folder / "rotate" / "report.md").read_text()

    predict = [sys.executable, "-m", "seqrev.predict", str(job), "3,2,9,1"]
    done = subprocess.run([*predict, "--import", "my_tasks"], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Input [3, 2, 9, 1] Expected: [2, 9, 1, 3] Predicted [")
    unimported = subprocess.run(predict, cwd=folder, capture_output=True, text=True)
    assert unimported.returncode == 2 and unimported.stderr.strip() == (
        "seqrev: this run's task 'my_tasks.rotate' is not registered here: name the module that defines it with "
        "--import MODULE.")
