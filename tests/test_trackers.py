"""Trackers beside TensorBoard (logger=csv, mlflow, wandb, or several): a sweep's jobs land together, each
job a run named like its folder, with its settings, per-epoch metrics and the final results of its
results.json; a resumed job continues its tracker's run. Read back with each tool's own reader."""

import csv
import json
import sys
from pathlib import Path

import pytest

from conftest import SCORES, SMALL, job_logs

SWEEP = ("-m", "model=return_state,both_outputs", *SMALL, "trainer.max_epochs=2")
JOBS = ("0_model=return_state,timesteps=4,units=16,seed=0", "1_model=both_outputs,timesteps=4,units=16,seed=0")


def results_of(job: Path) -> dict:
    return json.loads((job / "results.json").read_text())


def kill_after_its_last_checkpoint(job: Path) -> dict:
    """The job folder as a kill just before its results were written leaves it; its results before."""
    finished = results_of(job)
    (job / "results.json").unlink()
    return finished


def test_a_tracker_whose_package_is_missing_is_one_sentence_before_anything_runs(tmp_path, seqrev_train,
                                                                                monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # how Python marks a module that cannot be imported
    done = seqrev_train("logger=[tensorboard,mlflow]", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2 and done.stderr.strip() == (
        "seqrev: logger=mlflow needs the mlflow package, which is not installed: pip install 'seqrev[mlflow]' "
        "(in a clone: pip install -e '.[mlflow]').")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_mlflow_keeps_a_sweep_in_one_experiment_in_a_local_database_and_resumed_jobs_continue(tmp_path,
                                                                                            seqrev_train):
    from mlflow import MlflowClient

    sweep = tmp_path / "sweep"
    line = (*SWEEP, "logger=[tensorboard,mlflow]", f"paths.tracking_dir={tmp_path / 'outputs'}",
            f"hydra.sweep.dir={sweep}")
    assert seqrev_train(*line).returncode == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep")  # named like the sweep's folder
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(JOBS)
    for name, run in runs.items():
        results = results_of(sweep / name)
        for key in SCORES:
            assert run.data.metrics[f"final/{key}"] == pytest.approx(results[key], rel=1e-6), key
        assert run.data.params["model"] == results["model"]
        assert run.data.params["data.n_train"] == "300" and run.data.params["model.optimizer._target_"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [0, 1]
        assert run.info.status == "FINISHED"

    killed = sweep / JOBS[1]
    kill_after_its_last_checkpoint(killed)
    again = seqrev_train(*line)
    assert again.returncode == 0 and "resuming from epoch 2" in job_logs(sweep)
    after = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(after) == sorted(JOBS)  # no second run for the resumed job
    assert after[JOBS[1]].info.run_id == runs[JOBS[1]].info.run_id
    assert json.loads((killed / "trackers.json").read_text())["mlflow"] == runs[JOBS[1]].info.run_id
    assert after[JOBS[1]].data.metrics["final/test_acc"] == pytest.approx(results_of(killed)["test_acc"], rel=1e-6)


def wandb_records(path: Path):
    """The records of a W&B run file, decoded with wandb's own protobuf `Record`. wandb 0.31 no longer
    ships a Python reader for its run files; their framing is LevelDB's log format (32 KiB blocks of
    records, each a 7-byte header: checksum, length, type) after a 7-byte `:W&B` header."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, position, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def items(records: list, kind: str) -> list[dict]:
    """Each record of one kind (config, history, summary) as {key: value}; W&B keeps a key either in
    `key` or, split at dots, in `nested_key`."""
    found = []
    for record in records:
        if record.WhichOneof("record_type") == kind:
            entries = getattr(record, kind)
            entries = entries.item if kind == "history" else entries.update
            found.append({item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in entries})
    return found


@pytest.mark.slow
def test_wandb_runs_offline_grouped_by_sweep_and_a_resumed_job_keeps_its_run_id(tmp_path, seqrev_train):
    sweep = tmp_path / "sweep"
    line = (*SWEEP, "logger=[tensorboard,wandb]", f"hydra.sweep.dir={sweep}")
    assert seqrev_train(*line).returncode == 0
    for name in JOBS:
        job = sweep / name
        run_id = json.loads((job / "trackers.json").read_text())["wandb"]
        [files] = job.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")  # offline: files only
        records = list(wandb_records(files))
        [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert (run.run_id, run.display_name, run.run_group, run.project) == (run_id, name, "sweep", "seqrev")
        config = {k: v for update in items(records, "config") for k, v in update.items()}
        assert config["data.n_train"] == 300 and config["model"] == name.split(",")[0].split("=")[1]
        history = items(records, "history")
        assert [h["epoch"] for h in history if "val/loss" in h] == [0, 1]
        summary = {k: v for update in items(records, "summary") for k, v in update.items()}
        for key in SCORES:
            assert summary[f"final/{key}"] == pytest.approx(results_of(job)[key], rel=1e-6), key

    killed = sweep / JOBS[1]
    run_id = json.loads((killed / "trackers.json").read_text())["wandb"]
    kill_after_its_last_checkpoint(killed)
    assert seqrev_train(*line).returncode == 0
    assert json.loads((killed / "trackers.json").read_text())["wandb"] == run_id
    # the same run, continued: W&B names a start's folder by its second, so one or two folders, one run id
    starts = sorted(killed.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"), key=lambda p: p.stat().st_mtime)
    assert starts and not set(killed.glob("wandb/offline-run-*")) - {p.parent for p in starts}
    records = list(wandb_records(starts[-1]))
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs and {run.run_id for run in runs} == {run_id}
    summary = {k: v for update in items(records, "summary") for k, v in update.items()}
    assert summary["final/test_acc"] == pytest.approx(results_of(killed)["test_acc"], rel=1e-6)
    assert results_of(killed)["resumed"] is True


def test_csv_gives_each_job_its_own_folder_of_metrics_with_the_final_results(tmp_path, seqrev_train):
    sweep = tmp_path / "sweep"
    assert seqrev_train(*SWEEP, "logger=[tensorboard,csv]", f"hydra.sweep.dir={sweep}").returncode == 0
    for name in JOBS:
        rows = list(csv.DictReader(open(sweep / name / "csv" / "metrics.csv")))
        assert sorted({int(row["epoch"]) for row in rows if row["val/loss"]}) == [0, 1]
        [final] = [row for row in rows if row["final/test_acc"]]
        results = results_of(sweep / name)
        for key in SCORES:
            assert float(final[f"final/{key}"]) == pytest.approx(results[key], rel=1e-6), key
        assert "data.n_train: 300" in (sweep / name / "csv" / "hparams.yaml").read_text()


def test_a_resumed_run_continues_the_tracker_runs_it_started(tmp_path):
    """In process: the MLflow run a run started is recorded in its folder (trackers.json) and a resumed run's
    logger continues that run, rather than starting another."""
    from omegaconf import OmegaConf

    from seqrev import trackers

    from conftest import compose_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = compose_config("logger=[tensorboard,mlflow]", f"paths.tracking_dir={tmp_path / 'outputs'}",
                         output_dir=run_dir)
    OmegaConf.update(cfg, "logger.mlflow.experiment_name", "resumed", force_add=True)
    first = trackers.make_loggers(cfg, run_dir, resuming=False)
    trackers.record_ids(first, run_dir)
    started = first["mlflow"].run_id
    assert json.loads((run_dir / "trackers.json").read_text()) == {"mlflow": started}
    trackers.close(list(first.values()), failed=False)
    again = trackers.make_loggers(cfg, run_dir, resuming=True)
    assert again["mlflow"].run_id == started
    fresh = trackers.make_loggers(cfg, tmp_path, resuming=False)  # another run: another tracker run
    assert fresh["mlflow"].run_id != started
    for loggers in (again, fresh):
        trackers.close(list(loggers.values()), failed=False)


def test_jobs_starting_together_share_the_sweeps_mlflow_experiment_the_other_made_first(tmp_path):
    """The race of two jobs starting at once: this one looked for the experiment before the other created
    it, so its own creation fails; it records its run in the other's experiment, not a failure."""
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

    from seqrev.trackers import record_ids

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    other = MlflowClient(uri).create_experiment("sweep")  # the other job's, made meanwhile
    logger = MLFlowLogger(experiment_name="sweep", tracking_uri=uri)
    looked = logger._mlflow_client.get_experiment_by_name
    calls = []
    logger._mlflow_client.get_experiment_by_name = lambda name: calls.append(name) or (
        None if len(calls) == 1 else looked(name))  # the first look came before the other job's creation
    (tmp_path / "run").mkdir()
    record_ids({"mlflow": logger}, tmp_path / "run")
    run = MlflowClient(uri).get_run(json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"])
    assert run.info.experiment_id == other and len(calls) == 2
