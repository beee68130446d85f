"""Beyond one machine: submitit, GPU options and single-run DDP on CPU."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import CONF, compose_config, run_cli
from seqrev.train import train


@pytest.mark.slow
def test_a_two_job_sweep_through_submitit_local(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", "hydra/launcher=submitit_local", "model=return_state,both_outputs", "trainer.max_epochs=1",
                   "data.n_train=200", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = sorted(json.loads(p.read_text())["model"] for p in sweep.glob("*/results.json"))
    assert results == ["both_outputs", "return_state"]
    assert all(json.loads(p.read_text())["status"] == "ok" for p in sweep.glob("*/results.json"))


def test_slurm_launcher_has_seqrev_defaults_and_takes_overrides():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                                      "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=30"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 30)
    assert launcher.tasks_per_node == 1 and launcher.cpus_per_task == 2 and launcher.array_parallelism == 64


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_run(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli("trainer=ddp", "trainer.max_epochs=2", "data.n_train=400", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stdout + done.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["epochs_run"] == 2
    writers = {p.name.split(".")[-2] for p in run_dir.glob("events.out.tfevents.*")}
    assert len(writers) == 1  # one process (rank 0) wrote every event file: one TensorBoard run
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "train_ddp_process_1.log").is_file()  # the second process ran, in the same run folder


def test_ddp_is_refused_in_a_sweep():
    done = run_cli("-m", "trainer=ddp", "model=return_state,both_outputs")
    assert done.returncode == 2
    assert "trainer=ddp is for a single run and cannot be combined with -m" in done.stderr
    assert "Traceback" not in done.stderr


def test_ddp_config_shards_by_process_and_steps_once_per_call(tmp_path):
    cfg = compose_config("trainer=ddp", output_dir=tmp_path)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2 and cfg.data.steps_per_call == 1
    from seqrev.data import BatchGroups
    rows = torch.arange(10)
    shards = [list(BatchGroups(rows, rows, 2, rank=r, world_size=3)) for r in range(3)]
    seen = [[int(v) for group in shard for x, _ in group for v in x] for shard in shards]
    assert [len(s) for s in seen] == [3, 3, 3]  # equal steps on every rank
    assert sorted(sum(seen, [])) == list(range(9)) and seen[0] == [0, 3, 6]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_with_bf16(tmp_path):
    results = train(compose_config("trainer=gpu", "trainer.precision=bf16-mixed", "trainer.max_epochs=2",
                                   output_dir=tmp_path))
    assert results["status"] == "ok"
