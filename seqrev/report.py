"""`python -m seqrev.report <sweep dir> [more dirs]`: a sweep's results.json files as the tutorial's table.

Writes report.md, report.csv, (with matplotlib) report.png, and report.html (seqrev.report_page) into the
first directory given. Reads plain JSON only, so it starts instantly: no torch, no Lightning.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import statistics
import sys
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from seqrev.catalog import ordered
from seqrev.results import FILENAME, flat_settings, read_results


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


# Table axes (rows: units, T; columns: the wiring; seeds pooled), copies of other settings, and the
# lengths' lower bound when it only follows T: none of these split runs into separate experiments.
AXES = {"seed", "data.seed", "data.timesteps", "model.units", "model.timesteps", "model.n_features", "model.padded"}

# The tutorial's protocol: its figures and its mode baseline are shown only beside runs made with it.
TUTORIAL_PROTOCOL = {
    "data.task": "reverse", "data.n_features": 10, "data.n_train": 2000, "data.n_test": 200, "data.val_fraction": 0.1,
    "data.batch_size": 32, "model.cell": "lstm", "model.init": "keras", "model.optimizer": "Adam(lr=0.001, eps=1e-07)",
    "model.scheduler": None, "trainer.max_epochs": 100,
    "trainer.precision": "32-true", "trainer.gradient_clip_val": None, "trainer.accumulate_grad_batches": 1,
    "early_stopping.monitor": "val/loss", "early_stopping.patience": 5,
}


def settings_of(run: dict) -> dict[str, Any]:
    """What defines a run's experiment, one key per setting (table axes and seeds left out)."""
    config = run.get("config")
    if config is None:  # results from before `config` was recorded: what they do say
        settings = {"data.task": run.get("task") or "reverse", "model.cell": run.get("cell") or "lstm",
                    "scheduler": run.get("scheduler") or "none"}
        if run.get("min_timesteps") not in (None, run.get("timesteps")):
            settings["data.min_timesteps"] = run["min_timesteps"]
        return settings
    settings = {k: v for k, v in flat_settings(config).items() if k not in AXES}
    if settings.get("data.min_timesteps") == run.get("timesteps"):
        settings.pop("data.min_timesteps")  # fixed lengths: it only follows T
    for part in ("model.optimizer", "model.scheduler"):  # one setting each: Adam(lr=0.001, eps=1e-07)
        values = {k.removeprefix(part + "."): settings.pop(k) for k in list(settings) if k.startswith(part + ".")}
        target = str(values.pop("_target_", "")).rpartition(".")[2]
        settings[part] = f"{target}({', '.join(f'{k}={v}' for k, v in values.items())})" if target else None
    return settings


def follows_tutorial(settings: dict[str, Any]) -> bool:
    """Whether runs with these settings were made with the tutorial's protocol."""
    if "trainer.max_epochs" not in settings:  # old results: only task, cell and schedule are known
        return (settings.get("data.task"), settings.get("model.cell"), settings.get("scheduler")) == (
            "reverse", "lstm", "none") and "data.min_timesteps" not in settings
    return "data.min_timesteps" not in settings and all(
        settings.get(key, "<absent>") == value for key, value in TUTORIAL_PROTOCOL.items())


def experiments(runs: list[dict]) -> tuple[dict[str, Any], list[tuple[dict[str, Any], list[dict]]]]:
    """The settings every run shares, and the runs grouped by the settings that vary among them
    (every setting but the table's axes and the seed): like is only ever pooled with like."""
    all_settings = [settings_of(run) for run in runs]
    keys = sorted({key for settings in all_settings for key in settings})
    varying = [k for k in keys if len({json.dumps(s.get(k, "<absent>"), sort_keys=True) for s in all_settings}) > 1]
    shared = {k: all_settings[0][k] for k in keys if k not in varying} if all_settings else {}
    groups: dict[str, tuple[dict[str, Any], list[dict]]] = {}
    for run, settings in zip(runs, all_settings):
        key = json.dumps({k: settings.get(k, "<absent>") for k in varying}, sort_keys=True, default=str)
        distinct = {k: settings[k] for k in varying if k in settings}  # absent stays absent: e.g. fixed lengths
        groups.setdefault(key, (distinct, []))[1].append(run)
    ordered_groups = sorted(groups.values(), key=lambda g: (not follows_tutorial({**shared, **g[0]}),
                                                            json.dumps(g[0], sort_keys=True, default=str)))
    return shared, ordered_groups


