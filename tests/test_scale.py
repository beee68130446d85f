"""Beyond one machine: submitit, GPU options and single-run DDP on CPU."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from seqrev.run import train

from conftest import CONF, ROOT, compose_config, run_cli


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
        overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1",
                     "hydra.launcher.timeout_min=30"]
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from omegaconf import OmegaConf

    launcher = cfg.hydra.launcher
    # every key seqrev's slurm.yaml sets is one submitit's launcher takes (a misspelt one would be refused)
    OmegaConf.merge(OmegaConf.structured(SlurmQueueConf), OmegaConf.to_container(launcher, resolve=False))
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 30)
    assert OmegaConf.to_container(launcher)["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"  # in the sweep
    assert launcher.max_num_timeout > 0  # a job at its time limit is requeued (tests/test_slurm.py)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_one_model(tmp_path):
    """2 processes x batch 16 average their gradients at every optimiser step (several per Lightning call
    here), so they train the same model as 1 process x batch 32; evaluation scores every pair once."""
    # Odd validation and test sizes: a sharding that dropped the odd pair out would change the scores.
    data = ["trainer.max_epochs=2", "data.n_train=411", "data.n_test=201", "data.steps_per_call=3"]
    probe = ["+callbacks.weights._target_=probes.SaveWeightsPerRank"]
    env = {"PYTHONPATH": str(ROOT / "tests")}
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    done = run_cli("trainer=ddp", "data.batch_size=16", *data, *probe, f"+callbacks.weights.dirpath={ddp / 'w'}",
                   f"hydra.run.dir={ddp}", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stdout + done.stderr
    done = run_cli("trainer=cpu", "data.batch_size=32", *data, *probe, f"+callbacks.weights.dirpath={one / 'w'}",
                   f"hydra.run.dir={one}", env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0, rank1, single = (weights(p) for p in (ddp / "w/weights_rank0.pt", ddp / "w/weights_rank1.pt",
                                                 one / "w/weights_rank0.pt"))
    for name in single:
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between the two processes"
        assert torch.allclose(rank0[name], single[name], atol=1e-5), f"{name}: 2 x 16 is not 1 x 32"
    results = {name: json.loads((d / "results.json").read_text()) for name, d in (("ddp", ddp), ("one", one))}
    for key in ("val_loss", "val_acc", "test_acc", "test_seq_acc", "test_loss", "train_acc", "epochs_run"):
        assert results["ddp"][key] == pytest.approx(results["one"][key], abs=1e-5), key

    writers = {p.name.split(".")[-2] for p in ddp.glob("events.out.tfevents.*")}
    assert len(writers) == 1  # one process (rank 0) wrote every event file: one TensorBoard run
    assert (ddp / "checkpoints" / "last.ckpt").exists()
    assert (ddp / "train_ddp_process_1.log").is_file()  # the second process ran, in the same run folder


def test_ddp_is_refused_in_a_sweep(seqrev_train):
    done = seqrev_train("-m", "trainer=ddp", "model=return_state,both_outputs")
    assert done.returncode == 2
    assert "trainer=ddp is for a single run and cannot be combined with -m" in done.stderr
    assert "Traceback" not in done.stderr


def test_ddp_config_shards_by_process(tmp_path):
    cfg = compose_config("trainer=ddp", output_dir=tmp_path)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2
    from seqrev.data import Batches
    rows = torch.arange(10)
    shards = [list(Batches(rows, rows, 2, rank=r, world_size=3)) for r in range(3)]
    seen = [[int(v) for x, _ in shard for v in x] for shard in shards]
    assert [len(s) for s in seen] == [3, 3, 3]  # equal steps on every rank
    assert sorted(sum(seen, [])) == list(range(9)) and seen[0] == [0, 3, 6]


@pytest.mark.parametrize("n_rows", [1, 7, 10, 11])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_evaluation_shards_score_every_pair_exactly_once(n_rows, world_size):
    from seqrev.data import Batches
    rows = torch.arange(n_rows)
    seen = [int(v) for r in range(world_size)
            for x, _ in Batches(rows, rows, 4, rank=r, world_size=world_size, equal_shards=False) for v in x]
    assert sorted(seen) == list(range(n_rows))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_with_bf16_learns_and_repeats(tmp_path):
    runs = [train(compose_config("trainer=gpu", "trainer.precision=bf16-mixed", "trainer.max_epochs=30",
                                 output_dir=tmp_path / str(i))) for i in range(2)]
    assert runs[0]["test_acc"] > 0.5  # well above the mode baseline (0.19 at T=4)
    assert runs[0]["val_loss"] == runs[1]["val_loss"]  # deterministic=true on the GPU: repeats exactly


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the no-CUDA preflight")
def test_gpu_check_says_in_one_sentence_that_there_is_no_gpu(monkeypatch, capsys):
    import runpy
    import sys

    script = runpy.run_path(str(ROOT / "scripts" / "gpu-check"), run_name="gpu_check")
    monkeypatch.setattr(sys, "argv", ["gpu-check"])
    assert script["main"]() == 0
    out, err = capsys.readouterr()
    assert out.strip().count("\n") == 0 and "no CUDA GPU" in out and err == ""


GPU_CHECK_REFUSALS = [
    (["--packs", "--device", "cpu", "--sizes", "0,-3"], "argument --sizes: '0,-3' is not allowed: give pack sizes as "
                                                         "whole numbers of at least 1"),
    (["--packs", "--device", "cpu", "--sizes", "2,x"], "argument --sizes: '2,x' is not allowed"),
    (["--packs", "--device", "cpu", "data.timesteps=0"], "data.timesteps=0 is not allowed"),
    (["--packs", "--device", "cpu", "data.timestep=4"], "`data.timestep` is not a setting of data=reversed"),
    (["--packs", "--device", "cpu", "--out", "/no/such/folder/x.json"], "there is no folder /no/such/folder"),
    (["--device", "cpu"], "--device cpu goes with --packs"),
]


@pytest.mark.parametrize("args,sentence", GPU_CHECK_REFUSALS, ids=[" ".join(a) for a, _ in GPU_CHECK_REFUSALS])
def test_gpu_check_refuses_bad_arguments_in_one_sentence_before_any_work(args, sentence, monkeypatch, capsys):
    import runpy
    import sys

    script = runpy.run_path(str(ROOT / "scripts" / "gpu-check"), run_name="gpu_check")
    monkeypatch.setattr(sys, "argv", ["gpu-check", *args])
    with pytest.raises(SystemExit) as exit:
        script["main"]()
    out, err = capsys.readouterr()
    assert exit.value.code == 2 and out == "" and err.count("\n") == 1 and err.startswith("gpu-check: "), err
    assert sentence in err


@pytest.mark.slow
def test_gpu_checks_packs_table_runs_on_the_cpu_with_members_equal_to_their_own_runs(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "packs.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu-check"), "--packs", "--device", "cpu",
                           "--sizes", "2,6", "--out", str(out), "data.n_train=300"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [(r["members"], r["layout"]) for r in rows] == [(2, "stacked"), (2, "wide"), (6, "stacked"), (6, "wide")]
    assert all(r["members_equal_alone"] and r["peak_mb"] is None and r["host_syncs_per_step"] is None for r in rows)
    assert all(r["ms_per_model_step"] > 0 and r["vs_one_model"] > 0 and r["vs_plain_loop"] > 0 for r in rows)
    assert rows[2]["estimate_mb"] == pytest.approx(3 * rows[0]["estimate_mb"])  # one member's estimate, times K
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(rows) and all(line.endswith("| yes |") for line in table[2:])
