"""hydra/sweeper=settle: seeds until the comparisons settle, on tiny models (three symbols, three steps)."""

import json
from pathlib import Path

import pytest

from seqrev.settle import grid, looks, next_seeds, settings_problem

TINY_TASK = ("data.n_train=300", "data.n_test=100", "data.n_features=3", "data.timesteps=3",
             "model.optimizer.lr=0.05", "callbacks.early_stopping.patience=100")
"""A problem a wiring that sees every step learns in a few epochs (100% at 6 epochs) and single_default
cannot (about 64%): far apart at 3 seeds."""


def settle_line(said: str) -> str:
    lines = [line for line in said.splitlines() if line.startswith("settle: ")]
    assert lines, said[-3000:]
    return lines[-1]


def test_the_grid_takes_wirings_first_seeds_and_cells_from_hydras_overrides():
    found = grid(["model=single_default,both_outputs", "+size=t4,t8", "seed=0,1,2", "data.n_train=300"])
    assert found.wirings == ["single_default", "both_outputs"] and found.first_seeds == [0, 1, 2]
    assert found.cells == [("+size=t4", "data.n_train=300"), ("+size=t8", "data.n_train=300")]
    assert looks(3, 30) == 5 and looks(3, 3) == 1 and looks(3, 4) == 2


def test_the_sweepers_settings_are_refused_in_one_sentence():
    assert settings_problem(3, 30, 2.0) is None
    assert "initial_seeds=1 is not allowed" in settings_problem(1, 30, 2.0)
    assert "max_seeds=2 is not allowed" in settings_problem(3, 2, 2.0)
    assert "delta=0 is not allowed" in settings_problem(3, 30, 0)


def test_only_the_wirings_of_comparisons_not_settled_get_more_seeds():
    cell = ("+size=t4",)
    scores = {cell: {"a": [97.0, 98.0, 97.5], "b": [60.0, 61.0, 59.0], "c": [60.5, 58.0, 61.5]}}
    seeds = {(cell, name): 3 for name in "abc"}
    wants, still = next_seeds(scores, seeds, confidence=0.99, cap=30)
    assert still == 1 and set(wants) == {(cell, "b"), (cell, "c")}  # a is apart from both; b and c are not
    assert all(6 <= total <= 30 for total in wants.values())
    assert next_seeds(scores, seeds, confidence=0.99, cap=3) == ({}, 1)  # at the cap: nothing more


def test_two_wirings_that_differ_clearly_stop_after_the_first_round(tmp_path, seqrev_train):
    sweep = tmp_path / "sweep"
    done = seqrev_train("-m", "hydra/sweeper=settle", "model=both_outputs,single_default", *TINY_TASK,
                        "trainer.max_epochs=6", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("settle: round ") == 1
    line = settle_line(done.stdout)
    assert line.startswith("settle: 6 jobs, every comparison settled or equivalent after round 1; the cell: 1 settled")
    assert done.stdout.strip().splitlines()[-1] == line  # the sweep's last line
    report = (sweep / "report.md").read_text()
    assert "| both_outputs | single_default |" in report and "over the report's 3 comparisons and its 5 looks" in report


@pytest.fixture
def twin_config(tmp_path) -> Path:
    """A config folder of the user's own: both_outputs under a second name."""
    folder = tmp_path / "own"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "both_twin.yaml").write_text("defaults:\n  - both_outputs\n  - _self_\n")
    return folder


def test_one_wiring_under_two_names_stops_as_equivalent_or_at_the_cap_and_says_which(tmp_path, seqrev_train,
                                                                                     twin_config):
    """The same seeds give the same scores under both names, but each name's seeds still spread: an
    independent comparison cannot call them different, and calls them equivalent only once the interval
    fits within ±delta; here, at most 4 seeds, it ends at the cap and names the comparison left open."""
    sweep = tmp_path / "sweep"
    done = seqrev_train("-m", "hydra/sweeper=settle", "model=both_outputs,both_twin", "hydra.sweeper.max_seeds=4",
                        *TINY_TASK, "trainer.max_epochs=1", f"hydra.searchpath=[file://{twin_config}]",
                        f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    line = settle_line(done.stdout)
    assert line in ("settle: 6 jobs, every comparison settled or equivalent after round 1; the cell: 1 equivalent",
                    "settle: 8 jobs, 1 comparison not settled at the cap of 4 seeds; the cell: 1 not settled (open: "
                    "both_outputs vs both_twin (4 and 4 seeds))"), line
    report = (sweep / "report.md").read_text()
    row = next(r for r in report.splitlines() if r.startswith("| 16 | 3 | both_") and "| both_" in r[12:])
    assert "| +0.00 |" in row and "| 0.50 |" in row and "settled |" not in row.replace("not settled |", "")


def test_a_killed_settle_sweep_run_again_continues_without_training_finished_seeds(tmp_path, seqrev_train):
    """Two similar wirings are not settled at 3 seeds: a second round gives each a fourth (the cap). A kill
    after that round's checkpoints is what the folder shows when results.json is gone: run again, every
    finished job is skipped, the killed one resumed, and the sweep ends as it did."""
    sweep = tmp_path / "sweep"
    line = ("-m", "hydra/sweeper=settle", "model=single_default,stacked_default", "hydra.sweeper.max_seeds=4",
            *TINY_TASK, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}")
    first = seqrev_train(*line)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("settle: round ") == 2 and "at the cap of 4 seeds" in settle_line(first.stdout)
    killed = next(sweep.glob("7_*"))  # the last job of round 2
    finished = json.loads((killed / "results.json").read_text())
    (killed / "results.json").unlink()
    again = seqrev_train(*line)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped (finished)") == 7
    assert f"resuming from epoch 1: {killed}" in (killed / "train.log").read_text()
    assert settle_line(again.stdout) == settle_line(first.stdout)
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["resumed"] is True and resumed["test_acc"] == finished["test_acc"]
    assert "sweep finished" in again.stdout and ": 0 done, 0 failed, 7 skipped" not in again.stdout

    multirun = (sweep / "multirun.yaml").read_bytes()
    changed = seqrev_train(*line[:-1], "trainer.max_epochs=2", line[-1])  # the same folder, other settings
    assert changed.returncode == 2 and changed.stderr.count("\n") == 1, changed.stderr
    assert "0_model=single_default" in changed.stderr and "holds a job with other settings" in changed.stderr
    assert (sweep / "multirun.yaml").read_bytes() == multirun  # refused before anything was written