def mode_baseline(n_features: int, timesteps: int) -> float:
    """Token accuracy (%) of predicting each sequence's most frequent symbol at every position, for
    uniform random symbols: E[largest count] / T, exactly (a generating function), without torch."""
    from math import factorial

    def at_most(m: int) -> float:  # P(no symbol occurs more than m times)
        series = [1 / factorial(j) for j in range(m + 1)]
        product = [1.0]
        for _ in range(n_features):
            product = [sum(product[i] * series[k - i] for i in range(max(0, k - m), min(k, len(product) - 1) + 1))
                       for k in range(min(timesteps, len(product) - 1 + m) + 1)]
        return factorial(timesteps) / n_features ** timesteps * (product[timesteps] if timesteps < len(product) else 0)

    expected_max = sum(1 - at_most(m - 1) for m in range(1, timesteps + 1))
    return 100 * expected_max / timesteps


def has_mode_baseline(settings: dict[str, Any]) -> bool:
    """Whether the mode baseline applies: fixed-length reversed or copied sequences of uniform symbols."""
    return settings.get("data.task", "reverse") in ("reverse", "copy") and "data.min_timesteps" not in settings


def _describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'absent' if v == '<absent>' else v}" for k, v in settings.items())


def markdown(runs: list[dict], warnings: list[str], views: tuple[str, list[Experiment]] | None = None) -> str:
    """report.md's text; `views`: experiment_views of the finished runs, when already worked out."""
    ok = [r for r in runs if r.get("status") == "ok"]
    lines = [f"# seqrev report: {len(ok)} finished runs", ""]
    shared, views = views or experiment_views(ok)
    if shared:
        lines += [f"Settings shared by every run: {shared}.", ""]
    for view in views:
        lines += ([f"# {view.title}", ""] if len(views) > 1 else []) + view.tables  # one set of tables each
    failed = [r for r in runs if r.get("status") != "ok"]
    if failed:
        lines += ["## Jobs that did not finish", ""]
        lines += [f"- `{r['job_dir']}`: {r.get('status')}: {r.get('error', 'no error recorded')}" for r in failed]
        lines.append("")
    conflicts = [c for view in views for c in view.conflicts]
    if conflicts or warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in conflicts + warnings] + [""]
    return "\n".join(lines)


