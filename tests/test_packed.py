"""hydra/launcher=packed: seeds of one cell trained as one model, each member the job it would be alone."""

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from seqrev.engines import Job, choose
from seqrev.models import WIRINGS
from seqrev.packs.launcher import cell_of, pack_key
from seqrev.packs.layers import member_state_dicts, pack_models, repack, rows_in, rows_out, split_like
from seqrev.packs.recipe import Member, PackRun, train_pack
from seqrev.results import describe

from conftest import MODELS, SCORES, SMALL, TINY, compose_config

PACKED = ("-m", "hydra/launcher=packed", "hydra.launcher.n_jobs=1")
"""A packed sweep in this process: the packs run one after another, here."""


def refusal(cfg, model_name: str) -> str | None:
    """Why the packed launcher runs this job as an ordinary job; None when a pack trains it."""
    choice = choose(Job(cfg, model_name), packing=True)
    return None if choice.engine == "packed" else choice.reason


def job_results(sweep: Path) -> dict[str, dict]:
    """results.json of every job folder, by the folder's name without its job number."""
    return {p.parent.name.split("_", 1)[1]: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


def weights(job_dir: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return torch.load(job_dir / "checkpoints" / f"{name}.ckpt", weights_only=True)["state_dict"]


def farthest(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[key] - b[key]).abs().max().item() for key in a)


@pytest.mark.parametrize("layout", ["stacked", "wide"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("wiring", MODELS)
def test_a_packed_model_computes_each_members_outputs_and_gradients(wiring, cell, layout):
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(WIRINGS[wiring](n_features=10, timesteps=5, units=8, cell=cell, init="torch"))
    packed = pack_models(models, layout)
    inputs = torch.nn.functional.one_hot(torch.randint(0, 10, (3, 6, 5)), 10).float()
    outputs = rows_out(packed(rows_in(inputs, layout)), 3, layout)
    alone = torch.stack([model(inputs[k]) for k, model in enumerate(models)])
    assert (outputs - alone).abs().max() < 1e-6
    outputs.square().sum().backward()
    alone.square().sum().backward()
    parameters = dict(packed.named_parameters())
    for k, model in enumerate(models):
        for name, parameter in model.named_parameters():
            grad = parameters[name].grad
            if parameter.requires_grad:
                assert torch.allclose(split_like(packed, parameters[name], grad)[k], parameter.grad, atol=1e-5,
                                      rtol=1e-4), (name, k)
            else:  # the frozen second bias of an LSTM or RNN layer stays frozen, at zero
                assert grad is None and not member_state_dicts(packed)[k][name].any()
        assert farthest(member_state_dicts(packed)[k], model.state_dict()) == 0
    if layout == "wide":  # what lies off the members' blocks gets no gradient, so it stays zero
        weight = packed.layer1.weight_hh_l0
        blocks = packed.layer1.join("weight_hh_l0", [torch.ones_like(w) for w in packed.layer1.split("weight_hh_l0",
                                                                                                         weight)])
        off_blocks = weight.grad * (blocks == 0)
        assert weight.grad.abs().sum() > 0 and not off_blocks.any()


@pytest.mark.parametrize(("before", "after"), [("stacked", "stacked"), ("wide", "wide"), ("wide", "stacked"),
                                               ("stacked", "wide")])
def test_a_pack_repacks_to_the_members_that_stay_with_their_weights(before, after):
    models = [WIRINGS["both_outputs"](n_features=10, timesteps=4, units=8) for _ in range(4)]
    packed = pack_models(models, before)
    repack(packed, [3, 1], after)
    for k, kept in enumerate([3, 1]):
        assert farthest(member_state_dicts(packed)[k], models[kept].state_dict()) == 0
    inputs = torch.rand(2, 5, 4, 10)
    outputs = rows_out(packed(rows_in(inputs, after)), 2, after)
    assert torch.allclose(outputs[0], models[3](inputs[0]), atol=1e-6)
    assert torch.allclose(outputs[1], models[1](inputs[1]), atol=1e-6)


def members(tmp_path: Path, seeds, *overrides: str, model: str = "both_outputs") -> list[Member]:
    """Pack members as the launcher makes them, from seqrev's composed config, each in its own folder."""
    found = []
    for seed in seeds:
        cfg = compose_config(f"model={model}", f"seed={seed}", *overrides, output_dir=tmp_path / f"seed{seed}")
        (tmp_path / f"seed{seed}").mkdir()
        found.append(Member(cfg, model, describe(cfg, model)))
    return found


def ordinary(tmp_path: Path, seed: int, *overrides: str, model: str = "both_outputs") -> Path:
    """The same job run alone, by seqrev.run.train, in its own folder."""
    from seqrev.run import train

    cfg = compose_config(f"model={model}", f"seed={seed}", *overrides, output_dir=tmp_path / f"alone-{seed}")
    return Path(train(cfg, model)["run_dir"])


def test_members_start_from_their_own_seeds_weights_and_after_an_epoch_agree_with_their_jobs(tmp_path):
    from hydra.utils import instantiate
    from lightning.pytorch import seed_everything

    one_epoch = (*TINY, "trainer.max_epochs=1")
    pack = members(tmp_path, [3, 4, 5], *one_epoch)
    run = PackRun(pack)
    run.setup()
    for k, member in enumerate(pack):
        seed_everything(member.cfg.seed, verbose=False)
        instantiate(member.cfg.data)
        own = instantiate(member.cfg.model)
        assert farthest(member_state_dicts(run.pack.model)[k], own.state_dict()) == 0  # identical, bit for bit
    run.train()
    run.cleanup()
    for member in pack:
        alone = ordinary(tmp_path, member.cfg.seed, *one_epoch)
        assert farthest(weights(member.run_dir), weights(alone)) < 1e-5  # the same batches, in the same order
        assert member.results["val_loss"] == pytest.approx(json.loads((alone / "results.json").read_text())["val_loss"],
                                                           abs=1e-5)


def test_each_member_stops_early_on_its_own_as_its_job_does(tmp_path, seqrev_train):
    """Patience 1 on tiny data: seeds stop at different epochs, each where its own job stops."""
    settings = (*TINY, "callbacks.early_stopping.patience=1", "trainer.max_epochs=25", "model.optimizer.lr=0.02")
    sweep = tmp_path / "packed"
    done = seqrev_train(*PACKED, "seed=0,1,2,3", *settings, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "jobs as 1 packs (4 jobs each)" in done.stdout
    packed = job_results(sweep)
    alone = seqrev_train("-m", "seed=0,1,2,3", *settings, f"hydra.sweep.dir={tmp_path / 'alone'}")
    assert alone.returncode == 0
    for name, results in job_results(tmp_path / "alone").items():
        member = packed[name]
        assert member["status"] == "ok" and member["epochs_run"] == results["epochs_run"], name
        assert member["stopped_early"] == results["stopped_early"]
        for key in SCORES:
            assert member[key] == pytest.approx(results[key], abs=2e-3), (name, key)
    assert len({r["epochs_run"] for r in packed.values()}) > 1  # the members really did stop apart
    assert any(r["stopped_early"] for r in packed.values())


@pytest.mark.parametrize(("units", "layout"), [(16, "wide"), (64, "stacked")])
def test_a_member_that_diverges_fails_alone_and_the_others_finish(tmp_path, units, layout, caplog):
    caplog.set_level(logging.INFO, logger="seqrev")
    pack = members(tmp_path, [0, 1, 2], *SMALL, "trainer.max_epochs=3", f"model.units={units}")
    run = PackRun(pack)
    run.setup()
    assert run.pack.layout == layout
    dense = run.pack.model.output_layer
    with torch.no_grad():  # member 1's loss is not finite from its first batch
        weights_of = dense.split("weight", dense.weight.detach().clone())
        weights_of[1] = weights_of[1] + math.inf
        dense.weight.copy_(dense.join("weight", weights_of))
    run.train()
    run.cleanup()
    statuses = {m.cfg.seed: json.loads((m.run_dir / "results.json").read_text()) for m in pack}
    assert statuses[1]["status"] == "failed" and "training diverged at epoch 0" in statuses[1]["error"]
    for seed in (0, 2):
        assert statuses[seed]["status"] == "ok" and statuses[seed]["epochs_run"] == 3
        assert all(torch.isfinite(t).all() for t in weights(pack[seed].run_dir).values())
    assert ("goes on in the stacked layout" in caplog.text) == (layout == "wide")
    alone = ordinary(tmp_path, 2, *SMALL, "trainer.max_epochs=3", f"model.units={units}")  # as if 1 never was
    assert farthest(weights(pack[2].run_dir), weights(alone)) < 1e-5


def test_a_killed_pack_resumes_from_its_members_checkpoints_to_the_uninterrupted_numbers(tmp_path, seqrev_train,
                                                                                          monkeypatch):
    settings = (*SMALL, "trainer.max_epochs=4", "seed=0,1", "model.cell=gru")
    whole = seqrev_train(*PACKED, *settings, f"hydra.sweep.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    end_epoch = PackRun._end_epoch

    def killed_after_epoch_two(self, epoch, *scores):
        finished = end_epoch(self, epoch, *scores)
        if epoch == 1:
            raise KeyboardInterrupt  # after epoch 2's checkpoints, as a kill would find them
        return finished

    monkeypatch.setattr(PackRun, "_end_epoch", killed_after_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        seqrev_train(*PACKED, *settings, f"hydra.sweep.dir={tmp_path / 'killed'}")
    interrupted = job_results(tmp_path / "killed")
    assert {r["status"] for r in interrupted.values()} == {"interrupted"}
    assert {r["epochs_run"] for r in interrupted.values()} == {2}
    for member in (tmp_path / "killed").glob("[01]_*"):  # each member's log says how to continue it
        assert (f"interrupted: the last checkpoint is {member / 'checkpoints' / 'last.ckpt'}; continue with: "
                f"python -m seqrev.train resume={member}") in (member / "train.log").read_text()
    monkeypatch.setattr(PackRun, "_end_epoch", end_epoch)
    again = seqrev_train(*PACKED, *settings, f"hydra.sweep.dir={tmp_path / 'killed'}")
    assert again.returncode == 0, again.stderr[-3000:]
    resumed, uninterrupted = job_results(tmp_path / "killed"), job_results(tmp_path / "whole")
    assert resumed.keys() == uninterrupted.keys() and len(resumed) == 2
    for name, results in uninterrupted.items():
        assert resumed[name]["resumed"] is True and resumed[name]["epochs_run"] == 4
        for key in SCORES:
            assert resumed[name][key] == pytest.approx(results[key], abs=1e-6), (name, key)
        assert "resuming from epoch 2" in (tmp_path / "killed" / f"{'0' if name.endswith('seed=0') else '1'}_{name}"
                                           / "train.log").read_text()


RETURN_STATE_TWO_EPOCHS = (*SMALL, "trainer.max_epochs=2", "model=return_state")


@pytest.fixture(scope="session")
def packed_return_state(shared_runs) -> Path:
    """return_state's seeds 0 and 1 (SMALL data, 2 epochs) as a packed sweep, once per test session."""
    from conftest import train_in_process

    def make(folder: Path) -> None:
        assert train_in_process(*PACKED, "seed=0,1", *RETURN_STATE_TWO_EPOCHS, f"hydra.sweep.dir={folder}") == 0

    return shared_runs("packed_return_state", make)


@pytest.fixture(scope="session")
def return_state_seed_0(shared_runs) -> Path:
    """The same job as the packed sweep's seed 0, run alone, once per test session."""
    settings = RETURN_STATE_TWO_EPOCHS[:-1]  # the model given by name
    return shared_runs("return_state_seed_0", lambda folder: ordinary_into(folder, 0, *settings, model="return_state"))


def ordinary_into(folder: Path, seed: int, *overrides: str, model: str = "both_outputs") -> Path:
    from seqrev.run import train

    cfg = compose_config(f"model={model}", f"seed={seed}", *overrides, output_dir=folder)
    return Path(train(cfg, model)["run_dir"])


def test_a_packed_jobs_folder_serves_report_load_tensorboard_and_continuation(tmp_path, seqrev_train,
                                                                              packed_return_state):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import seqrev
    from seqrev.report import gather

    from conftest import copy_of

    sweep = copy_of(packed_return_state, tmp_path / "sweep")
    job = next(sweep.glob("0_*"))
    assert {p.name for p in (job / ".hydra").iterdir()} == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    results = json.loads((job / "results.json").read_text())
    assert results["status"] == "ok" and results["model"] == "return_state" and results["seed"] == 0
    model = seqrev.load(job)
    assert type(model).name == "return_state" and model.trainable_params == results["trainable_params"]
    events = EventAccumulator(str(job))
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [0, 1]
    assert events.Scalars("val/loss")[-1].value == pytest.approx(results["val_loss"], abs=1e-6)
    assert events.Scalars("test/acc")[-1].value == pytest.approx(results["test_acc"], abs=1e-6)
    runs, _ = gather([sweep])
    assert len(runs) == 2
    again = seqrev_train(*PACKED, "seed=0,1", *RETURN_STATE_TWO_EPOCHS, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0 and again.stdout.count("skipped (finished)") == 2


def test_jobs_that_cannot_be_packed_run_as_ordinary_jobs_and_the_console_says_why(tmp_path, seqrev_train):
    sweep = tmp_path / "sweep"
    done = seqrev_train(*PACKED, "model=both_outputs,encoder_decoder", "seed=0,1", *SMALL, "trainer.max_epochs=1",
                        f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line for line in done.stdout.splitlines() if "runs as an ordinary job" in line]
    assert len(said) == 2 and all("model=encoder_decoder is not one of the tutorial's five wirings" in s for s in said)
    assert {r["status"] for r in job_results(sweep).values()} == {"ok"}
    logs = {p.parent.name: p.read_text() for p in sweep.glob("*/train.log")}
    assert sum("trained in a pack of 2" in text for text in logs.values()) == 2


@pytest.mark.parametrize(("override", "reason"), [
    ("model=attention", "not one of the tutorial's five wirings"),
    ("scheduler=plateau", "ReduceLROnPlateau"),
    ("trainer.max_steps=10", "trainer.max_steps=10"),
    ("+trainer.min_epochs=20", "trainer.min_epochs=20"),
    ("+trainer.max_time=00:00:01:00", "trainer.max_time"),
    ("trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val"),
    ("trainer.precision=bf16-mixed", "trainer.precision"),
    ("+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor", "callbacks.lr"),
    ("callbacks.model_checkpoint.save_top_k=3", "save_top_k=3"),
    ("model.optimizer._target_=torch.optim.LBFGS", "torch.optim.LBFGS"),
])
def test_what_packs_cannot_reproduce_exactly_is_refused_in_a_few_words(override, reason):
    cfg = compose_config(override, output_dir=Path("/tmp/unused"))
    name = override.partition("=")[2] if override.startswith("model=") else "both_outputs"
    assert reason in refusal(cfg, name)


@pytest.mark.parametrize("override", ["optimizer=sgd", "scheduler=cosine", "model.cell=gru", "data.task=sort",
                                      "data.min_timesteps=2", "~callbacks.early_stopping", "logger=csv"])
def test_what_packs_reproduce_is_packed(override):
    assert refusal(compose_config(override, output_dir=Path("/tmp/unused")), "both_outputs") is None


def test_jobs_share_a_pack_exactly_when_they_differ_only_in_their_seeds():
    def key(*overrides: str) -> str:
        return pack_key(compose_config(*overrides, output_dir=Path(f"/tmp/{hash(overrides)}")), "both_outputs")

    assert key("seed=0") == key("seed=7") == key("seed=3", "data.seed=9")
    assert key("seed=0") != key("seed=0", "model.units=32")
    assert key("seed=0") != key("seed=0", "data.n_train=500")
    assert key("seed=0") != key("seed=0", "model.optimizer.lr=0.01")
    assert key("seed=0") != key("seed=0", "data.timesteps=8")
    assert key("seed=0", "model.units=${seed}") != key("seed=1", "model.units=${seed}")  # settings that follow it


def test_the_launcher_groups_a_sweeps_jobs_by_their_overrides_but_the_seed():
    assert cell_of(["model=both_outputs", "seed=0"]) == cell_of(["seed=1", "model=both_outputs"])
    assert cell_of(["+seed=0", "data.seed=4", "run_name=a"]) == cell_of(["+seed=1", "run_name=b"]) == ()
    assert cell_of(["model=both_outputs", "seed=0"]) != cell_of(["model=return_state", "seed=0"])
    assert cell_of(["model.units=16", "seed=0"]) != cell_of(["model.units=32", "seed=0"])
    assert cell_of(["data.seeds=1"]) != cell_of(["data.seeds=2"])  # only the seed itself


def test_a_pack_trains_padded_tasks_as_their_jobs_do(tmp_path):
    settings = (*SMALL, "trainer.max_epochs=2", "data.task=select_even", "data.timesteps=6", "data.min_timesteps=3")
    pack = members(tmp_path, [0, 1], *settings)
    train_pack(pack)
    for member in pack:
        alone = ordinary(tmp_path, member.cfg.seed, *settings)
        expected = json.loads((alone / "results.json").read_text())
        for key in SCORES:
            assert member.results[key] == pytest.approx(expected[key], abs=1e-5), key
        assert farthest(weights(member.run_dir), weights(alone)) < 1e-5


def test_packs_are_split_until_every_process_has_work_largest_first():
    from seqrev.packs.launcher import Unit, spread

    units = spread([Unit([(i, []) for i in range(30)], packed=True, weight=4.0),
                    Unit([(30, [])], packed=False, weight=4.0)], n_jobs=4)
    assert sorted(len(u.jobs) for u in units) == [1, 7, 8, 15]  # the 30-seed pack halved, then its larger half
    assert sorted(i for u in units for i, _ in u.jobs) == list(range(31))
    assert [len(u.jobs) for u in units][0] == 15  # the longest starts first
    assert len(spread([Unit([(0, [])], packed=False)] * 3, n_jobs=8)) == 3  # ordinary jobs are never split
    assert [len(u.jobs) for u in spread([Unit([(i, []) for i in range(30)], packed=True, whole=True)], n_jobs=4)] == [
        30]  # a GPU's pack: every seed, however many cores
    for members in (2, 3):  # a pack is split only into packs: two seeds stay one pack, whatever the cores
        assert [len(u.jobs) for u in spread([Unit([(i, []) for i in range(members)], packed=True)], n_jobs=8)] == [
            members]


def test_jobs_equal_as_written_but_not_once_resolved_are_trained_apart(tmp_path, seqrev_train):
    sweep = tmp_path / "sweep"
    done = seqrev_train(*PACKED, "seed=300,301", "data.n_train=${seed}", "trainer.max_epochs=1",
                        f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = job_results(sweep)
    assert {r["status"] for r in results.values()} == {"ok"} and len(results) == 2
    assert all("trained in a pack of 1" in p.read_text() for p in sweep.glob("*/train.log"))


def test_a_member_and_an_ordinary_job_fail_alike_through_the_one_lifecycle(tmp_path, seqrev_train, monkeypatch):
    """The same fault (a full disk at the first checkpoint) in a pack's member and in an ordinary sweep job:
    the same results.json and the same console line, but for where each job's folder is."""
    import errno

    import seqrev.checkpointing

    def full_disk(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(seqrev.checkpointing, "atomic_write", full_disk)
    settings = ("seed=0,1", *SMALL, "trainer.max_epochs=2")
    runs = {"packed": seqrev_train(*PACKED, *settings, f"hydra.sweep.dir={tmp_path / 'packed'}"),
            "ordinary": seqrev_train("-m", *settings, f"hydra.sweep.dir={tmp_path / 'ordinary'}")}
    assert "jobs as 1 packs (2 jobs each)" in runs["packed"].stdout

    def said(kind: str) -> list[str]:
        assert runs[kind].returncode == 0, runs[kind].stderr[-3000:]
        return sorted(line.replace(str(tmp_path / kind), "SWEEP").rpartition(" (")[0]
                      for line in runs[kind].stdout.splitlines() if line.startswith("job ") and ": failed: " in line)

    assert said("packed") == said("ordinary") and len(said("packed")) == 2
    assert "could not write SWEEP/0_model=both_outputs" in said("packed")[0]
    recorded = {kind: {name: json.loads(json.dumps(results).replace(str(tmp_path / kind), "SWEEP"))
                       for name, results in job_results(tmp_path / kind).items()} for kind in runs}
    assert recorded["packed"] == recorded["ordinary"] and len(recorded["packed"]) == 2
    assert {r["status"] for r in recorded["packed"].values()} == {"failed"}


def same_state(mine, theirs, my_dir: Path, their_dir: Path) -> bool:
    """Two callback states equal in structure and text (folders named alike), their numbers within 1e-5."""
    if torch.is_tensor(theirs):
        return torch.is_tensor(mine) and mine.shape == theirs.shape and torch.allclose(mine, theirs, rtol=0, atol=1e-5)
    if isinstance(theirs, float):
        return isinstance(mine, float) and mine == pytest.approx(theirs, abs=1e-5)
    if isinstance(theirs, dict):
        return isinstance(mine, dict) and mine.keys() == theirs.keys() and all(
            same_state(mine[k], theirs[k], my_dir, their_dir) for k in theirs)
    if isinstance(theirs, (list, tuple)):
        return type(mine) is type(theirs) and len(mine) == len(theirs) and all(
            same_state(a, b, my_dir, their_dir) for a, b in zip(mine, theirs))
    return str(mine).replace(str(my_dir), "RUN") == str(theirs).replace(str(their_dir), "RUN")


def test_a_members_checkpoint_is_laid_out_as_an_ordinary_runs_and_loads_the_same_ways(packed_return_state,
                                                                                       return_state_seed_0):
    import seqrev
    from seqrev.rundir import PACK_STATE

    alone, member = return_state_seed_0, next(packed_return_state.glob("0_*"))
    for name in ("best", "last"):
        theirs = torch.load(alone / "checkpoints" / f"{name}.ckpt", weights_only=True)
        ours = torch.load(member / "checkpoints" / f"{name}.ckpt", weights_only=True)
        assert set(ours) == set(theirs) - {"loops"} | {PACK_STATE}
        assert ours["callbacks"].keys() == theirs["callbacks"].keys()
        for key, state in theirs["callbacks"].items():  # the same state, in Lightning's own format
            assert ours["callbacks"][key].keys() == state.keys(), key
            for field, value in state.items():
                if field != "best_k_models":  # scores from other kernels: within 1e-5 (KERNEL_DRIFT_AT_LR_0_1)
                    assert same_state(ours["callbacks"][key][field], value, member, alone), (key, field)
        assert (ours["epoch"], ours["global_step"], ours["hparams_name"]) == (
            theirs["epoch"], theirs["global_step"], theirs["hparams_name"])
        assert ours["hyper_parameters"] == theirs["hyper_parameters"]
        saved = [t for entry in ours["optimizer_states"][0]["state"].values() for t in entry.values()]
        saved += list(ours["state_dict"].values())
        assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in saved)  # not the pack's
        for folder in (member, alone):
            loaded = WIRINGS["return_state"].load_from_checkpoint(folder / "checkpoints" / f"{name}.ckpt")
            assert farthest(loaded.state_dict(), weights(folder, name)) == 0
    assert farthest(seqrev.load(member).state_dict(), weights(member, "best")) == 0
    assert farthest(seqrev.load(alone).state_dict(), weights(alone, "best")) == 0


KERNEL_DRIFT_AT_LR_0_1 = 1e-3
"""How far a member's weights may drift from its job's after 6 epochs at learning rate 0.1. A pack sums its
products in other kernels (batched matmul) than the job's fused LSTM (oneDNN's RNN, or ATen's cell), and a
high rate amplifies those 1-ulp differences: measured on an AMD EPYC (AVX2) under ATEN_CPU_CAPABILITY=default
or avx2, ONEDNN_MAX_CPU_ISA=SSE41, MKL_CBWR=COMPATIBLE and with oneDNN off, the largest weight difference was
9e-6 to 2.4e-4 and the validation loss 1e-7 to 1.1e-5 (docs/development.md); after one epoch at the default
rate, under 1.5e-7 everywhere."""


def test_a_members_best_checkpoint_is_its_own_jobs_best_epoch_and_weights(tmp_path):
    """At a rate where the validation loss rises again, the best epoch is an earlier one: each member's
    best.ckpt holds its own job's best epoch, weights and score; neither stopped early (whole budget). The
    epochs' validation losses lie at least 0.026 apart here, far beyond what kernels change (above)."""
    settings = (*TINY, "trainer.max_epochs=6", "model.optimizer.lr=0.1", "callbacks.early_stopping.patience=100")
    pack = members(tmp_path, [0, 1], *settings)
    train_pack(pack)
    earlier = 0
    for member in pack:
        alone = ordinary(tmp_path, member.cfg.seed, *settings)
        best = {d: torch.load(d / "checkpoints" / "best.ckpt", weights_only=True) for d in (member.run_dir, alone)}
        assert best[member.run_dir]["epoch"] == best[alone]["epoch"]
        assert farthest(best[member.run_dir]["state_dict"], best[alone]["state_dict"]) < KERNEL_DRIFT_AT_LR_0_1
        state = {d: next(v for k, v in best[d]["callbacks"].items() if "'monitor': 'val/loss'" in k and "Model" in k)
                 for d in best}
        assert float(state[member.run_dir]["best_model_score"]) == pytest.approx(
            float(state[alone]["best_model_score"]), abs=1e-4)
        earlier += best[alone]["epoch"] < 5
        own = json.loads((alone / "results.json").read_text())
        assert member.results["stopped_early"] is own["stopped_early"] is False
        assert member.results["epochs_run"] == own["epochs_run"] == 6
    assert earlier  # so the test tells the best epoch from the last


def test_on_a_gpu_a_cell_trains_as_packs_of_what_its_free_memory_holds(tmp_path, caplog):
    """A fake figure for the device's free memory, on the CPU: three and a half members' worth gives packs of
    3, 3 and 1, one after another, every member ending as it does in one pack of all seven."""
    import re

    from seqrev.packs.layers import member_bytes
    from seqrev.packs.recipe import MEMORY_SHARE, capacity

    settings = (*TINY, "trainer.max_epochs=2")
    for folder in ("whole", "parts"):
        (tmp_path / folder).mkdir()
    whole, parts = members(tmp_path / "whole", range(7), *settings), members(tmp_path / "parts", range(7), *settings)
    from hydra.utils import instantiate

    data = instantiate(parts[0].cfg.data)
    data.prepare()
    free = int(3.5 * member_bytes(instantiate(parts[0].cfg.model), data.train, data.val, 32) / MEMORY_SHARE)
    assert capacity(parts[0].cfg, free) == 3
    train_pack(whole)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="seqrev"):
        train_pack(parts, free_memory=free)
    assert re.findall(r"trained in a pack of (\d+)", caplog.text) == ["3"] * 6 + ["1"]
    assert "holds 3 members at a time: trained as 3 packs, one after another" in caplog.text
    for alone, together in zip(parts, whole):
        assert alone.results["status"] == "ok"
        for key in SCORES:
            assert alone.results[key] == pytest.approx(together.results[key], abs=1e-6), key


def test_a_members_memory_estimate_counts_its_weights_data_and_what_backward_keeps():
    from seqrev.packs.layers import member_bytes

    def estimate(units: int = 16, n_train: int = 2000, batch: int = 32) -> int:
        model = WIRINGS["both_outputs"](n_features=10, timesteps=4, units=units)
        inputs = torch.zeros(n_train, 4, 10)
        return member_bytes(model, (inputs, torch.zeros(n_train, 4, dtype=torch.long)), (inputs[:200],
                            torch.zeros(200, 4, dtype=torch.long)), batch)

    data = 2 * 2000 * 4 * (10 * 4 + 8) + 200 * 4 * (10 * 4 + 8)  # float one-hot inputs and int64 targets
    weights = 4 * 4010 * 4  # weights, gradients, Adam's two moments
    assert data + weights < estimate() < 4 * (data + weights)
    assert estimate(n_train=4000) - estimate() == pytest.approx(2 * 2000 * 4 * 48, rel=0.05)
    assert estimate(batch=64) > estimate() and estimate(units=64) > estimate()


def test_packs_are_wide_only_where_measured_faster_and_apply_the_trainers_determinism(tmp_path):
    from seqrev.packs.layers import Pack, choose_layout

    assert choose_layout(3, 16, torch.device("cpu")) == "wide"
    assert choose_layout(10, 16, torch.device("cpu")) == "stacked"
    assert choose_layout(3, 16, torch.device("cuda")) == "stacked"  # a GPU: no step waits for the host
    models = [WIRINGS["both_outputs"](n_features=10, timesteps=4) for _ in range(3)]
    pack = Pack(models, torch.device("cpu"), layout="stacked")
    pack.keep([0, 1])
    assert pack.layout == "stacked"  # a layout asked for stays
    for deterministic in (True, False):
        (tmp_path / str(deterministic)).mkdir()
        run = PackRun(members(tmp_path / str(deterministic), [0, 1], *TINY, f"trainer.deterministic={deterministic}"))
        run.setup()
        assert torch.are_deterministic_algorithms_enabled() is deterministic
        run.cleanup()


def test_a_gpu_sweeps_cell_is_one_pack_whatever_the_cores(tmp_path, seqrev_train):
    """On a GPU a pack takes every seed of its cell (as many at a time as memory holds), not one per core.
    Without a GPU here the jobs then fail, each saying why; the plan is what this checks."""
    done = seqrev_train("-m", "hydra/launcher=packed", "hydra.launcher.n_jobs=2", "trainer=gpu", "seed=0,1,2,3",
                        *TINY, "trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path}")
    assert "packed launcher: 4 jobs as 1 packs (4 jobs each) and 0 ordinary jobs" in done.stdout, done.stdout[-2000:]
