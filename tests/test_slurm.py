"""hydra/launcher=slurm against a real Slurm (scripts/slurm-local starts one; CI does)."""

import json
import shutil
import subprocess

import pytest

from conftest import SMALL, pause_at, run_cli, start_paused

FOUR_EPOCHS = (*SMALL, "trainer.max_epochs=4")


def slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return done.returncode == 0 and any(s in done.stdout for s in ("idle", "mixed", "allocated"))


pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm"),
              pytest.mark.skipif(not slurm_answers(), reason="no Slurm answers here (start one: scripts/slurm-local)")]
SLURM = ("-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2")


def test_a_two_job_sweep_through_slurm(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli(*SLURM, "model=return_state,both_outputs", *FOUR_EPOCHS, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert sorted(r["model"] for r in results) == ["both_outputs", "return_state"]
    assert all(r["status"] == "ok" and r["epochs_run"] == 4 for r in results)
    assert list((sweep / ".submitit").iterdir())  # it really went through submitit's Slurm executor


@pytest.mark.slow
def test_a_job_requeued_mid_training_continues_from_its_checkpoint(tmp_path):
    """`scontrol requeue` kills the running job and queues it again; Slurm holds it about 2 minutes."""
    alone = run_cli("model=both_outputs", *FOUR_EPOCHS, f"hydra.run.dir={tmp_path / 'alone'}")
    assert alone.returncode == 0, alone.stderr[-3000:]
    sweep, marker = tmp_path / "sweep", tmp_path / "paused"
    pause = pause_at(2, marker)
    sweep_process = start_paused([*SLURM, "model=both_outputs", *FOUR_EPOCHS, *pause, f"hydra.sweep.dir={sweep}"],
                                 marker, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    job_ids = [p.name for p in (sweep / ".submitit").iterdir() if p.is_dir()]  # submitit's folder per job: its id
    assert len(job_ids) == 1, job_ids
    job_id = job_ids[0]
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # after exactly 2 epochs
    output, _ = sweep_process.communicate(timeout=600)
    assert sweep_process.returncode == 0, output[-3000:]
    job_dir = next(sweep.glob("0_*"))
    results = json.loads((job_dir / "results.json").read_text())
    expected = json.loads((tmp_path / "alone" / "results.json").read_text())
    assert results["status"] == "ok" and results["resumed"] is True and results["epochs_run"] == 4
    for key in ("val_loss", "test_acc", "train_acc", "test_loss"):
        assert results[key] == expected[key], key
    log = (job_dir / "train.log").read_text()
    assert "resuming from epoch 2" in log
    assert "took over the lock of a process that is gone" in log  # its own earlier self, killed by the requeue
    assert sorted(p.name for p in (job_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.slow
def test_a_packed_sweep_is_a_slurm_job_per_pack_and_a_requeued_pack_continues_every_member(tmp_path):
    """hydra/launcher=packed_slurm: two cells of 3 seeds are 2 Slurm jobs (one array). One is requeued
    (`scontrol requeue`) mid-training: every member ends equal to the same packs trained without a break,
    with one set of TensorBoard steps and one MLflow run each; the sweep run again skips every member."""
    import sys
    import time

    import torch
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import ROOT

    epochs = 60
    line = ("model=both_outputs,return_state", "seed=0,1,2", *SMALL, "data.n_train=1000",
            f"trainer.max_epochs={epochs}", "logger=[tensorboard,mlflow]", f"paths.tracking_dir={tmp_path / 'outputs'}")
    whole = run_cli("-m", "hydra/launcher=packed", "hydra.launcher.n_jobs=1", *line,
                    f"hydra.sweep.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    sweep = tmp_path / "sweep"
    packed_slurm = ("-m", "hydra/launcher=packed_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
                    *line, f"hydra.sweep.dir={sweep}")
    process = subprocess.Popen([sys.executable, "-m", "seqrev.train", *packed_slurm], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:  # both_outputs' pack (the array's first element) has 2 epochs on disk
        saved = [torch.load(p, weights_only=True)["epoch"] for p in sweep.glob("0_*/checkpoints/last.ckpt")]
        if saved and 1 <= saved[0] < epochs - 10:
            break
        time.sleep(0.05)
    tasks = sorted(p.name for p in (sweep / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    assert len(tasks) == 2, tasks  # one Slurm job per pack
    subprocess.run(["scontrol", "requeue", tasks[0]], check=True)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    assert "6 jobs as 2 packs (3, 3 jobs each) and 0 ordinary jobs, as 2 Slurm jobs" in output
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}
    expected = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "whole").glob("*/results.json")}
    assert results.keys() == expected.keys() and len(results) == 6
    assert sum(r["resumed"] for r in results.values()) == 3  # the requeued pack's members
    for name, result in results.items():
        for key in ("val_loss", "test_acc", "train_acc", "test_loss", "epochs_run"):
            assert result[key] == pytest.approx(expected[name][key], abs=1e-6), (name, key)
        steps = [e.step for e in EventAccumulator(str(sweep / name)).Reload().Scalars("val/loss")]
        assert steps == list(range(epochs)), name
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert sorted(run.info.run_name for run in runs) == sorted(results)  # one tracker run per member
    again = run_cli(*packed_slurm)
    assert again.returncode == 0 and "0 done, 0 failed, 6 skipped" in again.stdout, again.stdout[-3000:]
    assert {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")} == results


def slurm_jobs_submitted(sweep) -> set[str]:
    """The Slurm jobs submitit made for a sweep: its folders under .submitit/, one per job (`5`) or array
    element (`3_0`), and one for an array itself (`3`)."""
    folder = sweep / ".submitit"
    return {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()


def test_a_finished_packed_slurm_sweep_run_again_submits_nothing_and_an_interrupted_member_alone(tmp_path):
    """Re-runs cost the cluster nothing: run again, a finished packed_slurm sweep submits no Slurm job (the
    launching process reads the folders); with one member marked interrupted, one Slurm job holds it alone.
    The sweeper still gets every job's value."""
    sweep = tmp_path / "sweep"
    line = ("-m", "hydra/launcher=packed_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
            "model=return_state,both_outputs", "seed=0,1,2", *SMALL, "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}")
    first = run_cli(*line)
    assert first.returncode == 0, first.stderr[-3000:]
    submitted = slurm_jobs_submitted(sweep)
    assert len({name for name in submitted if "_" in name}) == 2, submitted  # one Slurm job per pack
    again = run_cli(*line)
    assert again.returncode == 0, again.stderr[-3000:]
    assert slurm_jobs_submitted(sweep) == submitted  # nothing new asked of Slurm
    assert "slurm: all 6 jobs finished before: nothing to submit" in again.stdout
    assert again.stdout.count(": skipped (finished)") == 6 and "0 done, 0 failed, 6 skipped" in again.stdout
    member = next(sweep.glob("4_*"))
    results = json.loads((member / "results.json").read_text())
    (member / "results.json").write_text(json.dumps({**{k: results[k] for k in ("model", "seed", "run_dir")},
                                                     "status": "interrupted"}))
    third = run_cli(*line)
    assert third.returncode == 0, third.stderr[-3000:]
    new = slurm_jobs_submitted(sweep) - submitted
    assert len(new) == 1 and "_" not in next(iter(new)), new  # one Slurm job, holding the interrupted member alone
    assert "1 jobs as 0 packs and 1 ordinary jobs, as 1 Slurm jobs (5 finished before, not submitted)" in third.stdout
    assert json.loads((member / "results.json").read_text())["status"] == "ok"
    assert "1 done, 0 failed, 5 skipped" in third.stdout


def test_a_finished_slurm_sweep_run_again_submits_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    line = (*SLURM, "model=return_state,both_outputs", *SMALL, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}")
    assert run_cli(*line).returncode == 0
    submitted = slurm_jobs_submitted(sweep)
    again = run_cli(*line)
    assert again.returncode == 0, again.stderr[-3000:]
    assert slurm_jobs_submitted(sweep) == submitted and "nothing to submit" in again.stdout
    assert "0 done, 0 failed, 2 skipped" in again.stdout