def _tables(runs: list[dict], settings: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Test token accuracy, sequence accuracy and epochs run: a row per (units, T), a column per wiring,
    seeds pooled; two runs of one seed in a cell are a conflict, reported, never averaged."""
    table = grouped(runs)
    wirings = ordered({m for cells in table.values() for m in cells})
    tutorial = follows_tutorial(settings)
    figures = tutorial_figures() if tutorial else {"test_acc_percent": {}}
    n_features = settings.get("data.n_features", 10)
    with_baseline = has_mode_baseline(settings)
    lines, conflicts = [], []
    sections = [("Test token accuracy (%)", "test_acc", True, True),
                ("Test sequence accuracy (%)", "test_seq_acc", True, False),
                ("Epochs run", "epochs_run", False, False)]
    for title, key, percent, first in sections:
        baseline_column = first and with_baseline
        lines += [f"## {title}", "", "mean ± std over seeds (min–max), n = seeds" +
                  ("; the tutorial's figure in brackets" if first and tutorial else ""), ""]
        lines.append("| units | T | " + " | ".join(wirings) + (" | mode baseline |" if baseline_column else " |"))
        lines.append("|---|---|" + "---|" * (len(wirings) + (1 if baseline_column else 0)))
        for units, timesteps in sorted(table):
            cells = []
            for wiring in wirings:
                runs_here = table[(units, timesteps)].get(wiring, [])
                seeds = [r.get("seed") for r in runs_here]
                repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
                if repeated:
                    cells.append("conflict: seed " + ", ".join(map(str, repeated)) + " twice")
                    if first:
                        jobs = [r["job_dir"] for r in runs_here if r.get("seed") in repeated]
                        conflicts.append(f"{wiring}, units={units}, T={timesteps}: the same experiment and seed in "
                                         f"{len(jobs)} runs ({', '.join(jobs)}); not averaged")
                    continue
                cell = summarise([r[key] for r in runs_here], percent, 2 if percent else 1)
                if runs_here:
                    cell += f" n={len(runs_here)}"
                reference = figures["test_acc_percent"].get(str(units), {}).get(str(timesteps), {}).get(wiring)
                if first and reference is not None:
                    cell += f" [{reference:.3f}]"
                cells.append(cell)
            tail = f" | {mode_baseline(n_features, timesteps):.2f} |" if baseline_column else " |"
            lines.append(f"| {units} | {timesteps} | " + " | ".join(cells) + tail)
        lines.append("")
    return lines, conflicts


def write_csv(runs: list[dict], path: Path) -> None:
    # a user's extra/ scalars get a column each; the settings too, one column per setting
    runs = [{**{k: v for k, v in r.items() if k not in ("extra", "config", "history", "examples")},
             **{f"extra/{k}": v for k, v in (r.get("extra") or {}).items()},
             **{f"config/{k}": v for k, v in flat_settings(r.get("config")).items()}} for r in runs]
    fields = ["job_dir"] + sorted({k for r in runs for k in r} - {"job_dir", "traceback"})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for run in runs:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in run.items()})


class Experiment(NamedTuple):
    """One experiment of the report, ready to show: its runs by (units, T) and wiring, report.md's tables
    and the conflicts they found, the tutorial's figures (when made with its protocol) and the mode
    baseline by T (when it applies)."""

    title: str
    runs: list[dict]
    tables: list[str]
    conflicts: list[str]
    cells: dict[tuple[int, int], dict[str, list[dict]]]
    wirings: list[str]
    figures: dict[str, Any]
    baselines: dict[int, float]


def experiment_views(ok: list[dict]) -> tuple[str, list[Experiment]]:
    """The settings every finished run shares (as text) and each experiment, as report.md groups them."""
    shared, groups = experiments(ok)
    views = []
    for distinct, group in groups:
        settings = {**shared, **distinct}
        cells = grouped(group)
        n_features = settings.get("data.n_features", 10)
        views.append(Experiment(
            _describe(distinct) if len(groups) > 1 else "The tutorial's table", group, *_tables(group, settings),
            cells, ordered({m for c in cells.values() for m in c}),
            tutorial_figures()["test_acc_percent"] if follows_tutorial(settings) else {},
            {t: mode_baseline(n_features, t) for _, t in cells} if has_mode_baseline(settings) else {}))
    return (_describe(shared) if shared and len(ok) > 1 else ""), views


def write_report(directories: list[Path], quiet: bool = False) -> Path | None:
    """report.md, report.csv, report.png (with matplotlib) and report.html into the first directory, the
    Markdown also printed unless `quiet`; the page's path, or None when no results.json was readable."""
    from seqrev.plotting import MISSING, pyplot
    from seqrev.report_page import page, table_figure

    runs, warnings = gather(directories)
    for warning in warnings if not quiet else ():
        print(f"warning: {warning}", file=sys.stderr)
    if not runs:
        return None
    out = directories[0]
    shared, views = experiment_views([r for r in runs if r.get("status") == "ok"])
    text = markdown(runs, warnings, (shared, views))
    (out / "report.md").write_text(text)
    write_csv(runs, out / "report.csv")
    written = [out / "report.md", out / "report.csv"]
    plt = pyplot()
    if plt is not None and views:  # the first experiment's chart: the tutorial's own protocol when present
        first = views[0]
        figure = table_figure(plt, first.cells, first.wirings, first.figures, first.baselines)
        figure.savefig(out / "report.png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(out / "report.png")
    (out / "report.html").write_text(page(runs, warnings, out, shared, views), encoding="utf-8")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqrev.report", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", type=Path, help="sweep or run directories to gather")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.directories if not d.is_dir()]
    if missing:
        print(f"seqrev.report: no such directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    if write_report(args.directories) is None:
        print(f"seqrev.report: no readable {FILENAME} under {', '.join(map(str, args.directories))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
