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

    run_dir, save, calls = tmp_path / "run", torch.save, []

    def save_until_the_disk_fills(obj, handle, *args, **kwargs):
        calls.append(obj.get("epoch"))
        if obj.get("epoch") == 2:  # the third epoch's checkpoint meets a full disk halfway
            handle.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    with pytest.raises(Exception) as failed:
        train(compose_config(*SMALL, *epochs, output_dir=run_dir))
    assert describe_error(failed.value, run_dir).endswith(": no space left on the device")
    assert str(run_dir / "checkpoints") in describe_error(failed.value, run_dir)
    monkeypatch.setattr(torch, "save", save)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # 2 epochs kept
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]

    resumed = train(compose_config(*SMALL, *epochs, f"resume={run_dir}", output_dir=run_dir))
    assert resumed["resumed"] is True
    for key in ("val_loss", "test_acc", "train_acc", "test_loss", "epochs_run"):
        assert resumed[key] == whole[key], key
    assert json.loads((run_dir / "results.json").read_text())["status"] == "ok"
