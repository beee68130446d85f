"""Storage faults lose nothing: a full disk, a read-only folder, a crash while a checkpoint is written.

The run folder sits on a small tmpfs of its own; mounting one needs root (CI runs as root).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import PROBES, ROOT, SMALL, run_cli


def can_mount() -> bool:
    return os.geteuid() == 0 and sys.platform.startswith("linux")


pytestmark = [pytest.mark.slow,  # whole processes on a real full disk; tests/test_atomic.py is the fast set's guard
              pytest.mark.skipif(not can_mount(), reason="mounting a small tmpfs needs root on Linux")]


@pytest.fixture
def small_disk(tmp_path):
    """mount(size, read_only=False) -> a fresh tmpfs folder; unmounted after the test."""
    mounted = []

    def mount(size: str, read_only: bool = False) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def assert_one_sentence(done: subprocess.CompletedProcess, *phrases: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("seqrev: "), done.stderr[-3000:]
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


def no_partial_files(folder: Path) -> None:
    assert not list(folder.rglob("*.tmp")), list(folder.rglob("*.tmp"))
    for checkpoint in folder.rglob("*.ckpt"):
        torch.load(checkpoint, weights_only=True)  # every checkpoint left behind is complete


def test_disk_full_at_the_first_checkpoint(small_disk):
    disk = small_disk("80k")
    run_dir = disk / "run"
    done = run_cli(*SMALL, "trainer.max_epochs=3", f"hydra.run.dir={run_dir}")
    assert_one_sentence(done, f"could not write {run_dir}/checkpoints/", "no space left on the device")
    no_partial_files(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "no space left" in results["error"]


def test_a_disk_full_before_the_first_event_is_one_sentence_whichever_write_meets_it(small_disk):
    """With fewer pages left the first failing write moves from a checkpoint to TensorBoard's event file
    (written from a thread of its own, whose traceback must not reach the user) to Hydra's .hydra/ files."""
    disk = small_disk("400k")
    pages = (disk / "filler").open("wb")
    sentences = []
    for free in (7, 6, 5, 4, 3, 2, 1):  # the run folder's lock file takes a page of its own
        pages.truncate(0)
        pages.seek(0)
        try:
            pages.write(b"\0" * (4096 * (100 - free)))
            pages.flush()
        except OSError:  # the pages Hydra's folder keeps from the previous attempt: fill what is left
            pass
        run_dir = disk / f"run{free}"
        done = run_cli(*SMALL, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
        assert_one_sentence(done, "no space left on the device")
        assert done.returncode == 1
        sentences.append(done.stderr)
        shutil.rmtree(run_dir)
    assert "checkpoints/best.ckpt" in sentences[0] and f"could not write in {disk}/run1" in sentences[-1], sentences


@pytest.mark.slow
def test_disk_full_at_a_later_checkpoint_keeps_the_earlier_one_and_resumes_exactly(small_disk, tmp_path):
    epochs = ("trainer.max_epochs=5",)
    whole = run_cli(*SMALL, *epochs, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]

    disk = small_disk("2m")
    run_dir, ballast = disk / "run", disk / "ballast"
    fill = ["+callbacks.fill._target_=probes.FillDiskAtEpoch", "+callbacks.fill.epoch=2",
            f"+callbacks.fill.ballast={ballast}", f"+callbacks.fill.marker={tmp_path / 'filled'}"]
    done = run_cli(*SMALL, *epochs, *fill, f"hydra.run.dir={run_dir}", env=PROBES)
    assert_one_sentence(done, "no space left on the device")
    no_partial_files(run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # 2 epochs kept

    ballast.unlink()  # space freed: continue from the last complete checkpoint
    resumed = run_cli(f"resume={run_dir}", fill[0], env=PROBES)  # the probe's _target_, accepted knowingly
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = json.loads((run_dir / "results.json").read_text())
    expected = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert got["status"] == "ok" and got["resumed"] is True
    for key in ("val_loss", "test_acc", "train_acc", "test_loss", "epochs_run"):
        assert got[key] == expected[key], key


def test_a_read_only_run_folder_is_refused_before_anything_starts(small_disk):
    disk = small_disk("1m", read_only=True)
    done = run_cli(*SMALL, f"hydra.run.dir={disk / 'run'}")
    assert_one_sentence(done, f"cannot write the run folder {disk / 'run'}: the file system is read-only")
    assert done.returncode == 2
    sweep = run_cli("-m", "model=return_state,both_outputs", f"hydra.sweep.dir={disk / 'sweep'}")
    assert_one_sentence(sweep, "the file system is read-only")


CRASH_DURING_SAVE = r"""
import os, sys, torch
from seqrev.checkpointing import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, path)
io.teardown()  # written (in the background) before the crash below
os.replace = lambda *args: os._exit(9)  # the process dies after the new file is written, before the rename
io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 2}, path)
"""


def test_a_crash_between_writing_and_renaming_keeps_the_previous_checkpoint(small_disk):
    path = small_disk("1m") / "checkpoints" / "last.ckpt"
    done = subprocess.run([sys.executable, "-c", CRASH_DURING_SAVE, str(path)], cwd=ROOT, capture_output=True)
    assert done.returncode == 9
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["epoch"] == 1 and torch.equal(checkpoint["state_dict"]["w"], torch.zeros(3))
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.ckpt.")  # the half-done new one, beside it


def test_in_a_sweep_each_failing_job_says_so_once_and_the_sweep_goes_on(small_disk):
    disk = small_disk("200k")
    done = run_cli("-m", "model=return_state,both_outputs", *SMALL, "trainer.max_epochs=2",
                   f"hydra.sweep.dir={disk / 'sweep'}")
    assert "Traceback" not in done.stdout + done.stderr
    counted = re.search(r"sweep finished in \S+: 0 done, (\d) failed, 0 skipped(?:, (\d) unfinished)?;", done.stdout)
    assert counted, done.stdout
    failed, unfinished = (int(n or 0) for n in counted.groups())
    assert failed + unfinished == 2, done.stdout  # each job counted, whichever file the full disk let it write
    assert done.returncode == (2 if unfinished else 0), done.stderr[-3000:]
    # each job says why on the sweep's console: its ending line, or (nothing recorded) the line on stderr
    assert (done.stdout + done.stderr).count("could not write") >= 2
