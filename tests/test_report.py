import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from seqrev.report import build, gather, markdown


def write(directory: Path, **fields) -> None:
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps(fields))


def make_sweep(root: Path) -> dict:
    accuracies = {("both_outputs", 4): [0.97, 0.99, 0.95], ("return_state", 4): [0.90, 0.80],
                  ("both_outputs", 8): [0.55]}
    job = 0
    for (model, timesteps), values in accuracies.items():
        for seed, acc in enumerate(values):
            write(root / f"{job}_job", model=model, timesteps=timesteps, units=16, seed=seed, status="ok",
                  test_acc=acc, test_seq_acc=acc / 2, epochs_run=100 - seed,
                  test_acc_per_position=[acc] * timesteps)
            job += 1
    write(root / "failed_job", model="both_outputs", timesteps=16, units=16, seed=0, status="failed",
          error="data.timesteps=0 is not allowed")
    (root / "corrupt_job").mkdir()
    (root / "corrupt_job" / "results.json").write_text('{"model": "both_out')
    return accuracies


def test_report_table_means_failures_and_corrupt_files(tmp_path, capsys):
    from seqrev.report import main

    accuracies = make_sweep(tmp_path)
    assert main([str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: skipped" in err and "corrupt_job" in err
    text = (tmp_path / "report.md").read_text()
    row4 = next(line for line in text.splitlines() if line.startswith("| 16 | 4 |"))
    for values in (accuracies[("both_outputs", 4)], accuracies[("return_state", 4)]):
        mean, std = 100 * statistics.fmean(values), 100 * statistics.stdev(values)
        assert f"{mean:.2f} ± {std:.2f} ({100 * min(values):.2f}–{100 * max(values):.2f})" in row4
    assert "[97.250]" in row4 and "[91.625]" in row4  # the tutorial's own figures side by side
    assert "55.00 ± 0.00" in text
    assert "failed_job" in text and "data.timesteps=0 is not allowed" in text

    rows = [r for r in csv.DictReader(open(tmp_path / "report.csv")) if r["kind"] == "run"]
    assert len(rows) == 7  # six finished jobs and the failed one; the corrupt file is skipped
    assert {"job_dir", "model", "test_acc", "status"} <= rows[0].keys()

    png = (tmp_path / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


@pytest.mark.slow
def test_report_reads_without_torch(tmp_path):
    make_sweep(tmp_path)
    code = ("import sys; from seqrev.report import main; main([sys.argv[1]]); "
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_report_on_nothing_says_so(tmp_path, capsys):
    from seqrev.report import main

    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such directory" in err


def test_markdown_lists_wirings_in_the_tutorials_order(tmp_path):
    make_sweep(tmp_path)
    runs, _ = gather([tmp_path])
    header = next(line for line in markdown(build(runs, [])).splitlines() if line.startswith("| units"))
    assert header.index("return_state") < header.index("both_outputs")


def tutorial_config(timesteps: int, **changes) -> dict:
    """results.json's `config` of a run made with the tutorial's protocol, with `changes` ("data.n_train": 500)."""
    config = {"data": {"task": "reverse", "timesteps": timesteps, "min_timesteps": timesteps, "n_features": 10,
                       "n_train": 2000, "n_test": 200, "val_fraction": 0.1, "batch_size": 32, "seed": 0},
              "model": {"n_features": 10, "timesteps": timesteps, "padded": False, "units": 16, "cell": "lstm",
                        "init": "keras", "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001, "eps": 1e-07},
                        "scheduler": None},
              "trainer": {"accelerator": "auto", "devices": 1, "max_epochs": 100, "precision": "32-true",
                          "gradient_clip_val": None, "gradient_clip_algorithm": "norm", "accumulate_grad_batches": 1},
              "early_stopping": {"monitor": "val/loss", "mode": "min", "patience": 5}}
    for key, value in changes.items():
        section, name = key.split(".", 1)
        config[section][name] = value
    return config


def run_result(job: Path, acc: float, seed: int = 0, timesteps: int = 4, model: str = "both_outputs", **changes):
    write(job, model=model, timesteps=timesteps, units=16, seed=seed, status="ok", test_acc=acc,
          test_seq_acc=acc / 2, epochs_run=10, test_acc_per_position=[acc] * timesteps,
          config=tutorial_config(timesteps, **changes))


def test_runs_of_different_experiments_are_never_pooled(tmp_path):
    run_result(tmp_path / "0", 0.26, **{"data.n_train": 500})
    run_result(tmp_path / "1", 0.41, **{"data.n_train": 2000})
    runs, _ = gather([tmp_path])
    text = markdown(build(runs, []))
    assert "# data.n_train=500" in text and "# data.n_train=2000" in text
    assert "26.00 ± 0.00 (26.00–26.00) n=1" in text and "41.00 ± 0.00 (41.00–41.00) n=1" in text
    assert "33.50" not in text  # the mean of the two would pool two experiments
    # only the run made with the tutorial's protocol sits beside the tutorial's figures
    assert text.count("[97.250]") == 1
    assert text.index("# data.n_train=2000") < text.index("[97.250]")


def test_two_runs_of_the_same_seed_are_a_conflict_not_an_average(tmp_path):
    run_result(tmp_path / "a", 0.9, seed=0)
    run_result(tmp_path / "b", 0.5, seed=0)
    run_result(tmp_path / "c", 0.7, seed=1, model="return_state")
    runs, _ = gather([tmp_path])
    text = markdown(build(runs, []))
    assert "conflict: seed 0 twice" in text and "not averaged" in text
    assert "70.00 ± 0.00 (70.00–70.00) n=1" in text  # the other cell is unaffected


def test_the_tutorials_figures_and_mode_baseline_only_beside_its_protocol(tmp_path):
    run_result(tmp_path / "short", 0.5, **{"trainer.max_epochs": 20})
    run_result(tmp_path / "five", 0.6, timesteps=6, **{"data.n_features": 5, "trainer.max_epochs": 20})
    runs, _ = gather([tmp_path])
    text = markdown(build(runs, []))
    assert "[" not in text.split("## Warnings")[0].replace("[absent]", "")  # no tutorial figure anywhere
    from seqrev.report import mode_baseline
    assert f"| {mode_baseline(5, 6):.2f} |" in text and f"| {mode_baseline(10, 4):.2f} |" in text
    assert round(mode_baseline(10, 4), 2) == 38.35 and round(mode_baseline(10, 16), 1) == 23.6


def test_padded_tasks_get_no_mode_baseline(tmp_path):
    run_result(tmp_path / "sel", 0.8, timesteps=6, **{"data.task": "select_even", "data.min_timesteps": 4})
    runs, _ = gather([tmp_path])
    assert "mode baseline" not in markdown(build(runs, []))


def test_a_fixed_length_group_keeps_its_figures_beside_a_variable_length_one(tmp_path):
    run_result(tmp_path / "fixed", 0.97)
    run_result(tmp_path / "varying", 0.5, timesteps=6, **{"data.min_timesteps": 3})
    runs, _ = gather([tmp_path])
    text = markdown(build(runs, []))
    fixed = text[:text.index("data.min_timesteps=3")]  # the tutorial's protocol comes first
    assert "[97.250]" in fixed and "| 38.35 |" in fixed
    assert "[97.250]" not in text[text.index("data.min_timesteps=3"):]


def test_a_results_file_with_a_wrong_or_missing_field_is_skipped_with_one_line_and_the_rest_reported(tmp_path,
                                                                                                       capsys):
    from seqrev.report import main

    make_sweep(tmp_path)
    write(tmp_path / "typed_job", model="both_outputs", timesteps=4, units=16, seed=5, status="ok", test_acc="0.5",
          test_seq_acc=0.2, epochs_run=3, test_acc_per_position=[0.5] * 4)
    write(tmp_path / "short_job", model="both_outputs", timesteps=4, units=16, seed=6, status="ok", test_seq_acc=0.2,
          epochs_run=3, test_acc_per_position=[0.5] * 4)
    assert main([str(tmp_path)]) == 0
    said = capsys.readouterr().err.splitlines()
    typed = [line for line in said if "typed_job" in line]
    assert len(typed) == 1 and "the field 'test_acc' holds \"0.5\", which is not a number" in typed[0]
    short = [line for line in said if "short_job" in line]
    assert len(short) == 1 and "the field 'test_acc' is missing" in short[0]
    rows = [r for r in csv.DictReader(open(tmp_path / "report.csv")) if r["kind"] == "run"]
    assert len(rows) == 7 and not any("typed_job" in r["job_dir"] or "short_job" in r["job_dir"] for r in rows)
    assert "97.00 ± 2.00" in (tmp_path / "report.md").read_text()  # the good runs, as before
