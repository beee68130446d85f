"""`resume=RUN trainer.max_epochs=N` trains a finished run longer: in its own folder, TensorBoard run and
tracker run, to the numbers of a run that was given N epochs from the start; a run that cannot go on is
refused in one sentence that says what to type instead. Pack members' folders too (a pack of one)."""

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqrev.errors import RunDirError
from seqrev.rundir import rewrite_argv_for_resume

from conftest import SCORES, SMALL, copy_of, started_a_second_earlier, train_in_process


def finished_folder(folder: Path, overrides: list[str], **results) -> Path:
    """A run folder as a finished run leaves it: its overrides and its results.json (no checkpoint needed:
    a refusal is decided before it is read)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    config = {"trainer": {"max_epochs": 10, "max_steps": -1}, "early_stopping": {"patience": 5}}
    (folder / "results.json").write_text(json.dumps({
        "status": "ok", "epochs_run": 10, "stopped_early": False, "config": config, "model": "return_state",
        "timesteps": 4, "units": 16, "test_acc": 0.9, "test_seq_acc": 0.7, "test_acc_per_position": [0.9] * 4,
        **results}))
    return folder


def refused(folder: Path, *more: str) -> str:
    with pytest.raises(RunDirError) as refusal:
        rewrite_argv_for_resume(["seqrev.train", f"resume={folder}", *more])
    assert len(str(refusal.value).splitlines()) == 1
    return str(refusal.value)


def test_a_run_that_stopped_early_is_refused_with_the_command_for_a_new_run(tmp_path):
    folder = finished_folder(tmp_path / "run", ["seed=3", "model=return_state"], stopped_early=True, epochs_run=7)
    said = refused(folder, "trainer.max_epochs=200")
    assert "early stopping ended it after epoch 7" in said
    assert "python -m seqrev.train seed=3 model=return_state callbacks.early_stopping.patience=10" in said


@pytest.mark.parametrize("more", [(), ("trainer.max_epochs=10",), ("trainer.max_epochs=4",),
                                  ("trainer.max_steps=99",)])
def test_a_run_that_used_its_epochs_needs_a_larger_maximum(tmp_path, more):
    said = refused(finished_folder(tmp_path / "run", ["seed=0"]), *more)
    assert "reached trainer.max_epochs=10" in said and f"resume={tmp_path / 'run'} trainer.max_epochs=20" in said


def test_a_run_that_used_its_steps_needs_a_larger_step_budget(tmp_path):
    folder = finished_folder(tmp_path / "run", ["trainer.max_steps=30"], epochs_run=3,
                             config={"trainer": {"max_epochs": 100, "max_steps": 30}})
    assert "reached trainer.max_steps=30" in refused(folder, "trainer.max_epochs=200")
    assert "trainer.max_steps=60" in refused(folder, "trainer.max_steps=30")


def scalars(run_dir: Path, tag: str) -> list[int]:
    events = EventAccumulator(str(run_dir)).Reload()
    return [event.step for event in events.Scalars(tag)]


@pytest.fixture(scope="session")
def seed0_four_epochs(shared_runs) -> Path:
    """The reference: seed 0 trained 4 epochs from the start (SMALL data), once per test session."""
    import seqrev

    return shared_runs("seed0_four_epochs", lambda folder: seqrev.fit(*SMALL, "trainer.max_epochs=4",
                                                                       f"hydra.run.dir={folder}"))


@pytest.fixture(scope="session")
def packed_seeds_0_1_two_epochs(shared_runs) -> Path:
    """A packed sweep of seeds 0 and 1 (SMALL data, 2 epochs), once per test session: tests work on copies."""
    def make(folder: Path) -> None:
        assert train_in_process(*PACKED_TWO_SEEDS, "trainer.max_epochs=2", f"hydra.sweep.dir={folder}") == 0

    return shared_runs("packed_seeds_0_1_two_epochs", make)


PACKED_TWO_SEEDS = ("-m", "hydra/launcher=packed", "hydra.launcher.n_jobs=1", "seed=0,1", *SMALL)


def test_a_finished_run_trains_longer_to_the_numbers_of_the_longer_run(tmp_path, seqrev_train, seed0_four_epochs,
                                                                      recwarn):
    run = tmp_path / "run"
    assert seqrev_train(*SMALL, "trainer.max_epochs=2", f"hydra.run.dir={run}").returncode == 0
    first = json.loads((run / "results.json").read_text())
    recwarn.clear()
    longer = seqrev_train(f"resume={run}", "trainer.max_epochs=4")
    assert not [w for w in recwarn if "exists and is not empty" in str(w.message)]  # seqrev put its checkpoint there
    assert longer.returncode == 0, longer.stderr[-2000:]
    results, four = (json.loads((d / "results.json").read_text()) for d in (run, seed0_four_epochs))
    assert results["resumed"] is True and results["epochs_run"] == 4 and first["epochs_run"] == 2
    for key in SCORES:
        assert results[key] == pytest.approx(four[key], abs=1e-6), key
    assert scalars(run, "val/loss") == scalars(seed0_four_epochs, "val/loss")  # one TensorBoard run, each epoch once
    assert not list(run.glob("version_*")) and not list(run.glob("*/events.out.tfevents*"))
    assert "Traceback" not in longer.stderr


def test_a_packed_members_folder_trains_longer_as_a_pack_of_one(tmp_path, seqrev_train, packed_seeds_0_1_two_epochs,
                                                                 seed0_four_epochs):
    sweep = copy_of(packed_seeds_0_1_two_epochs, tmp_path / "sweep")
    member = next(sweep.glob("0_*"))
    longer = seqrev_train(f"resume={member}", "trainer.max_epochs=4")
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert "trained in a pack of 1" in longer.stdout
    results, expected = (json.loads((d / "results.json").read_text()) for d in (member, seed0_four_epochs))
    assert results["resumed"] is True
    for key in SCORES:
        assert results[key] == pytest.approx(expected[key], abs=1e-5), key
    last = {d: torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
            for d in (member, seed0_four_epochs)}
    assert max((last[member][k] - last[seed0_four_epochs][k]).abs().max().item() for k in last[member]) < 1e-5
    assert scalars(member, "val/loss") == [0, 1, 2, 3]
    again = seqrev_train(*PACKED_TWO_SEEDS, "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}")  # as it was asked
    assert again.returncode == 0 and "skipped (finished)" in again.stdout
    assert json.loads((member / "results.json").read_text()) == results


def test_a_killed_members_folder_continues_alone_from_its_checkpoint(tmp_path, seqrev_train,
                                                                      packed_seeds_0_1_two_epochs):
    member = next(copy_of(packed_seeds_0_1_two_epochs, tmp_path / "sweep").glob("1_*"))
    finished = json.loads((member / "results.json").read_text())
    (member / "results.json").unlink()  # as a kill after its last checkpoint leaves it
    again = seqrev_train(f"resume={member}")
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = json.loads((member / "results.json").read_text())
    for key in SCORES:
        assert resumed[key] == pytest.approx(finished[key], abs=1e-6), key


def test_a_members_folder_resumed_from_before_its_last_logged_epoch_shows_each_epoch_once(
        tmp_path, seqrev_train, packed_seeds_0_1_two_epochs):
    member = next(copy_of(packed_seeds_0_1_two_epochs, tmp_path / "sweep").glob("0_*"))
    two_epochs = (member / "checkpoints" / "last.ckpt").read_bytes()
    started_a_second_earlier(member)
    assert seqrev_train(f"resume={member}", "trainer.max_epochs=3").returncode == 0
    (member / "checkpoints" / "last.ckpt").write_bytes(two_epochs)  # killed before epoch 3's checkpoint landed
    (member / "results.json").unlink()
    started_a_second_earlier(member)  # both earlier starts: the resumed run's event file sorts after theirs
    again = seqrev_train(f"resume={member}", "trainer.max_epochs=3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert scalars(member, "val/loss") == [0, 1, 2] and len(scalars(member, "test/acc")) == 1


@pytest.fixture
def checkpoint_reads(monkeypatch):
    """Every read of a `last.ckpt` from now on, as ("seqrev" | "lightning", path): Lightning's own are those
    made from inside Lightning's code (it reads through seqrev's CheckpointIO)."""
    import traceback

    reads, load = [], torch.load

    def counted(path, *args, **kwargs):
        if str(path).endswith("last.ckpt"):
            inside = any("/lightning/" in frame.filename for frame in traceback.extract_stack())
            reads.append(("lightning" if inside else "seqrev", Path(path)))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    return reads


def test_a_resume_reads_its_checkpoint_once_before_lightning_does(tmp_path, seqrev_train, checkpoint_reads,
                                                                   packed_seeds_0_1_two_epochs):
    """What a resume learns from its checkpoint (that it is one, its epochs and steps, which engine wrote
    it, TensorBoard's restart) travels as a value: one read by seqrev, then Lightning's own, for a run, a
    sweep's killed job and a pack's member."""
    run = tmp_path / "run"
    assert seqrev_train(*SMALL, "trainer.max_epochs=1", f"hydra.run.dir={run}").returncode == 0
    checkpoint_reads.clear()
    assert seqrev_train(f"resume={run}", "trainer.max_epochs=2").returncode == 0
    assert checkpoint_reads == [("seqrev", run / "checkpoints" / "last.ckpt"),
                                ("lightning", run / "checkpoints" / "last.ckpt")]

    sweep = tmp_path / "sweep"
    line = ("-m", "seed=0", *SMALL, "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}")
    assert seqrev_train(*line).returncode == 0
    job = next(sweep.glob("0_*"))
    (job / "results.json").unlink()  # as a kill after its last checkpoint leaves it
    checkpoint_reads.clear()
    assert seqrev_train(*line).returncode == 0
    assert [who for who, path in checkpoint_reads if path.is_relative_to(job)] == ["seqrev", "lightning"]

    sweep = copy_of(packed_seeds_0_1_two_epochs, tmp_path / "packed")
    for member in sweep.glob("[01]_*"):
        (member / "results.json").unlink()
    checkpoint_reads.clear()
    assert seqrev_train(*PACKED_TWO_SEEDS, "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}").returncode == 0
    assert sorted(checkpoint_reads) == sorted(("seqrev", m / "checkpoints" / "last.ckpt") for m in sweep.glob("[01]_*"))
    member = next(sweep.glob("0_*"))
    (member / "results.json").unlink()
    checkpoint_reads.clear()
    assert seqrev_train(f"resume={member}").returncode == 0  # a pack of one: no Lightning loop reads it
    assert checkpoint_reads == [("seqrev", member / "checkpoints" / "last.ckpt")]


def test_a_checkpoint_written_between_its_check_and_the_runs_lock_is_refused_and_nothing_is_changed(tmp_path):
    """The checkpoint a resume continues from is read once, before the run's folder is locked: one another
    process wrote in between is not trained from; the run says so in one sentence and leaves the folder's
    results as they were."""
    import logging
    import os

    from hydra.core.hydra_config import HydraConfig

    import seqrev
    from seqrev.train import launch, prepare

    run = tmp_path / "run"
    seqrev.fit(*SMALL, "trainer.max_epochs=1", f"hydra.run.dir={run}")
    before = (run / "results.json").read_bytes()
    argv, resumes = prepare(["seqrev.train", f"resume={run}", "trainer.max_epochs=2"])
    assert resumes.epochs == 1 and resumes.unchanged()
    os.utime(resumes.path, ns=(resumes.stamp[0] + 10**9,) * 2)  # as another process's later write leaves it
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        task = launch(argv, resumes, in_process=True)
    finally:
        for handler in set(root.handlers) - set(handlers):  # the run's log file, closed
            root.removeHandler(handler)
            handler.close()
        HydraConfig.instance().cfg = None
    assert isinstance(task.failure, RunDirError) and "changed after it was checked" in str(task.failure)
    assert (run / "results.json").read_bytes() == before


def test_a_checkpoint_whose_data_state_has_the_classs_earlier_name_loads_and_resumes_exactly(
        tmp_path, seqrev_train, seed0_four_epochs):
    """Checkpoints written when the data module was called ReversedSequenceData hold its state (the shuffle's
    generator) under that name: seqrev.load still reads the task from it, and a resume still continues the
    shuffle, to the numbers of a run trained in one go."""
    import seqrev
    from seqrev.inference import read

    run = tmp_path / "run"
    assert seqrev_train(*SMALL, "trainer.max_epochs=2", f"hydra.run.dir={run}").returncode == 0
    for name in ("last", "best"):
        path = run / "checkpoints" / f"{name}.ckpt"
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["ReversedSequenceData"] = checkpoint.pop("SequenceData")
        torch.save(checkpoint, path)
    assert read(run)[1] == {"task": "reverse", "min_timesteps": 4}
    assert seqrev.load(run, "last") is not None
    assert seqrev_train(f"resume={run}", "trainer.max_epochs=4").returncode == 0
    results, four = (json.loads((d / "results.json").read_text()) for d in (run, seed0_four_epochs))
    for key in SCORES:
        assert results[key] == pytest.approx(four[key], abs=1e-6), key
