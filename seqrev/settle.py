"""`hydra/sweeper=settle`: seeds until the sweep's comparisons of wirings are settled.

The sweep's grid is Hydra's (the sweeper's `params` and the command line): `model` gives the wirings
compared, `seed` the first round's seeds (else `initial_seeds` of them, from 0), every other swept key the
cells. Round 1 trains every wiring of every cell on those seeds. After each round the sweeper reads the
job folders' results.json and works out the report's comparisons (seqrev.report.build), then gives more
seeds only to the wirings of a cell that are in a comparison not settled: at least twice as many, or as
many as the comparison's estimate asks (`seeds_needed`), at most `max_seeds`. It stops when every
comparison of wirings is settled or equivalent, or at the cap.

Looking again after every round must not make it wrong more often: the number of rounds is fixed in
advance by the schedule (`looks`: doubling from the first round's seeds to the cap), and every interval
is taken at level 1 - alpha / (comparisons x looks), so that all verdicts of all rounds hold together at
1 - alpha (a union bound; seqrev.comparisons). The sweep's report states the same level.

Every job is an ordinary sweep job with its own folder, numbered on from round to round, so a killed
settle sweep run again reaches the same rounds: finished seeds skipped, killed ones resumed.
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from typing import Any, NamedTuple

from seqrev.comparisons import DELTA, judge
from seqrev.errors import ConfigError

# Imports inside functions: the report's statistics and Hydra's parser load in the sweeper, not when a command line is
# checked.

log = logging.getLogger("seqrev")

CellKey = tuple[str, ...]
"""A cell: its overrides other than the wiring and the seed (e.g. ('+size=t4',))."""


class Grid(NamedTuple):
    cells: list[CellKey]
    wirings: list[str]
    first_seeds: list[int]


def settings_problem(initial_seeds: Any, max_seeds: Any, delta: Any) -> str | None:
    """One sentence for the first of the sweeper's settings that is not allowed; None when all are."""
    def whole(value: Any, least: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= least

    if not whole(initial_seeds, 2):
        return (f"hydra.sweeper.initial_seeds={initial_seeds!r} is not allowed: give a whole number of at least 2 "
                "(an interval needs two seeds).")
    if not whole(max_seeds, initial_seeds):
        return (f"hydra.sweeper.max_seeds={max_seeds!r} is not allowed: give a whole number of at least "
                f"hydra.sweeper.initial_seeds ({initial_seeds}).")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < math.inf:
        return f"hydra.sweeper.delta={delta!r} is not allowed: give a number of points above 0 (e.g. 2)."
    return None


def looks(first: int, cap: int) -> int:
    """Rounds in the worst case: the first, then doubling (at least) up to the cap."""
    return 1 + max(0, math.ceil(math.log2(cap / first)))


def grid(lines: list[str], config_loader: Any = None) -> Grid:
    """The cells, wirings and first seeds of a sweep's `key=values` lines (Hydra's override grammar)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create(config_loader=config_loader).parse_overrides(lines)
    last = {o.get_key_element(): o for o in overrides}  # the command line's value of a key wins, as in Hydra
    values = {key: ([str(v) for v in o.sweep_string_iterator()] if o.is_sweep_override()
                    else [o.get_value_element_as_str()]) for key, o in last.items()}
    wirings = values.pop("model", None)
    seeds = values.pop("seed", None)
    if wirings is None:
        raise ConfigError("hydra/sweeper=settle compares wirings: give them, e.g. model=return_state,both_outputs.")
    try:
        first_seeds = [int(s) for s in seeds] if seeds is not None else []
    except ValueError:
        raise ConfigError(f"seed={','.join(seeds or [])} is not allowed with hydra/sweeper=settle: give whole "
                          "numbers (the first round's seeds).") from None
    cells = [tuple(f"{key}={value}" for key, value in zip(values, combination))
             for combination in itertools.product(*values.values())]
    return Grid(cells, list(dict.fromkeys(wirings)), first_seeds)


def first_seeds(found: Grid, initial_seeds: int) -> list[int]:
    """Round 1's seeds: the sweep's own (`seed=...`), else `initial_seeds` of them from 0; at least two."""
    seeds = found.first_seeds or list(range(initial_seeds))
    if len(set(seeds)) < 2:
        raise ConfigError(f"seed={','.join(map(str, seeds))} is not allowed with hydra/sweeper=settle: its first "
                          "round needs at least 2 seeds (an interval needs two), e.g. seed=0,1,2.")
    return seeds


def job(cell: CellKey, wiring: str, seed: int) -> list[str]:
    return [*cell, f"model={wiring}", f"seed={seed}"]


def next_seeds(scores: dict[CellKey, dict[str, list[float]]], seeds: dict[tuple[CellKey, str], int],
               confidence: float, cap: int, delta: float = DELTA) -> tuple[dict[tuple[CellKey, str], int], int]:
    """How many seeds each (cell, wiring) should have after the next round, for those that need more: every
    wiring of a comparison not settled, at least twice as many as it has (or what the comparison's estimate
    asks), never more than `cap`. Also how many comparisons are not settled."""
    wants: dict[tuple[CellKey, str], int] = {}
    open_comparisons = 0
    for cell, by_wiring in scores.items():
        names = [name for name, values in by_wiring.items() if values]
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                _, said, needed = judge(by_wiring[a], by_wiring[b], confidence, delta)
                if said != "not settled":
                    continue
                open_comparisons += 1
                for name in (a, b):
                    have = seeds[(cell, name)]
                    more = min(cap, max(2 * have, needed or cap))
                    if more > have:
                        wants[(cell, name)] = max(wants.get((cell, name), 0), more)
    return wants, open_comparisons


def check_command_line(args: list[str], config_dir: Path) -> None:
    """The settle sweeper's settings and grid (`hydra/sweeper=settle`), before Hydra makes the sweep's folder."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from seqrev.catalog import compose
    from seqrev.preflight import first_job

    if not any(a.lstrip("+~").startswith(("hydra/sweeper=", "hydra.sweeper.")) for a in args):
        return
    first = first_job(args) or []
    hydra_args = [a for a in args if a.lstrip("+~").startswith(("hydra/sweeper=", "hydra.sweeper."))]
    try:
        sweeper = compose([*first, *hydra_args], config_dir, with_hydra=True).hydra.sweeper
    except (HydraException, OmegaConfBaseException):
        return  # Hydra says what is wrong with the line
    if not str(sweeper.get("_target_")).endswith(".SettleSweeper"):
        return
    problem = settings_problem(sweeper.get("initial_seeds"), sweeper.get("max_seeds"), sweeper.get("delta"))
    if problem:
        raise ConfigError(problem)
    task = [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        found = grid([f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()] + task)
    except (HydraException, OmegaConfBaseException):
        return
    first_seeds(found, sweeper.get("initial_seeds"))


def sweep(sweeper: Any, arguments: list[str]) -> list[Any]:
    """The settle sweep: rounds of jobs through the sweeper's launcher until its comparisons settle."""
    from omegaconf import OmegaConf

    from seqrev.sweepfolder import write_planned, write_settle

    config, launcher = sweeper.config, sweeper.launcher
    problem = settings_problem(sweeper.initial_seeds, sweeper.max_seeds, sweeper.delta)
    if problem:
        raise ConfigError(problem)
    lines = [f"{key}={value}" for key, value in sweeper.params.items()] + list(arguments)
    found = grid(lines, sweeper.hydra_context.config_loader)
    first = first_seeds(found, sweeper.initial_seeds)
    cap, delta = max(sweeper.max_seeds, len(first)), float(sweeper.delta)
    rounds = looks(len(first), cap)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    round_jobs = [job(cell, wiring, seed) for cell in found.cells for wiring in found.wirings for seed in first]
    refuse_other_jobs(sweeper, sweep_dir, round_jobs)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    write_settle(sweep_dir, rounds, delta)
    seeds = {(cell, wiring): list(first) for cell in found.cells for wiring in found.wirings}
    returns, launched, ended, open_comparisons = [], 0, "", 0
    for number in range(1, rounds + 1):
        write_planned(sweep_dir, launched + len(round_jobs), f"round {number} of at most {rounds}")
        log.info(f"settle: round {number} of at most {rounds}: {len(round_jobs)} jobs")
        returns.append(launcher.launch(round_jobs, initial_job_idx=launched))
        launched += len(round_jobs)
        scores, confidence = read_scores(sweep_dir, seeds, rounds, delta)
        counts = {key: len(values) for key, values in seeds.items()}
        wants, open_comparisons = next_seeds(scores, counts, confidence, cap, delta)
        if not open_comparisons:
            ended = f"every comparison settled or equivalent after round {number}"
            break
        if not wants:
            ended = f"{plural(open_comparisons, 'comparison')} not settled at the cap of {cap} seeds"
            break
        if number == rounds:
            ended = f"{plural(open_comparisons, 'comparison')} not settled after the last round"
            break
        round_jobs = []
        for (cell, wiring), total in wants.items():
            new = list(range(max(seeds[(cell, wiring)]) + 1, max(seeds[(cell, wiring)]) + 1 + total
                             - len(seeds[(cell, wiring)])))
            seeds[(cell, wiring)] += new
            round_jobs += [job(cell, wiring, seed) for seed in new]
    summary = summarise(sweep_dir, seeds, rounds, delta, launched, ended)
    write_settle(sweep_dir, rounds, delta, summary)
    log.info(summary)
    return returns


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def refuse_other_jobs(sweeper: Any, sweep_dir: Path, jobs: list[list[str]]) -> None:
    """Before anything is written: RunDirError when a job folder of this sweep's first round holds another
    job (seqrev.preflight's rule for Hydra's basic sweeper, for the settle sweep's own first round)."""
    from seqrev.preflight import check_job_folders, subdir_of

    def folder_name(number: int, overrides: list[str]) -> str | None:
        from hydra.core.hydra_config import HydraConfig

        try:
            return subdir_of(sweeper.hydra_context.config_loader.load_sweep_config(sweeper.config, list(overrides)),
                             number)
        except Exception:  # noqa: BLE001 - a job that does not compose says why when it runs
            return None
        finally:
            HydraConfig.instance().set_config(sweeper.config)

    if sweep_dir.is_dir():
        check_job_folders(sweep_dir, jobs, folder_name)


def read_scores(sweep_dir: Path, seeds: dict[tuple[CellKey, str], list[int]], rounds: int,
                delta: float) -> tuple[dict[CellKey, dict[str, list[float]]], float]:
    """The finished jobs' test token accuracies (points) by cell and wiring, and the confidence level of the
    sweep's report over `rounds` looks (its comparisons counted as seqrev.report counts them)."""
    from seqrev.lifecycle import folders_by_job
    from seqrev.report_model import build
    from seqrev.results import FILENAME, read_results

    folders = folders_by_job(sweep_dir)
    runs, where = [], {}
    for (cell, wiring), numbers in seeds.items():
        for seed in numbers:
            folder = folders.get(tuple(job(cell, wiring, seed)))
            if folder is None or not (folder / FILENAME).is_file():
                continue
            try:
                results = read_results(folder / FILENAME)
            except (OSError, ValueError) as error:
                log.warning(f"settle: not counted, not read as results: {error}")
                continue
            if results.get("status") == "ok":
                runs.append({**results, "job_dir": str(folder)})
                where[str(folder)] = (cell, wiring)
    report = build(runs, [], looks=rounds, delta=delta)
    scores: dict[CellKey, dict[str, list[float]]] = {}
    for cell, wiring in seeds:
        scores.setdefault(cell, {}).setdefault(wiring, [])
    for run in runs:
        cell, wiring = where[run["job_dir"]]
        scores[cell][wiring].append(100 * run["test_acc"])
    return scores, report.confidence


def summarise(sweep_dir: Path, seeds: dict[tuple[CellKey, str], list[int]], rounds: int, delta: float,
              launched: int, ended: str) -> str:
    """The sweep's last line: per cell, its verdicts and the comparisons still open at the end."""
    scores, confidence = read_scores(sweep_dir, seeds, rounds, delta)
    varying = {i for i in range(len(next(iter(scores), ()))) if len({cell[i] for cell in scores}) > 1}
    parts = []
    for cell, by_wiring in scores.items():
        names = [name for name, values in by_wiring.items() if values]
        verdicts: dict[str, int] = {}
        still = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                said = judge(by_wiring[a], by_wiring[b], confidence, delta)[1]
                verdicts[said] = verdicts.get(said, 0) + 1
                if said == "not settled":
                    still.append(f"{a} vs {b} ({len(by_wiring[a])} and {len(by_wiring[b])} seeds)")
        counted = ", ".join(f"{n} {word}" for word, n in verdicts.items())
        name = " ".join(part for i, part in enumerate(cell) if i in varying) or "the cell"
        parts.append(f"{name}: {counted}" + (f" (open: {', '.join(still)})" if still else ""))
    return f"settle: {launched} jobs, {ended}; " + "; ".join(parts)
