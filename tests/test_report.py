import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

from seqrev.report import gather, markdown


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


def test_report_table_means_failures_and_corrupt_files(tmp_path):
    accuracies = make_sweep(tmp_path)
    done = subprocess.run([sys.executable, "-m", "seqrev.report", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning: skipped" in done.stderr and "corrupt_job" in done.stderr
    text = (tmp_path / "report.md").read_text()
    row4 = next(line for line in text.splitlines() if line.startswith("| 16 | 4 |"))
    for values in (accuracies[("both_outputs", 4)], accuracies[("return_state", 4)]):
        mean, std = 100 * statistics.fmean(values), 100 * statistics.stdev(values)
        assert f"{mean:.2f} ± {std:.2f} ({100 * min(values):.2f}–{100 * max(values):.2f})" in row4
    assert "[97.250]" in row4 and "[91.625]" in row4  # the tutorial's own figures side by side
    assert "55.00 ± 0.00" in text
    assert "failed_job" in text and "data.timesteps=0 is not allowed" in text

    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert len(rows) == 7  # six finished jobs and the failed one; the corrupt file is skipped
    assert {"job_dir", "model", "test_acc", "status"} <= rows[0].keys()

    png = (tmp_path / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_report_reads_without_torch(tmp_path):
    make_sweep(tmp_path)
    code = ("import sys; from seqrev.report import main; main([sys.argv[1]]); "
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_report_on_nothing_says_so(tmp_path):
    done = subprocess.run([sys.executable, "-m", "seqrev.report", str(tmp_path / "missing")], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "no such directory" in done.stderr and "Traceback" not in done.stderr


def test_markdown_lists_wirings_in_the_tutorials_order(tmp_path):
    make_sweep(tmp_path)
    runs, _ = gather([tmp_path])
    header = next(line for line in markdown(runs, []).splitlines() if line.startswith("| units"))
    assert header.index("return_state") < header.index("both_outputs")
