"""report.html: a sweep on one self-contained page that opens from disk, with no server and no network.

The charts are matplotlib's, inlined as SVG (text kept as text): matplotlib is already the report's
plotting library (the `plot` extra), long kept, and SVG needs no script; the page is then a few hundred
KB for the tutorial's 60 runs. The table of runs sorts and filters with a few lines of plain JavaScript
inlined below. It renders what seqrev.report works out, so experiments are kept apart exactly as in
report.md. Reads results.json only: no torch, no Lightning, no TensorBoard.
"""

from __future__ import annotations

import html
import io
import math
import os
import statistics
from pathlib import Path
from typing import Any

from seqrev.plotting import MISSING, pyplot

# Imports inside functions: matplotlib (the `plot` extra) loads only when a picture is drawn.

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1400px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 7px;font-size:13px}
th{background:#f4f4f4;cursor:pointer}tr.filters th{cursor:default;background:#fff}
.filters input{width:95%;font-size:12px}.note{color:#666}.chart svg{max-width:100%;height:auto}
td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}"""
SCRIPT = """document.querySelectorAll('table.runs').forEach(function(t){
 var body=t.tBodies[0],heads=t.querySelectorAll('tr.heads th'),inputs=t.querySelectorAll('tr.filters input');
 heads.forEach(function(th,i){th.addEventListener('click',function(){
  var up=th.dataset.dir!=='up';heads.forEach(function(h){delete h.dataset.dir});th.dataset.dir=up?'up':'down';
  var rows=Array.from(body.rows);rows.sort(function(a,b){
   var x=a.cells[i].dataset.v,y=b.cells[i].dataset.v,nx=parseFloat(x),ny=parseFloat(y);
   var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return up?c:-c});
  rows.forEach(function(r){body.appendChild(r)})})});
 inputs.forEach(function(input){input.addEventListener('input',function(){
  Array.from(body.rows).forEach(function(r){r.hidden=Array.from(inputs).some(function(f,j){
   return f.value&&r.cells[j].dataset.v.toLowerCase().indexOf(f.value.toLowerCase())<0})})})})});"""


def svg(fig: Any) -> str:
    """A matplotlib figure as inline SVG (closed afterwards)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})  # the same runs, the same page
    import matplotlib.pyplot

    matplotlib.pyplot.close(fig)
    text = buffer.getvalue()
    return '<div class="chart">' + text[text.index("<svg"):] + "</div>"


def table_figure(plt: Any, experiment: Any) -> Any:
    """Test token accuracy against T per wiring (a panel per units): every seed a dot, the mean with its 95%
    interval (Student's t), the tutorial's figure (x) and the mode baseline (dashed)."""
    cells, wirings, figures, baselines = experiment.cells, experiment.wirings, experiment.figures, experiment.baselines
    units_values = sorted({u for u, _ in cells})
    fig, axes = plt.subplots(1, len(units_values), figsize=(6.5 * len(units_values), 4.2), squeeze=False)
    for ax, units in zip(axes[0], units_values):
        steps = sorted(t for u, t in cells if u == units)
        for i, wiring in enumerate(wirings):
            found = [(t, cells[(units, t)].wirings.get(wiring)) for t in steps]
            found = [(t, w) for t, w in found if w is not None and w.scores]
            shift = 1 + 0.04 * (i - len(wirings) / 2)  # wirings side by side at each T
            for t, w in found:
                ax.scatter([t * shift] * len(w.scores), w.scores, s=12, color=f"C{i}", alpha=0.5)
            if found:
                means = [statistics.fmean(w.scores) for _, w in found]
                below = [0 if w.mean is None else m - w.mean.low for m, (_, w) in zip(means, found)]
                above = [0 if w.mean is None else w.mean.high - m for m, (_, w) in zip(means, found)]
                ax.errorbar([t * shift for t, _ in found], means, yerr=[below, above], fmt="-", color=f"C{i}",
                            capsize=3, label=wiring)
            tutorial = [(int(t), v[wiring]) for t, v in figures.get(str(units), {}).items() if wiring in v]
            if tutorial:
                ax.scatter(*zip(*tutorial), marker="x", s=60, color=f"C{i}")
        if baselines:
            ax.plot(steps, [baselines[t] for t in steps], "k--", lw=1, label="mode baseline")
        ax.set(xscale="log", xlabel="timesteps", ylabel="test token accuracy (%)", ylim=(0, 102),
               title=f"{units} units: seeds (dots), mean with 95% interval, the tutorial (x)")
        ax.set_xticks(steps, [str(t) for t in steps])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    return fig


VERDICT_MARKS = {"settled": "S", "equivalent": "=", "not settled": "?"}


