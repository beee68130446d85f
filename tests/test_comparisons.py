"""How sure a report is: each statistic against scipy's own result on fixed numbers, the verdicts on fixed
scores, and the settle sweep's stopping rule simulated (scores drawn at random, no training)."""

import itertools
import math
import random

import pytest
from scipy import stats

from seqrev.comparisons import (
    Interval,
    compare_to_figure,
    compare_wirings,
    difference_interval,
    judge,
    level,
    mean_interval,
    probability_of_improvement,
    seeds_needed,
    verdict,
)

A = [97.5, 98.25, 96.75, 97.0, 98.5]
B = [90.0, 92.25, 87.75, 89.5]


def test_each_wirings_mean_interval_is_students_t_as_scipy_gives_it():
    low, high = stats.ttest_1samp(A, 0.0).confidence_interval(0.95)
    found = mean_interval(A, 0.95)
    assert found == Interval(pytest.approx(sum(A) / 5), pytest.approx(low), pytest.approx(high))
    half = stats.t.ppf(0.975, 4) * stats.tstd(A) / math.sqrt(5)  # the textbook interval, by hand
    assert found.high - found.estimate == pytest.approx(half)
    assert mean_interval([50.0], 0.95) is None  # one seed: no spread, no interval
    assert mean_interval([50.0, 50.0], 0.95) == Interval(50.0, 50.0, 50.0)


def test_a_difference_in_means_is_welchs_interval_as_scipy_gives_it():
    found = difference_interval(A, B, 0.99)
    low, high = stats.ttest_ind(A, B, equal_var=False).confidence_interval(0.99)
    assert found == Interval(pytest.approx(sum(A) / 5 - sum(B) / 4), pytest.approx(low), pytest.approx(high))
    assert stats.ttest_ind(A, B, equal_var=True).confidence_interval(0.99).low != pytest.approx(found.low)  # Welch's
    assert difference_interval(A, [90.0], 0.95) is None
    assert difference_interval([1.0, 1.0], [1.0, 1.0], 0.95) == Interval(0.0, 0.0, 0.0)


def test_the_probability_of_improvement_counts_pairs_of_runs_as_mann_whitney_does():
    a, b = [3.0, 5.0, 5.0, 7.0], [1.0, 5.0, 6.0]
    pairs = list(itertools.product(a, b))
    by_hand = (sum(x > y for x, y in pairs) + 0.5 * sum(x == y for x, y in pairs)) / len(pairs)
    assert probability_of_improvement(a, b) == pytest.approx(by_hand)
    assert probability_of_improvement(a, b) == pytest.approx(stats.mannwhitneyu(a, b).statistic / 12)
    assert probability_of_improvement(A, B) == 1.0 and probability_of_improvement(B, A) == 0.0


def test_the_confidence_level_splits_the_error_rate_over_comparisons_and_looks():
    assert level(1) == pytest.approx(0.95)
    assert level(10, looks=5) == pytest.approx(1 - 0.05 / 50)
    assert level(4, alpha=0.1) == pytest.approx(0.975)


def test_verdicts_on_fixed_scores():
    apart = compare_wirings("both_outputs", "return_state", A, B, level(10))
    assert apart.verdict == "settled" and apart.difference.low > 0 and apart.seeds_needed is None
    same = compare_wirings("a", "b", [40.0, 41.0, 39.5], [40.0, 41.0, 39.5], level(10))
    assert same.verdict == "not settled"  # three seeds of a wide spread: cannot tell it from a 2-point difference
    many = [38 + 0.1 * (i % 7) for i in range(30)]
    assert compare_wirings("a", "b", many, list(many), level(10)).verdict == "equivalent"
    identical = compare_wirings("a", "b", [40.0] * 3, [40.0] * 3, level(10))
    assert identical.verdict == "equivalent" and identical.difference == Interval(0.0, 0.0, 0.0)
    overlapping = compare_wirings("a", "b", [52.1, 53.4, 51.2], [50.3, 52.9, 51.0], level(10))
    assert overlapping.verdict == "not settled" and overlapping.seeds_needed > 3
    assert verdict(Interval(1.0, 0.5, 1.5)) == "settled" and verdict(Interval(-1.0, -1.5, -0.5)) == "settled"
    assert verdict(Interval(0.0, -1.9, 1.9), delta=2.0) == "equivalent"
    assert verdict(Interval(0.0, -2.1, 1.9), delta=2.0) == "not settled"
    assert verdict(None) == "not settled"


