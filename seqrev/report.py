"""`python -m seqrev.report <sweep dir> [more dirs]`: a sweep's results.json files as the tutorial's table,
with how sure each comparison of wirings is.

Writes report.md, report.csv, (with matplotlib) report.png, and report.html (seqrev.report_page) into the
first directory given, each rendering what seqrev.report_model works out. Reads plain JSON only, so it
starts instantly: no torch, no Lightning.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import signal
import sys
from pathlib import Path

from seqrev.comparisons import DELTA, Comparison
from seqrev.report_model import (
    SECTIONS,
    Cell,
    Experiment,
    Report,
    against,
    build,
    gather,
    how_sure,
    mode_baseline,
    score_cell,
    seeds_to_settle,
)
from seqrev.results import FILENAME, flat_settings

# Imports inside functions: the HTML page and matplotlib load only when they are written.

__all__ = ["build", "gather", "main", "markdown", "mode_baseline", "write_report"]


def markdown(report: Report) -> str:
    """report.md's text."""
    ok = [r for r in report.runs if r.get("status") == "ok"]
    lines = [f"# seqrev report: {len(ok)} finished runs", ""]
    if report.shared:
        lines += [f"Settings shared by every run: {report.shared}.", ""]
    for experiment in report.experiments:
        if len(report.experiments) > 1:
            lines += [f"# {experiment.title}", ""]
        lines += _score_tables(experiment) + _comparison_table(report, experiment)
    failed = [r for r in report.runs if r.get("status") != "ok"]
    if failed:
        lines += ["## Jobs that did not finish", ""]
        lines += [f"- `{r['job_dir']}`: {r.get('status')}: {r.get('error', 'no error recorded')}" for r in failed]
        lines.append("")
    conflicts = [c for experiment in report.experiments for c in experiment.conflicts]
    if conflicts or report.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in conflicts + report.warnings] + [""]
    return "\n".join(lines)


def _score_tables(experiment: Experiment) -> list[str]:
    """Test token accuracy (with each mean's 95% interval, the tutorial's figure, the mode baseline),
    sequence accuracy and epochs run: a row per (units, T), a column per wiring, seeds pooled."""
    lines, baseline_column = [], bool(experiment.baselines)
    for title, key, percent in SECTIONS:
        first = key == "test_acc"
        note = "mean ± std over seeds (min–max), n = seeds" + (
            "; the mean's 95% interval (Student's t); the tutorial's figure in brackets" if first else "")
        lines += [f"## {title}", "", note, ""]
        extra = first and baseline_column
        lines.append("| units | T | " + " | ".join(experiment.wirings) + (" | mode baseline |" if extra else " |"))
        lines.append("|---|---|" + "---|" * (len(experiment.wirings) + extra))
        for (units, timesteps), cell in experiment.cells.items():
            shown = [score_cell(cell.wirings.get(w), key, percent, first) for w in experiment.wirings]
            tail = f" | {cell.baseline:.2f} |" if extra and cell.baseline is not None else " | – |" if extra else " |"
            lines.append(f"| {units} | {timesteps} | " + " | ".join(shown) + tail)
        lines.append("")
    return lines


def _comparison_table(report: Report, experiment: Experiment) -> list[str]:
    rows = [_comparison_row(cell, c) for cell in experiment.cells.values() for c in cell.comparisons]
    if not rows:
        return []
    return ["## Comparisons", "", how_sure(report), "",
            "| units | T | A | B | A − B (points) | interval | P(A > B) | verdict | seeds to settle |",
            "|---|---|---|---|---|---|---|---|---|", *rows, ""]


def _comparison_row(cell: Cell, c: Comparison) -> str:
    difference = "–" if c.difference is None else f"{c.difference.estimate:+.2f}"
    interval = "–" if c.difference is None else f"{c.difference.low:+.2f} to {c.difference.high:+.2f}"
    chance = "–" if c.p_improvement is None else f"{c.p_improvement:.2f}"
    return (f"| {cell.units} | {cell.timesteps} | {c.a} | {against(cell, c)} | {difference} | {interval} | {chance} "
            f"| {c.verdict} | {seeds_to_settle(c)} |")