def improvement_chart(plt: Any, experiment: Any) -> str:
    """For each cell, a wiring-by-wiring matrix of P(a run of the row's wiring scores above a run of the
    column's), each square marked with its verdict: S settled, = equivalent, ? not settled."""
    cells = [cell for cell in experiment.cells.values() if any(c.kind == "wirings" for c in cell.comparisons)]
    fig, axes = plt.subplots(1, max(1, len(cells)), figsize=(3.3 * max(1, len(cells)), 3.5), squeeze=False)
    image = None
    for ax, cell in zip(axes[0], cells):
        names = [name for name in experiment.wirings if name in cell.wirings and cell.wirings[name].scores]
        chance = [[math.nan] * len(names) for _ in names]
        marks = [[""] * len(names) for _ in names]
        for c in (c for c in cell.comparisons if c.kind == "wirings"):
            i, j = names.index(c.a), names.index(c.b)
            chance[i][j], chance[j][i] = c.p_improvement, 1 - c.p_improvement
            marks[i][j] = marks[j][i] = VERDICT_MARKS[c.verdict]
        image = ax.imshow(chance, cmap="RdBu", vmin=0, vmax=1)
        for i in range(len(names)):
            for j in range(len(names)):
                if marks[i][j]:
                    ax.text(j, i, f"{chance[i][j]:.2f}\n{marks[i][j]}", ha="center", va="center", fontsize=6.5)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=6.5)
        ax.set_yticks(range(len(names)), names, fontsize=6.5)
        ax.set_title(f"T={cell.timesteps}, {cell.units} units", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.7, label="P(row's run > column's run)")
    fig.suptitle("P(improvement), marked S settled, = equivalent, ? not settled", fontsize=9)
    return svg(fig)


