import json
import math
import subprocess
import sys

import pytest

from conftest import MODELS, ROOT


@pytest.mark.slow
def test_quick_benchmark_gives_finite_positive_numbers_for_every_wiring(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "seqrev.bench", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    numbers = json.loads(out.read_text())
    assert sorted({row["wiring"] for row in numbers["per_step"]}) == sorted(MODELS)
    assert {row["timesteps"] for row in numbers["per_step"]} == {4, 16}
    for row in numbers["per_step"]:
        for path in ("grouped", "per_batch", "reference", "plain"):
            for key in (f"{path}_ms_per_step", f"{path}_ratio"):
                assert math.isfinite(row[key]) and row[key] > 0, row
        assert row["plain_ratio"] == 1.0
    for key, value in numbers["end_to_end"].items():
        assert math.isfinite(value) and value > 0, key
    assert "| wiring | T |" in done.stdout


@pytest.mark.slow
def test_the_packed_section_measures_every_pack_size_and_both_launchers_sweeps(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "seqrev.bench", "--packed", "--quick", "--timesteps", "4",
                           "--pack-sizes", "1", "3", "12", "--sweeps", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    numbers = json.loads(out.read_text())
    rows = {row["path"]: row for row in numbers["packed_per_model_step"]}
    assert set(rows) == {"job", "plain", "pack1", "pack3", "pack12"}
    assert rows["pack3"]["layout"] == "wide" and rows["pack12"]["layout"] == "stacked"
    assert rows["job"]["speed_vs_job"] == 1.0 and rows["plain"]["speed_vs_plain"] == 1.0
    for row in rows.values():
        assert math.isfinite(row["ms_per_model_step"]) and row["ms_per_model_step"] > 0, row
    assert [row["sweep"] for row in numbers["sweeps"]] == ["tutorial table (60 jobs)", "30 seeds of both_outputs, T=4"]
    for row in numbers["sweeps"]:  # the quick mode's smaller sweeps: every job of each finished, both ways
        assert row["packed_jobs"] == row["joblib_jobs"] > 0 and row["packed_peak_memory_mb"] > 0, row