def write_csv(report: Report, path: Path) -> None:
    """report.csv: a row per run (`kind` run: its fields, its extra/ scalars and settings a column each),
    then a row per comparison (`kind` comparison)."""
    runs = [{"kind": "run", **{k: v for k, v in r.items() if k not in ("extra", "config", "history", "examples")},
             **{f"extra/{k}": v for k, v in (r.get("extra") or {}).items()},
             **{f"config/{k}": v for k, v in flat_settings(r.get("config")).items()}} for r in report.runs]
    compared = [{"kind": "comparison", "experiment": e.title, "units": cell.units, "timesteps": cell.timesteps,
                 "a": c.a, "b": against(cell, c), "n_a": c.n_a, "n_b": c.n_b,
                 "difference": None if c.difference is None else round(c.difference.estimate, 4),
                 "low": None if c.difference is None else round(c.difference.low, 4),
                 "high": None if c.difference is None else round(c.difference.high, 4),
                 "p_improvement": c.p_improvement, "verdict": c.verdict, "seeds_needed": c.seeds_needed,
                 "confidence": report.confidence} for e, cell, c in report.comparisons]
    rows = runs + compared
    fields = ["kind", "job_dir"] + sorted({k for r in rows for k in r} - {"kind", "job_dir", "traceback"})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})


def write_report(directories: list[Path], quiet: bool = False, delta: float | None = None) -> Path | None:
    """report.md, report.csv, report.png (with matplotlib) and report.html into the first directory, the
    Markdown also printed unless `quiet`; the page's path, or None when no results.json was readable. A
    settle sweep's folder (seqrev.sweepfolder) gives its looks and its delta; `delta` overrides it."""
    from seqrev.plotting import MISSING, pyplot
    from seqrev.report_page import page, table_figure
    from seqrev.sweepfolder import read_settle

    runs, warnings = gather(directories)
    settle, trouble = read_settle(directories[0])
    warnings += [trouble] if trouble else []
    for warning in warnings if not quiet else ():
        print(f"warning: {warning}", file=sys.stderr)
    if not runs:
        return None
    out = directories[0]
    report = build(runs, warnings, looks=settle.get("looks", 1),
                   delta=delta if delta is not None else settle.get("delta", DELTA))
    text = markdown(report)
    (out / "report.md").write_text(text)
    write_csv(report, out / "report.csv")
    written = [out / "report.md", out / "report.csv"]
    plt = pyplot()
    if plt is not None and report.experiments:  # the first experiment's chart: the tutorial's protocol when present
        figure = table_figure(plt, report.experiments[0])
        figure.savefig(out / "report.png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(out / "report.png")
    (out / "report.html").write_text(page(report, out), encoding="utf-8")
    written.append(out / "report.html")
    if not quiet:
        # Every file is written before anything is printed: piped into `head`, the report stops quietly at
        # the first line nobody reads (SIGPIPE's default, as Unix tools do) and has still written everything.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        print(text)
        if out / "report.png" not in written:
            print(f"no plot: {MISSING}", file=sys.stderr)
        print("wrote " + ", ".join(map(str, written)))
    return out / "report.html"


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: give a number of points above 0 (e.g. 2)")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqrev.report", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", type=Path, help="sweep or run directories to gather")
    parser.add_argument("--delta", type=positive_number, default=None,
                        help=f"points within which two wirings count as equivalent (default {DELTA:g}, or the "
                             "settle sweep's own)")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.directories if not d.is_dir()]
    if missing:
        print(f"seqrev.report: no such directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    if write_report(args.directories, delta=args.delta) is None:
        print(f"seqrev.report: no readable {FILENAME} under {', '.join(map(str, args.directories))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
