"""How sure a report is: each wiring's mean with its interval, and every comparison's verdict.

Scores are test token accuracies in points (0-100), one per seed. The methods are scipy's, chosen to
behave at 3 seeds as at 30 (docs/sweeps_and_clusters.md, "How sure"):

- a wiring's mean: Student's t interval (`scipy.stats.ttest_1samp(...).confidence_interval`);
- two wirings: the difference in means with Welch's t interval (`scipy.stats.ttest_ind(equal_var=False)`),
  which allows each its own spread; a bootstrap interval would be too narrow at a few seeds;
- the probability of improvement, P(a run of A scores above a run of B, ties counting half), is the
  Mann-Whitney U statistic over all pairs of runs (`scipy.stats.mannwhitneyu`), divided by their number;
- against a fixed figure (the mode baseline, the tutorial's one run): the mean's interval, shifted.

A verdict is read off an interval: **settled** when it excludes 0, **equivalent** when it lies within
±delta points, else **not settled**, with a rough number of seeds per wiring that would settle it if the
means and spreads stayed as seen. Every interval of a report is at level 1 - alpha / (comparisons x looks)
(Bonferroni): with probability at least 1 - alpha all of them cover their true differences at once, so no
verdict of the report is wrong, over all its comparisons and, for a settle sweep, all its looks.
Plain numbers in and out; no torch.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

# Imports inside functions: scipy loads only when a report compares runs.

ALPHA = 0.05
"""The chance that any verdict of a report is wrong (its family-wise error rate)."""
DELTA = 2.0
"""Points of token accuracy within which two wirings count as equivalent: below the spread of one wiring
over seeds in the tutorial's table (0.5-3 points), so below what one more seed changes."""
MOST_SEEDS = 10_000
"""Beyond this many seeds per wiring, `seeds_needed` gives up (the difference is as good as nil)."""

Verdict = Literal["settled", "equivalent", "not settled"]


class Interval(NamedTuple):
    estimate: float
    low: float
    high: float


class Comparison(NamedTuple):
    """`a` against `b` (a wiring, "mode baseline" or "tutorial"): mean of a minus mean (or figure) of b."""

    a: str
    b: str
    kind: Literal["wirings", "mode baseline", "tutorial"]
    n_a: int
    n_b: int | None  # None for a fixed figure
    difference: Interval | None  # None when a side has fewer than 2 seeds
    p_improvement: float | None
    verdict: Verdict
    seeds_needed: int | None  # per wiring, for a comparison not settled; None when it cannot be told


def level(comparisons: int, looks: int = 1, alpha: float = ALPHA) -> float:
    """The confidence level of each interval, so that all `comparisons` over all `looks` hold together."""
    return 1 - alpha / max(1, comparisons * looks)


def _quietly(test: Any, *args: Any, **kwargs: Any) -> Any:
    """A scipy test without its warning about nearly equal values: those intervals are read as they come."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        return test(*args, **kwargs)


def mean_interval(values: Sequence[float], confidence: float) -> Interval | None:
    """Student's t interval of the mean; None below 2 values; a point when they are all equal."""
    from scipy import stats

    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    if max(values) == min(values):
        return Interval(mean, mean, mean)
    low, high = _quietly(stats.ttest_1samp, values, 0.0).confidence_interval(confidence)
    return Interval(mean, float(low), float(high))


def difference_interval(a: Sequence[float], b: Sequence[float], confidence: float) -> Interval | None:
    """Welch's t interval of mean(a) - mean(b); None when either has fewer than 2 values; a point when
    neither varies."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    difference = sum(a) / len(a) - sum(b) / len(b)
    if max(a) == min(a) and max(b) == min(b):
        return Interval(difference, difference, difference)
    low, high = _quietly(stats.ttest_ind, a, b, equal_var=False).confidence_interval(confidence)
    return Interval(difference, float(low), float(high))


def probability_of_improvement(a: Sequence[float], b: Sequence[float]) -> float | None:
    """P(a run of A scores above a run of B), ties counting half: Mann-Whitney's U over len(a) * len(b)."""
    from scipy import stats

    if not a or not b:
        return None
    return float(stats.mannwhitneyu(a, b).statistic) / (len(a) * len(b))


def verdict(interval: Interval | None, delta: float = DELTA) -> Verdict:
    if interval is None:
        return "not settled"
    if interval.low > 0 or interval.high < 0:
        return "settled"
    if -delta < interval.low and interval.high < delta:
        return "equivalent"
    return "not settled"


def seeds_needed(spreads: Sequence[float], difference: float, confidence: float, delta: float = DELTA) -> int | None:
    """Seeds per side for an interval (Welch's, or one mean's for one spread) to settle or show equivalence,
    if the difference and the spreads (standard deviations) stayed as seen; None when that is beyond
    MOST_SEEDS or cannot be told (no spread seen)."""
    from scipy import stats

    if any(not math.isfinite(s) for s in spreads):
        return None

    def settles(n: int) -> bool:
        variances = [s * s / n for s in spreads]
        se = math.sqrt(sum(variances))
        if se == 0:
            return True
        df = sum(variances) ** 2 / sum(v * v / (n - 1) for v in variances)  # Welch-Satterthwaite
        half = float(stats.t.ppf(1 - (1 - confidence) / 2, df)) * se
        return half < abs(difference) or abs(difference) + half < delta

    if not settles(MOST_SEEDS):
        return None
    low, high = 2, MOST_SEEDS  # the interval narrows as seeds are added: the fewest that settle, by bisection
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if settles(middle) else (middle + 1, high)
    return low


def _spread(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else math.nan


def judge(scores_a: Sequence[float], scores_b: Sequence[float], confidence: float,
          delta: float = DELTA) -> tuple[Interval | None, Verdict, int | None]:
    """Two wirings' difference interval, its verdict and, when not settled, the seeds that would settle it."""
    interval = difference_interval(scores_a, scores_b, confidence)
    said = verdict(interval, delta)
    needed = None if said != "not settled" or interval is None else seeds_needed(
        [_spread(scores_a), _spread(scores_b)], interval.estimate, confidence, delta)
    return interval, said, needed


def compare_wirings(a: str, b: str, scores_a: Sequence[float], scores_b: Sequence[float], confidence: float,
                    delta: float = DELTA) -> Comparison:
    interval, said, needed = judge(scores_a, scores_b, confidence, delta)
    return Comparison(a, b, "wirings", len(scores_a), len(scores_b), interval,
                      probability_of_improvement(scores_a, scores_b), said, needed)


def compare_to_figure(a: str, scores: Sequence[float], figure: float, kind: Literal["mode baseline", "tutorial"],
                      confidence: float, delta: float = DELTA) -> Comparison:
    """A wiring's mean against a fixed figure: the mean's interval, shifted by the figure."""
    mean = mean_interval(scores, confidence)
    interval = None if mean is None else Interval(mean.estimate - figure, mean.low - figure, mean.high - figure)
    said = verdict(interval, delta)
    needed = None if said != "not settled" or interval is None else seeds_needed(
        [_spread(scores)], interval.estimate, confidence, delta)
    return Comparison(a, kind, kind, len(scores), None, interval, probability_of_improvement(scores, [figure]), said,
                      needed)
