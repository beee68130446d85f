import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONF, MODELS, run_cli


def job_results(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_two_by_two_sweep_leaves_every_job_its_results_and_events(tmp_path, launcher):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "model=return_state,both_outputs", "data.timesteps=4,8", "trainer.max_epochs=2",
            "data.n_train=300", f"hydra.sweep.dir={sweep_dir}"]
    if launcher == "joblib":
        args.append("hydra/launcher=joblib")
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    results = job_results(sweep_dir)
    assert sorted(results) == [
        "0_model=return_state,timesteps=4,units=16,seed=0", "1_model=return_state,timesteps=8,units=16,seed=0",
        "2_model=both_outputs,timesteps=4,units=16,seed=0", "3_model=both_outputs,timesteps=8,units=16,seed=0"]
    assert all(r["status"] == "ok" and r["epochs_run"] == 2 for r in results.values())
    for name, result in results.items():
        assert f"model={result['model']},timesteps={result['timesteps']}" in name
        events = EventAccumulator(str(sweep_dir / name))
        events.Reload()
        assert "val/acc" in events.Tags()["scalars"]

    assert (sweep_dir / "report.md").is_file() and (sweep_dir / "report.png").is_file()  # written as it ended
    rows = list(csv.DictReader(open(sweep_dir / "report.csv")))
    assert [r["kind"] for r in rows].count("run") == 4


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path, seqrev_train):
    sweep_dir = tmp_path / "sweep"
    done = seqrev_train("-m", "model=single_default", "data.timesteps=0,3", "trainer.max_epochs=1", "data.n_train=100",
                   f"hydra.sweep.dir={sweep_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = job_results(sweep_dir)
    failed = results["0_model=single_default,timesteps=0,units=16,seed=0"]
    assert failed["status"] == "failed" and "data.timesteps=0" in failed["error"]
    assert results["1_model=single_default,timesteps=3,units=16,seed=0"]["status"] == "ok"


def test_tutorial_table_preset_composes_to_the_tutorials_grid():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=tutorial_table"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["model"].split(",") == MODELS
    assert params["seed"].split(",") == ["0", "1", "2"]
    sizes = params["+size"].split(",")
    grid = []
    for size in sizes:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            sized = compose(config_name="train", overrides=[f"+size={size}"])
        grid.append((sized.data.timesteps, sized.model.units))
    assert grid == [(4, 16), (8, 16), (16, 16), (16, 32)]


def test_optuna_search_runs_trials_and_reports_the_best(tmp_path, seqrev_train):
    import yaml
    sweep_dir = tmp_path / "search"
    done = seqrev_train("-m", "hparams_search=optuna", "model=both_outputs", "hydra.sweeper.n_trials=2",
                   "trainer.max_epochs=1", "data.n_train=200", f"hydra.sweep.dir={sweep_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"model.units", "model.optimizer.lr"}
    values = [r["val_acc"] for r in job_results(sweep_dir).values()]
    assert len(values) == 2 and best["best_value"] == pytest.approx(max(values))


def test_an_optuna_study_in_a_database_continues_across_searches(tmp_path, seqrev_train):
    import sqlite3
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for search in ("first", "second"):  # each search its own sweep folder; the study is what they share
        done = seqrev_train("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.max_epochs=1",
                       "data.n_train=200", f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={tmp_path / search}")
        assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(tmp_path / "study.db") as db:
        states = [row[0] for row in db.execute("SELECT state FROM trials")]
    assert len(states) == 4 and set(states) == {"COMPLETE"}  # the trials added up


def test_job_folders_name_every_swept_setting_and_the_report_keeps_them_apart(tmp_path, seqrev_train):
    sweep = tmp_path / "sweep"
    done = seqrev_train("-m", "data.n_train=200,300", "model.cell=lstm,gru", "trainer.max_epochs=1",
                   f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert names == [f"{i}_model=both_outputs,timesteps=4,units=16,seed=0,n_train={n},cell={c}"
                     for i, (n, c) in enumerate([(200, "lstm"), (200, "gru"), (300, "lstm"), (300, "gru")])]
    results = job_results(sweep)
    assert {r["config"]["data"]["n_train"] for r in results.values()} == {200, 300}
    text = (sweep / "report.md").read_text()  # the sweep writes its report as it ends
    assert text.count("# data.n_train=") == 4 and " n=2 " not in text  # one run per cell: nothing pooled
