"""`python -m seqrev.bench --packed`: packs (hydra/launcher=packed) against ordinary jobs.

Per model-step, in one process, interleaved: a pack of K members (validation, checkpoints and TensorBoard
included) against one ordinary job and the plain loop, on one cell. `--sweeps`: the tutorial's table and a
30-seed study timed back to back, packed and with joblib, with the peak memory of all their processes.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seqrev.bench import interleaved, plain_fit, seqrev_fit
from seqrev.catalog import TUTORIAL_WIRINGS, compose

# Imports inside functions: the pack's modules load in the measurement, not when the benchmark's options are read.


def pack_fit(overrides: list[str], wiring: str, members: int, scratch: Path,
             layout: str | None = None) -> tuple[float, int, str]:
    """Seconds, model-steps and layout of a pack of `members` seeds trained for the configured epochs (in
    `layout`, or the one the device's rule chooses); member k's folder is `scratch/member{k}`."""
    from seqrev.packs.recipe import Member, PackRun
    from seqrev.results import describe

    pack = []
    for seed in range(members):
        folder = scratch / f"member{seed}"
        folder.mkdir(parents=True)
        cfg = compose([*overrides, f"seed={seed}", f"paths.output_dir={folder}"])
        pack.append(Member(cfg, wiring, describe(cfg, wiring)))
    run = PackRun(pack, layout)
    run.setup()
    started = time.perf_counter()
    run.train()
    seconds = time.perf_counter() - started
    run.cleanup()
    return seconds, sum(member.global_step for member in pack), run.pack.layout


def per_model_step(wiring: str, timesteps: int, sizes: list[int], epochs: int, repeats: int) -> list[dict]:
    """ms per model-step of packs of each size, and of one ordinary job and the plain loop, interleaved."""
    base = [f"model={wiring}", f"data.timesteps={timesteps}", f"trainer.max_epochs={epochs}",
            "callbacks.early_stopping.patience=1000"]  # every member trains every epoch: equal work
    paths = ["job", "plain", *(f"pack{k}" for k in sizes)]
    layouts = {}
    with tempfile.TemporaryDirectory() as scratch:
        def measure(path: str, repeat: int) -> float:
            folder = Path(scratch) / f"{repeat}-{path}"
            if path.startswith("pack"):
                seconds, steps, layouts[path] = pack_fit(base, wiring, int(path[4:]), folder)
            else:
                cfg = compose([*base, f"paths.output_dir={folder}"])
                seconds, steps = (seqrev_fit if path == "job" else plain_fit)(cfg)
            return 1000 * seconds / steps

        ms = interleaved(paths, repeats, measure)
    rows = []
    for path in paths:
        row = {"wiring": wiring, "timesteps": timesteps, "path": path, "layout": layouts.get(path, ""),
               "ms_per_model_step": statistics.median(ms[path]),
               "speed_vs_job": statistics.median(j / p for j, p in zip(ms["job"], ms[path])),
               "speed_vs_plain": statistics.median(j / p for j, p in zip(ms["plain"], ms[path]))}
        rows.append(row)
        print(f"  {path:7s} {row['layout']:8s} {row['ms_per_model_step']:.3f} ms per model-step, "
              f"{row['speed_vs_job']:.2f}x one job's speed, {row['speed_vs_plain']:.2f}x the plain loop's", flush=True)
    return rows


def tree_memory_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB (Linux /proc)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def timed_sweep(args: list[str], folder: Path) -> dict:
    """Wall seconds and peak memory (all processes together, sampled every 0.2 s) of one whole sweep."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "seqrev.train", "-m", *args, f"hydra.sweep.dir={folder}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, tree_memory_mb(process.pid))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"the sweep {' '.join(args)} failed:\n{process.stderr.read().decode()[-2000:]}")
    finished = len(list(folder.glob("*/results.json")))
    return {"wall_s": wall, "peak_memory_mb": peak, "jobs": finished}


SWEEPS = {
    "tutorial table (60 jobs)": ["experiment=tutorial_table"],
    "30 seeds of both_outputs, T=4": ["model=both_outputs", "seed=range(30)"],
}


def whole_sweeps(quick: bool) -> list[dict]:
    """Each sweep with the packed launcher and with joblib's, back to back."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, args in SWEEPS.items():
            if quick:  # a few jobs of one epoch each: that the measurement runs, not what it measures
                table = "experiment=tutorial_table" in args
                grid = f"model={','.join(TUTORIAL_WIRINGS)}" if table else "model=both_outputs"
                args = [grid, "seed=0,1,2", "trainer.max_epochs=1", "data.n_train=200"]
            row = {"sweep": name}
            for launcher in ("packed", "joblib"):
                measured = timed_sweep([*args, f"hydra/launcher={launcher}"], Path(scratch) / f"{name[:5]}-{launcher}")
                row.update({f"{launcher}_{key}": value for key, value in measured.items()})
            row["speed_up"] = row["joblib_wall_s"] / row["packed_wall_s"]
            rows.append(row)
            print(f"  {name}: packed {row['packed_wall_s']:.0f} s (peak {row['packed_peak_memory_mb']:.0f} MB), "
                  f"joblib {row['joblib_wall_s']:.0f} s (peak {row['joblib_peak_memory_mb']:.0f} MB): "
                  f"{row['speed_up']:.2f}x faster packed", flush=True)
    return rows