def curves_chart(plt: Any, cells: dict, wirings: list[str], key: str) -> str:
    """`key` (val/loss or val/acc) by epoch, a panel per cell (rows: units and T, columns: wirings), the
    seeds overlaid, each seed's last epoch marked (x where early stopping ended it)."""
    rows = sorted(cells)
    fig, axes = plt.subplots(len(rows), len(wirings), figsize=(3.1 * len(wirings), 2.3 * len(rows)),
                             squeeze=False, sharey=True)
    for row, cell in zip(axes, rows):
        for ax, wiring in zip(row, wirings):
            for seed, run in enumerate(sorted(cells[cell].get(wiring, []), key=lambda r: str(r.get("seed")))):
                points = [(v["epoch"] + 1, v[key]) for v in run.get("history") or [] if key in v]
                if points:
                    ax.plot(*zip(*points), lw=1, color=f"C{seed}")
                    ax.plot(*points[-1], "x" if run.get("stopped_early") else "o", ms=4, color=f"C{seed}")
            ax.set_title(f"{wiring}, T={cell[1]}, {cell[0]} units", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.supxlabel("epoch")
    fig.supylabel(key)
    fig.tight_layout()
    return svg(fig)


def positions_chart(plt: Any, cells: dict, wirings: list[str]) -> str:
    """Test accuracy per output position, a panel per (units, T), a line per wiring (mean over seeds)."""
    rows = sorted(cells)
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3), squeeze=False, sharey=True)
    for ax, cell in zip(axes[0], rows):
        for i, wiring in enumerate(wirings):
            runs = cells[cell].get(wiring, [])
            if runs:
                width = len(runs[0]["test_acc_per_position"])
                means = [100 * statistics.fmean(r["test_acc_per_position"][p] for r in runs) for p in range(width)]
                ax.plot(range(1, width + 1), means, "o-", ms=3, color=f"C{i}", label=wiring)
        ax.set(title=f"T={cell[1]}, {cell[0]} units", xlabel="output position", ylim=(0, 102))
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("test token accuracy (%)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return svg(fig)


def table(head: list[str], rows: list[list[str]], numeric: bool = True) -> str:
    """A plain HTML table of already-shown values."""
    kind = ' class="num"' if numeric else ""
    return ("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td{kind}>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


def score_tables(experiment: Any) -> str:
    """The experiment's tables of test token accuracy, sequence accuracy and epochs, from the report's data."""
    from seqrev.report_model import SECTIONS, score_cell

    parts, with_baseline = [], bool(experiment.baselines)
    for title, key, percent in SECTIONS:
        first = key == "test_acc"
        head = ["units", "T", *experiment.wirings] + (["mode baseline"] if first and with_baseline else [])
        rows = []
        for (units, timesteps), c in experiment.cells.items():
            row = [str(units), str(timesteps), *(score_cell(c.wirings.get(w), key, percent, first)
                                                  for w in experiment.wirings)]
            if first and with_baseline:
                row.append("–" if c.baseline is None else f"{c.baseline:.2f}")
            rows.append(row)
        note = "mean ± std over seeds (min–max), n = seeds" + (
            "; the mean's 95% interval; the tutorial's figure in brackets" if first else "")
        parts.append(f"<h3>{html.escape(title)}</h3><p class=\"note\">{html.escape(note)}</p>" + table(head, rows))
    return "\n".join(parts)


def comparisons_table(report: Any, experiment: Any) -> str:
    from seqrev.report_model import against, how_sure, seeds_to_settle

    rows = []
    for c in experiment.cells.values():
        for comparison in c.comparisons:
            d = comparison.difference
            rows.append([str(c.units), str(c.timesteps), comparison.a, against(c, comparison),
                         "–" if d is None else f"{d.estimate:+.2f}",
                         "–" if d is None else f"{d.low:+.2f} to {d.high:+.2f}",
                         "–" if comparison.p_improvement is None else f"{comparison.p_improvement:.2f}",
                         comparison.verdict, seeds_to_settle(comparison)])
    if not rows:
        return ""
    head = ["units", "T", "A", "B", "A − B (points)", "interval", "P(A > B)", "verdict", "seeds to settle"]
    return (f"<h3>Comparisons</h3><p class=\"note\">{html.escape(how_sure(report))}</p>"
            + table(head, rows).replace("<table>", '<table class="comparisons">'))


def cell(value: Any) -> str:
    shown = f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)
    return f'<td data-v="{html.escape(shown)}">{html.escape(shown)}</td>'


def runs_table(runs: list[dict], varying: list[str], out: Path) -> str:
    """Every run of an experiment: a link to its folder, what it is, the settings that vary, its scores and
    a few of its answers; sortable (click a heading) and filterable (type under it)."""
    from seqrev.results import flat_settings

    identity = ["model", "timesteps", "units", "seed", "task"]
    scores = ["test_acc", "test_seq_acc", "val_acc", "val_loss", "epochs_run", "stopped_early"]
    columns = ["run", *identity, *[k for k in varying if k not in ("model", "seed")], *scores, "examples"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    filters = "".join(f'<th><input aria-label="filter {html.escape(c)}"></th>' for c in columns)
    body = []
    for run in runs:
        settings = flat_settings(run.get("config"))
        folder = Path(run["job_dir"])
        link = html.escape(Path(os.path.relpath(folder, out)).as_posix())
        examples = "; ".join(f"{e['input']}→{e['predicted']} {'✓' if e['predicted'] == e['expected'] else '✗'}"
                             for e in (run.get("examples") or [])[:3])
        body.append("<tr>" + f'<td data-v="{html.escape(folder.name)}"><a href="{link}">{html.escape(folder.name)}'
                    "</a></td>" + "".join(cell(run.get(k)) for k in identity)
                    + "".join(cell(settings.get(k)) for k in columns[1 + len(identity):-1 - len(scores)])
                    + "".join(cell(run.get(k)) for k in scores) + cell(examples) + "</tr>")
    return (f'<table class="runs"><thead><tr class="heads">{head}</tr><tr class="filters">{filters}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def page(report: Any, out: Path) -> str:
    """The whole page: what seqrev.report worked out (`report`), each experiment apart."""
    from seqrev.results import flat_settings

    ok = [r for r in report.runs if r.get("status") == "ok"]
    plt = pyplot()
    if plt is not None:
        plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "seqrev"})
    parts = [f"<h1>seqrev report: {len(ok)} finished runs</h1>"]
    if report.shared:
        parts.append(f'<p class="note">Settings shared by every run: {html.escape(report.shared)}.</p>')
    if plt is None:
        parts.append(f'<p class="note">No charts: {html.escape(MISSING)}.</p>')
    settings_of_runs = [flat_settings(r.get("config")) for r in ok]
    varying = sorted(k for k in {k for s in settings_of_runs for k in s}
                     if len({repr(s.get(k)) for s in settings_of_runs}) > 1)
    for experiment in report.experiments:
        cells, wirings, group = experiment.runs_by_cell(), experiment.wirings, experiment.runs
        parts.append(f"<h2>{html.escape(experiment.title)}</h2>" + score_tables(experiment))
        if plt is not None:
            parts.append(svg(table_figure(plt, experiment)))
        parts.append(comparisons_table(report, experiment))
        if plt is not None:
            if any(c.kind == "wirings" for cell in experiment.cells.values() for c in cell.comparisons):
                parts.append("<h3>Which wiring beats which</h3>" + improvement_chart(plt, experiment))
            without = sum(not r.get("history") for r in group)
            parts.append("<h3>Learning curves</h3>" + (
                f'<p class="note">{without} of {len(group)} runs have no per-epoch history (results.json from before '
                "seqrev recorded it): they are shown without curves.</p>" if without else ""))
            if without < len(group):
                parts += [curves_chart(plt, cells, wirings, "val/loss"), curves_chart(plt, cells, wirings, "val/acc")]
            parts.append("<h3>Accuracy per output position</h3>" + positions_chart(plt, cells, wirings))
        parts.append("<h3>Every run</h3>" + runs_table(group, varying, out))
    failed = [r for r in report.runs if r.get("status") != "ok"]
    if failed:
        parts.append("<h2>Jobs that did not finish</h2>" + runs_table(failed, [], out))
    conflicts = [c for experiment in report.experiments for c in experiment.conflicts]
    if conflicts or report.warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>"
                                                        for w in conflicts + report.warnings) + "</ul>")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>seqrev report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}<script>{SCRIPT}</script></body></html>")
