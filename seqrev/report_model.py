"""What a report says, worked out once from results.json files: experiments kept apart, cells by (units, T),
each wiring's scores and mean, every comparison (seqrev.comparisons), and the few phrases every format
shares. seqrev.report renders it as report.md and report.csv, seqrev.report_page as report.html. Reads plain
JSON only: no torch, no Lightning.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from importlib import resources
from math import factorial
from pathlib import Path
from typing import Any, NamedTuple

from seqrev.catalog import ordered
from seqrev.comparisons import (
    ALPHA,
    DELTA,
    MOST_SEEDS,
    Comparison,
    Interval,
    compare_to_figure,
    compare_wirings,
    level,
    mean_interval,
)
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


class Wiring(NamedTuple):
    """One wiring in one cell: its finished runs and, in points, its test token accuracies (one a seed) with
    the mean's 95% interval (None below 2 seeds); `conflict` when a seed appears twice (nothing averaged)."""

    runs: list[dict]
    scores: list[float]
    mean: Interval | None
    figure: float | None  # the tutorial's, for runs made with its protocol
    conflict: str | None


class Cell(NamedTuple):
    """One row of the tutorial's table (units, T): each wiring, the mode baseline and every comparison."""

    units: int
    timesteps: int
    wirings: dict[str, Wiring]
    baseline: float | None
    comparisons: list[Comparison]


class Experiment(NamedTuple):
    """Runs of one experiment (the settings that vary among a report's runs; seeds pooled), by cell."""

    title: str
    settings: dict[str, Any]
    runs: list[dict]
    wirings: list[str]  # in the tutorial's order
    cells: dict[tuple[int, int], Cell]
    conflicts: list[str]

    @property
    def figures(self) -> dict[str, Any]:
        """The tutorial's figures by units and T, when these runs were made with its protocol."""
        return tutorial_figures()["test_acc_percent"] if follows_tutorial(self.settings) else {}

    @property
    def baselines(self) -> dict[int, float]:
        return {t: cell.baseline for (_, t), cell in self.cells.items() if cell.baseline is not None}

    def runs_by_cell(self) -> dict[tuple[int, int], dict[str, list[dict]]]:
        return {key: {name: wiring.runs for name, wiring in cell.wirings.items()} for key, cell in self.cells.items()}


class Report(NamedTuple):
    """Everything the report says, worked out once; report.md, report.csv and report.html render it."""

    runs: list[dict]  # every results.json read, finished or not
    warnings: list[str]
    shared: str  # the settings every finished run shares, as text
    experiments: list[Experiment]
    confidence: float  # each comparison's interval: all of them hold together at 1 - ALPHA
    looks: int  # how often a settle sweep looked at these runs (1 for an ordinary report)
    delta: float

    @property
    def comparisons(self) -> list[tuple[Experiment, Cell, Comparison]]:
        return [(e, c, comparison) for e in self.experiments for c in e.cells.values() for comparison in c.comparisons]

    @property
    def family(self) -> int:
        return len(self.comparisons)


def build(runs: list[dict], warnings: list[str], looks: int = 1, delta: float = DELTA) -> Report:
    """The report of `runs`: experiments kept apart, cells by (units, T), and every comparison at the level
    that holds for all of them together over `looks` looks (seqrev.comparisons)."""
    ok = [r for r in runs if r.get("status") == "ok"]
    shared, groups = experiments(ok)
    drafts = [_draft(distinct, group, {**shared, **distinct}, len(groups) > 1) for distinct, group in groups]
    family = sum(_comparisons_in(cell) for draft in drafts for cell in draft.cells.values())
    confidence = level(family, looks)
    done = [draft._replace(cells={key: _compared(cell, confidence, delta) for key, cell in draft.cells.items()})
            for draft in drafts]
    return Report(runs, warnings, _describe(shared) if shared and len(ok) > 1 else "", done, confidence, looks, delta)


