"""`python -m seqrev.report <sweep dir> [more dirs]`: a sweep's results.json files as the tutorial's table.

Writes report.md, report.csv and (with matplotlib) report.png into the first directory given. Reads
plain JSON only, so it starts instantly: no torch, no Lightning.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

from seqrev.catalog import ordered
from seqrev.results import FILENAME, read_results


def tutorial_figures() -> dict[str, Any]:
    return json.loads(resources.files("seqrev").joinpath("tutorial_figures.json").read_text())


def gather(directories: list[Path]) -> tuple[list[dict], list[str]]:
    """Every results.json below the directories, each with its `job_dir`; and warnings for unreadable ones."""
    runs, warnings = [], []
    for directory in directories:
        for path in sorted(directory.rglob(FILENAME)):
            try:
                results = read_results(path)
            except (OSError, ValueError) as error:
                warnings.append(f"skipped {path}: not readable as results ({error})")
                continue
            runs.append({**results, "job_dir": str(path.parent)})
    return runs, warnings


def _ordered(names: set[str]) -> list[str]:
    return ordered(names)


def summarise(values: list[float], percent: bool = True, digits: int = 2) -> str:
    scale = 100 if percent else 1
    values = [scale * v for v in values]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {spread:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def grouped(runs: list[dict]) -> dict[tuple[int, int], dict[str, list[dict]]]:
    """ok runs by (units, timesteps), then by wiring."""
    table: dict[tuple[int, int], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.get("status") == "ok":
            table[(run["units"], run["timesteps"])][run["model"]].append(run)
    return table


def task_and_cell(run: dict) -> tuple[str, str, str]:
    """The (task, cell, learning-rate schedule) a run belongs to; runs from before tasks, cells and
    schedules existed were reversal with LSTMs at a constant rate."""
    task = run.get("task") or "reverse"
    if (run.get("min_timesteps") or run.get("timesteps")) != run.get("timesteps"):
        task += f" (lengths {run['min_timesteps']}–{run['timesteps']})"
    return task, run.get("cell") or "lstm", run.get("scheduler") or "none"


TUTORIAL_SETTING = ("reverse", "lstm", "none")


def by_task_and_cell(runs: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Runs grouped by (task, cell, schedule), the tutorial's own setting first."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[task_and_cell(run)].append(run)
    return dict(sorted(groups.items(), key=lambda item: (item[0] != TUTORIAL_SETTING, item[0])))


def markdown(runs: list[dict], warnings: list[str]) -> str:
    ok = [r for r in runs if r.get("status") == "ok"]
    lines = [f"# seqrev report: {len(ok)} finished runs", ""]
    groups = by_task_and_cell(ok)
    for (task, cell, schedule), group in groups.items():
        if list(groups) != [TUTORIAL_SETTING]:  # one table set per task, cell and schedule
            lines += [f"# task={task}, cell={cell}" + (f", scheduler={schedule}" if schedule != "none" else ""), ""]
        lines += _tables(group, with_tutorial=(task, cell, schedule) == TUTORIAL_SETTING)
    failed = [r for r in runs if r.get("status") != "ok"]
    if failed:
        lines += ["## Jobs that did not finish", ""]
        lines += [f"- `{r['job_dir']}`: {r.get('status')}: {r.get('error', 'no error recorded')}" for r in failed]
        lines.append("")
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    return "\n".join(lines)


def _tables(runs: list[dict], with_tutorial: bool) -> list[str]:
    """Test token accuracy, sequence accuracy and epochs run: a row per (units, T), a column per wiring."""
    table = grouped(runs)
    wirings = _ordered({m for cells in table.values() for m in cells})
    figures = tutorial_figures()
    lines = []
    sections = [("Test token accuracy (%)", "test_acc", True, with_tutorial),
                ("Test sequence accuracy (%)", "test_seq_acc", True, False),
                ("Epochs run", "epochs_run", False, False)]
    for title, key, percent, reference_column in sections:
        lines += [f"## {title}", "", "mean ± std over seeds (min–max)" +
                  ("; the tutorial's figure in brackets" if reference_column else ""), ""]
        lines.append("| units | T | " + " | ".join(wirings) + (" | mode baseline |" if reference_column else " |"))
        lines.append("|---|---|" + "---|" * (len(wirings) + (1 if reference_column else 0)))
        for units, timesteps in sorted(table):
            cells = []
            for wiring in wirings:
                runs_here = table[(units, timesteps)].get(wiring, [])
                cell = summarise([r[key] for r in runs_here], percent, 2 if percent else 1)
                if runs_here:
                    cell += f" n={len(runs_here)}"
                reference = figures["test_acc_percent"].get(str(units), {}).get(str(timesteps), {}).get(wiring)
                if reference_column and reference is not None:
                    cell += f" [{reference:.3f}]"
                cells.append(cell)
            baseline = figures["mode_baseline_percent"].get(str(timesteps))
            tail = " |"
            if reference_column:
                tail = f" | {baseline:.2f} |" if baseline is not None else " | – |"
            lines.append(f"| {units} | {timesteps} | " + " | ".join(cells) + tail)
        lines.append("")
    return lines


def write_csv(runs: list[dict], path: Path) -> None:
    fields = ["job_dir"] + sorted({k for r in runs for k in r} - {"job_dir", "traceback"})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for run in runs:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in run.items()})


def plot(runs: list[dict], path: Path) -> bool:
    """Accuracy against timesteps per wiring, and accuracy per position at the largest T. False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = by_task_and_cell([r for r in runs if r.get("status") == "ok"])
    if not groups:
        return False
    setting, first_group = next(iter(groups.items()))  # the tutorial's own setting when present
    table = grouped(first_group)
    figures = tutorial_figures()["test_acc_percent"] if setting == TUTORIAL_SETTING else {}
    wirings = _ordered({m for cells in table.values() for m in cells})
    colours = {w: f"C{i}" for i, w in enumerate(wirings)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for units in sorted({u for u, _ in table}):
        style = "-" if units == min(u for u, _ in table) else "--"
        for wiring in wirings:
            points = [(t, [100 * r["test_acc"] for r in table[(u, t)].get(wiring, [])]) for u, t in sorted(table)
                      if u == units and table[(u, t)].get(wiring)]
            if not points:
                continue
            xs = [t for t, _ in points]
            means = [statistics.fmean(v) for _, v in points]
            errors = [statistics.stdev(v) if len(v) > 1 else 0 for _, v in points]
            left.errorbar(xs, means, yerr=errors, fmt=style + "o", color=colours[wiring], capsize=3,
                          label=f"{wiring} ({units} units)")
            reference = [(int(t), v[wiring]) for t, v in figures.get(str(units), {}).items() if wiring in v]
            if reference:
                left.scatter(*zip(*reference), marker="x", s=70, color=colours[wiring])
    left.set(xscale="log", xlabel="timesteps", ylabel="test token accuracy (%)", ylim=(0, 102),
             title="seqrev (lines, ± std over seeds) vs the tutorial (x)")
    timesteps_present = sorted({t for _, t in table})
    left.set_xticks(timesteps_present, [str(t) for t in timesteps_present])
    left.minorticks_off()
    left.legend(fontsize=7)
    largest = max(timesteps_present) if timesteps_present else None
    units_here = min((u for u, t in table if t == largest), default=None)
    for wiring in wirings:
        cell = table.get((units_here, largest), {}).get(wiring, [])
        if cell:
            per_position = [statistics.fmean(r["test_acc_per_position"][i] for r in cell) * 100
                            for i in range(len(cell[0]["test_acc_per_position"]))]
            right.plot(range(1, len(per_position) + 1), per_position, "o-", color=colours[wiring], label=wiring)
    right.set(xlabel="output position", ylabel="test token accuracy (%)", ylim=(0, 102),
              title=f"accuracy per output position at T={largest}, {units_here} units")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqrev.report", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", type=Path, help="sweep or run directories to gather")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.directories if not d.is_dir()]
    if missing:
        print(f"seqrev.report: no such directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs, warnings = gather(args.directories)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not runs:
        print(f"seqrev.report: no readable {FILENAME} under {', '.join(map(str, args.directories))}", file=sys.stderr)
        return 1
    out = args.directories[0]
    text = markdown(runs, warnings)
    (out / "report.md").write_text(text)
    write_csv(runs, out / "report.csv")
    print(text)
    written = [out / "report.md", out / "report.csv"]
    if plot(runs, out / "report.png"):
        written.append(out / "report.png")
    else:
        print("no plot: matplotlib is not installed (pip install -e '.[plot]')", file=sys.stderr)
    print("wrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
