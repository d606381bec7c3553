"""Latency that says how sure it is: the median's interval, the int8-vs-float ratio's interval, and "no
measurable difference" where that interval holds 1.0."""

from __future__ import annotations

import numpy as np

from pipeline.measure.speedup import NOISY_WIDTH, Verdict, noisy_note, ratio_interval
from targets.runner import latency_stats, median_interval


def test_the_median_interval_covers_the_true_median_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    hits = sum(lo <= 1.0 <= hi for lo, hi in (median_interval(rng.lognormal(0.0, 0.3, 100)) for _ in range(400)))
    assert 0.92 <= hits / 400 <= 0.99, hits  # the true median of lognormal(0, s) is 1.0


def test_every_latency_carries_its_spread_and_median_interval() -> None:
    stats = latency_stats(list(np.linspace(1.0, 2.0, 101)), 5, 1)
    lo, hi = stats["median_ci"]
    assert lo < stats["median"] == 1.5 < hi and stats["iqr"] == [1.25, 1.75]


def test_a_resolved_speedup_and_an_unresolved_one() -> None:
    rng = np.random.default_rng(1)
    int8, flt = rng.normal(1.0, 0.05, 200), rng.normal(2.0, 0.1, 200)
    fast = ratio_interval(flt, int8, interleaved=True)
    assert fast.verdict is Verdict.FASTER and 1.9 < fast.lo < fast.ratio < fast.hi < 2.1
    slow = ratio_interval(int8, flt, interleaved=True)
    assert slow.verdict is Verdict.SLOWER and slow.hi < 1.0
    same = ratio_interval(rng.normal(1.0, 0.2, 50), rng.normal(1.0, 0.2, 50), interleaved=False)
    assert same.verdict is Verdict.SAME and same.lo < 1.0 < same.hi
    assert same.to_report().verdict == "no measurable difference"
    assert ratio_interval(flt, int8, True) == fast  # seeded: the same samples give the same interval


def test_a_noisy_median_is_reported_as_such() -> None:
    quiet = latency_stats(list(np.random.default_rng(2).normal(1.0, 0.01, 100)), 0, 1)
    noisy = latency_stats(list(np.random.default_rng(3).lognormal(0.0, 1.5, 30)), 0, 1)
    assert noisy_note(quiet) is None
    note = noisy_note(noisy)
    assert note is not None and "too noisy" in note and f"{NOISY_WIDTH:.0%}" not in note