def _draft(distinct: dict[str, Any], group: list[dict], settings: dict[str, Any], several: bool) -> Experiment:
    """An experiment's cells with each wiring's scores and mean, before any comparison."""
    table = grouped(group)
    wirings = ordered({m for cells in table.values() for m in cells})
    figures = tutorial_figures()["test_acc_percent"] if follows_tutorial(settings) else {}
    n_features = settings.get("data.n_features", 10)
    cells, conflicts = {}, []
    for (units, timesteps), by_wiring in sorted(table.items()):
        found = {}
        for wiring in wirings:
            runs_here = by_wiring.get(wiring, [])
            if not runs_here:
                continue
            seeds = [r.get("seed") for r in runs_here]
            repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
            conflict = None
            if repeated:
                conflict = "conflict: seed " + ", ".join(map(str, repeated)) + " twice"
                jobs = [r["job_dir"] for r in runs_here if r.get("seed") in repeated]
                conflicts.append(f"{wiring}, units={units}, T={timesteps}: the same experiment and seed in "
                                 f"{len(jobs)} runs ({', '.join(jobs)}); not averaged")
            scores = [] if conflict else [100 * r["test_acc"] for r in runs_here]
            figure = figures.get(str(units), {}).get(str(timesteps), {}).get(wiring)
            found[wiring] = Wiring(runs_here, scores, mean_interval(scores, 0.95), figure, conflict)
        baseline = mode_baseline(n_features, timesteps) if has_mode_baseline(settings) else None
        cells[(units, timesteps)] = Cell(units, timesteps, found, baseline, [])
    title = _describe(distinct) if several else "The tutorial's table"
    return Experiment(title, settings, group, wirings, cells, conflicts)


def _pairs(cell: Cell) -> list[tuple[str, str]]:
    names = [name for name, wiring in cell.wirings.items() if wiring.scores]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def _comparisons_in(cell: Cell) -> int:
    scored = [w for w in cell.wirings.values() if w.scores]
    return (len(_pairs(cell)) + (len(scored) if cell.baseline is not None else 0)
            + sum(w.figure is not None for w in scored))


def _compared(cell: Cell, confidence: float, delta: float) -> Cell:
    """The cell with every comparison: each pair of wirings (the better mean first), each wiring against
    the mode baseline and against the tutorial's figure, where the cell has them."""
    found = []
    for a, b in _pairs(cell):
        first, second = cell.wirings[a].scores, cell.wirings[b].scores
        if statistics.fmean(first) < statistics.fmean(second):
            (a, first), (b, second) = (b, second), (a, first)
        found.append(compare_wirings(a, b, first, second, confidence, delta))
    for name, wiring in cell.wirings.items():
        if wiring.scores and cell.baseline is not None:
            found.append(compare_to_figure(name, wiring.scores, cell.baseline, "mode baseline", confidence, delta))
    for name, wiring in cell.wirings.items():
        if wiring.scores and wiring.figure is not None:
            found.append(compare_to_figure(name, wiring.scores, wiring.figure, "tutorial", confidence, delta))
    return cell._replace(comparisons=found)


SECTIONS = (("Test token accuracy (%)", "test_acc", True), ("Test sequence accuracy (%)", "test_seq_acc", True),
            ("Epochs run", "epochs_run", False))


def score_cell(wiring: Wiring | None, key: str, percent: bool, first: bool) -> str:
    if wiring is None:
        return "–"
    if wiring.conflict:
        return wiring.conflict
    shown = summarise([r[key] for r in wiring.runs], percent, 2 if percent else 1) + f" n={len(wiring.runs)}"
    if first and wiring.mean is not None:
        shown += f", CI {wiring.mean.low:.2f}–{wiring.mean.high:.2f}"
    if first and wiring.figure is not None:
        shown += f" [{wiring.figure:.3f}]"
    return shown


def how_sure(report: Report) -> str:
    """The sentence that says what the comparisons' intervals promise, together."""
    looks = f" and its {report.looks} looks" if report.looks > 1 else ""
    return (f"Each interval is at {100 * report.confidence:.5g}% (Bonferroni over the report's {report.family} "
            f"comparisons{looks}), so all of them hold together at {100 * (1 - ALPHA):.0f}%: settled, the interval "
            f"excludes 0; equivalent, it lies within ±{report.delta:g} points; not settled, neither, with the seeds "
            "per wiring that would settle it if the means and spreads stayed as seen.")


def against(cell: Cell, comparison: Comparison) -> str:
    """B as the report names it: a wiring, or the figure compared with."""
    if comparison.kind == "mode baseline":
        return f"mode baseline ({cell.baseline:.2f})"
    if comparison.kind == "tutorial":
        return f"tutorial ({cell.wirings[comparison.a].figure:.3f})"
    return comparison.b


def seeds_to_settle(comparison: Comparison) -> str:
    if comparison.verdict != "not settled":
        return ""
    if comparison.difference is None:
        return "at least 2 each"
    return f"about {comparison.seeds_needed}" if comparison.seeds_needed else f"more than {MOST_SEEDS:,}"


