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
