"""Atomic writes, for any user (no mount needed): a failed or interrupted write never costs the
previous complete file; a run whose disk fills keeps its last complete checkpoint and resumes exactly."""

import errno
import json
import os

import pytest
import torch

from seqrev.atomic import atomic_write
from seqrev.errors import describe_error
from seqrev.run import train

from conftest import SMALL, compose_config


def leftovers(path) -> list[str]:
    return [p.name for p in path.parent.iterdir() if p != path]


def test_a_write_that_fails_halfway_keeps_the_previous_file_and_names_the_destination(tmp_path):
    path = tmp_path / "results.json"
    atomic_write(path, lambda handle: handle.write(b"previous"))

    def fill_the_disk(handle):
        handle.write(b"half of the ne")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as failed:
        atomic_write(path, fill_the_disk)
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(path)  # not the temporary
    assert path.read_bytes() == b"previous" and leftovers(path) == []


def test_a_crash_before_the_rename_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    atomic_write(path, lambda handle: torch.save({"epoch": 1}, handle))

    def crash(*args):
        raise KeyboardInterrupt  # stands for the process dying between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, lambda handle: torch.save({"epoch": 2}, handle))
    assert torch.load(path, weights_only=True) == {"epoch": 1} and leftovers(path) == []


def test_a_disk_full_at_a_later_checkpoint_keeps_the_earlier_one_and_resumes_exactly(tmp_path, monkeypatch):
    epochs = ("trainer.max_epochs=5",)
    whole = train(compose_config(*SMALL, *epochs, output_dir=tmp_path / "whole"))

    import seqrev.checkpointing

    run_dir, write, lasts = tmp_path / "run", seqrev.checkpointing.atomic_write, []

    def write_until_the_disk_fills(path, contents):
        lasts.extend([path] if path.name == "last.ckpt" else [])
        if len(lasts) >= 3:  # the third epoch's checkpoint meets a full disk halfway, and it stays full
            def halfway(handle):
                handle.write(b"\0" * 1000)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write(path, halfway)
        return write(path, contents)

    monkeypatch.setattr(seqrev.checkpointing, "atomic_write", write_until_the_disk_fills)
    with pytest.raises(Exception) as failed:
        train(compose_config(*SMALL, *epochs, output_dir=run_dir))
    assert describe_error(failed.value, run_dir).endswith(": no space left on the device")
    assert str(run_dir / "checkpoints") in describe_error(failed.value, run_dir)
    monkeypatch.setattr(seqrev.checkpointing, "atomic_write", write)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # 2 epochs kept
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]

    resumed = train(compose_config(*SMALL, *epochs, f"resume={run_dir}", output_dir=run_dir))
    assert resumed["resumed"] is True
    for key in ("val_loss", "test_acc", "train_acc", "test_loss", "epochs_run"):
        assert resumed[key] == whole[key], key
    assert json.loads((run_dir / "results.json").read_text())["status"] == "ok"


def test_results_json_is_written_only_once_its_checkpoints_are_on_disk(tmp_path, monkeypatch):
    """Checkpoints are written in the background (seqrev.checkpointing); however slow the disk, a run's
    results.json comes after every checkpoint of its training, each complete."""
    import time

    import seqrev.checkpointing
    import seqrev.run

    write, publish, seen = seqrev.checkpointing.atomic_write, seqrev.run.publish_run, {}

    def slow_write(path, contents):
        time.sleep(0.3)
        return write(path, contents)

    def check_then_publish(loggers, step, results, examples):
        folder = tmp_path / "run" / "checkpoints"
        seen["epochs"] = {p.name: torch.load(p, weights_only=True)["epoch"] for p in folder.glob("*.ckpt")}
        seen["partial"] = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        return publish(loggers, step, results, examples)

    monkeypatch.setattr(seqrev.checkpointing, "atomic_write", slow_write)
    monkeypatch.setattr(seqrev.run, "publish_run", check_then_publish)
    results = train(compose_config(*SMALL, "trainer.max_epochs=3", output_dir=tmp_path / "run"))
    assert seen["epochs"]["last.ckpt"] == results["epochs_run"] - 1 == 2 and "best.ckpt" in seen["epochs"]
    assert seen["partial"] == []


def test_a_background_write_that_fails_raises_at_the_next_save_or_teardown_and_keeps_the_file(tmp_path, monkeypatch):
    import concurrent.futures

    import seqrev.checkpointing
    from seqrev.checkpointing import AtomicCheckpointIO

    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1}, path)
    io.teardown()
    write = seqrev.checkpointing.atomic_write

    def full(target, contents):
        def halfway(handle):
            handle.write(b"\0" * 10)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(target, halfway)

    monkeypatch.setattr(seqrev.checkpointing, "atomic_write", full)
    io.save_checkpoint({"epoch": 2}, path)  # returns at once: the write goes on in the background
    with pytest.raises(OSError) as failed:
        io.teardown()
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(path)
    io.save_checkpoint({"epoch": 3}, path)
    concurrent.futures.wait([write for _, write in io.writes.pending])  # it has failed: the next save says so
    with pytest.raises(OSError):
        io.save_checkpoint({"epoch": 4}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1} and leftovers(path) == []