def test_the_seeds_needed_are_the_fewest_that_would_settle_at_the_spread_seen():
    confidence = level(10, looks=5)
    spreads, difference = [1.2, 2.5], 3.0
    n = seeds_needed(spreads, difference, confidence)

    def settles(k: int) -> bool:
        se = math.sqrt(sum(s * s / k for s in spreads))
        df = se ** 4 / sum((s * s / k) ** 2 / (k - 1) for s in spreads)
        half = stats.t.ppf(1 - (1 - confidence) / 2, df) * se
        return half < abs(difference) or abs(difference) + half < 2.0

    assert settles(n) and not settles(n - 1)
    assert seeds_needed([1.0], 0.0, 0.95, delta=2.0) == next(k for k in range(2, 100)
                                                            if stats.t.ppf(0.975, k - 1) / math.sqrt(k) < 2.0)
    assert seeds_needed([1.0, 1.0], 1e-9, 0.95, delta=1e-9) is None  # beyond any number of seeds


def test_a_wiring_against_a_fixed_figure_is_its_means_interval_shifted():
    against = compare_to_figure("both_outputs", A, 90.0, "mode baseline", 0.95)
    mean = mean_interval(A, 0.95)
    assert against.difference == Interval(pytest.approx(mean.estimate - 90), pytest.approx(mean.low - 90),
                                          pytest.approx(mean.high - 90))
    assert against.verdict == "settled" and against.p_improvement == 1.0 and against.n_b is None


def simulated_sweeps(n_sweeps: int, means: list[float], spread: float, first: int = 3, cap: int = 30,
                     seed: int = 0) -> list[tuple[bool, int]]:
    """Settle sweeps of one cell with scores drawn from normal distributions: for each, whether any pair
    of wirings was called settled, and how many seeds the first two wirings had at the end (the sweeper's
    own rule, seqrev.settle.next_seeds, at the level its report states)."""
    from seqrev.settle import looks, next_seeds

    draw = random.Random(seed)
    names = [f"w{i}" for i in range(len(means))]
    pairs = len(names) * (len(names) - 1) // 2
    rounds = looks(first, cap)
    confidence = level(pairs, rounds)
    found = []
    for _ in range(n_sweeps):
        scores = {name: [draw.gauss(mean, spread) for _ in range(first)] for name, mean in zip(names, means)}
        for _ in range(rounds):
            cell = {(): scores}
            wants, still = next_seeds(cell, {((), name): len(v) for name, v in scores.items()}, confidence, cap)
            if not still or not wants:
                break
            for (_, name), total in wants.items():
                mean = means[names.index(name)]
                scores[name] += [draw.gauss(mean, spread) for _ in range(total - len(scores[name]))]
        settled = any(judge(scores[a], scores[b], confidence)[1] == "settled"
                      for a, b in itertools.combinations(names, 2))
        found.append((settled, len(scores["w0"])))
    return found


@pytest.mark.slow
def test_with_every_wiring_alike_at_most_five_percent_of_settle_sweeps_call_any_pair_settled():
    """1,000 simulated sweeps of three wirings with one distribution: the share that call any pair settled
    stays within 5% plus three binomial standard errors of the simulation's own noise (0.0207)."""
    runs = simulated_sweeps(1000, [40.0] * 3, spread=1.5)
    wrong = sum(settled for settled, _ in runs) / len(runs)
    assert wrong <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 1000), wrong


@pytest.mark.slow
def test_two_wirings_one_standard_deviation_apart_are_settled_by_most_sweeps_before_the_cap():
    runs = simulated_sweeps(1000, [41.5, 40.0], spread=1.5, seed=1)
    settled = [seeds for was, seeds in runs if was]
    assert len(settled) / len(runs) > 0.8  # settled by the sweep's end
    assert sum(seeds < 30 for seeds in settled) / len(runs) > 0.5  # and most with fewer seeds than the cap
