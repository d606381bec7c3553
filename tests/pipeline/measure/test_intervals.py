"""Paired intervals on a metric's drop (pipeline/measure/intervals.py): Newcombe's method 10 against a published
value and by simulated coverage, the paired bootstrap's determinism, coverage of a known effect and direction,
and when a test split is too small to resolve a budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from pipeline.measure.intervals import (
    BOOTSTRAP,
    NEWCOMBE,
    Bootstrap,
    DropInterval,
    drop_interval,
    half_width_at_zero,
    newcombe_counts,
    paired_bootstrap_drop,
    paired_proportion_drop,
    resolution_warning,
    samples_to_resolve,
    verdict,
    wilson,
)


def _pairs(a: int, b: int, c: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 correct per sample for two models: a both right, b only the first, c only the second, d neither."""
    first = np.r_[np.ones(a), np.ones(b), np.zeros(c), np.zeros(d)]
    second = np.r_[np.ones(a), np.zeros(b), np.ones(c), np.zeros(d)]
    return first, second


def test_newcombe_matches_the_published_example() -> None:
    """Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), ch. 8: complete response
    before and after consolidation therapy (Cavo et al. 2012), table [[59, 6], [16, 80]]: the Newcombe
    square-and-add interval is -0.0621 (95% CI -0.1186 to -0.0046) (R package contingencytables, its tests)."""
    iv = paired_proportion_drop(*_pairs(59, 6, 16, 80))
    assert iv.method == NEWCOMBE and iv.samples == 161 and iv.discordant == 22
    assert (round(iv.drop, 4), round(iv.lo, 4), round(iv.hi, 4)) == (-0.0621, -0.1186, -0.0046)
    assert iv.reference == pytest.approx(65 / 161)
    assert newcombe_counts(59, 6, 16, 80) == (iv.drop, iv.lo, iv.hi)  # the same from the table's counts


def test_wilson_agrees_with_scipy() -> None:
    for k, n in ((0, 10), (3, 10), (65, 161), (356, 360), (360, 360)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


@pytest.mark.parametrize("cells", [(0.85, 0.06, 0.03, 0.06), (0.90, 0.03, 0.03, 0.04), (0.60, 0.15, 0.10, 0.15)])
def test_newcombe_covers_the_true_drop_95_percent_of_the_time(cells: tuple[float, float, float, float]) -> None:
    """Paired tables of n = 300 drawn with a known true drop (p_b - p_c): the 95% interval contains it in
    92-98% of 1000 seeded draws (binomial s.e. of the coverage ~0.007)."""
    rng = np.random.default_rng(7)
    truth = cells[1] - cells[2]
    hits = 0
    for _ in range(1000):
        ref, art = _pairs(*(int(v) for v in rng.multinomial(300, cells)))
        iv = paired_proportion_drop(ref, art)
        hits += iv.lo <= truth <= iv.hi
    assert 0.92 <= hits / 1000 <= 0.98


def test_newcombe_edge_cases_give_finite_intervals() -> None:
    empty = paired_proportion_drop(np.zeros(0), np.zeros(0))
    assert (empty.drop, empty.lo, empty.hi, empty.samples, empty.discordant) == (0.0, -1.0, 1.0, 0, 0)
    for cells in ((50, 0, 0, 0), (0, 0, 0, 50), (30, 0, 0, 20), (0, 40, 0, 0), (0, 0, 40, 0), (10, 5, 5, 0)):
        iv = paired_proportion_drop(*_pairs(*cells))
        assert all(math.isfinite(v) for v in (iv.drop, iv.lo, iv.hi)), cells
        assert -1.0 <= iv.lo <= iv.drop <= iv.hi <= 1.0, cells
    same = paired_proportion_drop(*_pairs(50, 0, 0, 0))  # all concordant: zero drop, still an interval
    assert same.drop == 0.0 and same.lo < 0.0 < same.hi and same.discordant == 0
    with pytest.raises(ValueError, match="not paired"):
        paired_proportion_drop(np.ones(3), np.ones(4))


def test_newcombe_direction_and_lower_is_better() -> None:
    worse = paired_proportion_drop(*_pairs(80, 10, 2, 8))  # the artifact loses 8 more than it wins: positive
    assert worse.drop == pytest.approx(0.08) and worse.lo > 0
    mirrored = paired_proportion_drop(*_pairs(80, 10, 2, 8), higher_is_better=False)
    assert (mirrored.drop, mirrored.lo, mirrored.hi) == pytest.approx((-worse.drop, -worse.hi, -worse.lo))


def _regression_stats(n: int, effect: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample squared errors: the artifact's are the reference's plus a mean `effect` of its own."""
    rng = np.random.default_rng(seed)
    ref = rng.exponential(1.0, n)
    return ref, ref + rng.exponential(effect, n)


def test_bootstrap_is_deterministic_and_seeded() -> None:
    ref, art = _regression_stats(500, 0.05, 1)
    one = paired_bootstrap_drop(ref, art, None, "mse", higher_is_better=False)
    assert one == paired_bootstrap_drop(ref, art, None, "mse", higher_is_better=False)
    other = paired_bootstrap_drop(ref, art, None, "mse", higher_is_better=False, how=Bootstrap(seed=1))
    assert other.drop == one.drop and (other.lo, other.hi) != (one.lo, one.hi)
    assert one.method == BOOTSTRAP and one.samples == 500 and one.discordant is None


def test_bootstrap_contains_the_true_effect_on_a_large_case() -> None:
    ref, art = _regression_stats(20_000, 0.05, 2)  # true mse drop (worse direction): +0.05
    iv = paired_bootstrap_drop(ref, art, None, "mse", higher_is_better=False)
    assert iv.lo < 0.05 < iv.hi and iv.lo > 0.0
    assert iv.hi - iv.lo < 0.004  # paired: the shared error (variance ~1) cancels; unpaired would be ~0.04 wide


def test_bootstrap_direction_follows_the_metric() -> None:
    ref, art = _regression_stats(2000, 0.05, 3)
    for spec in ("mse", "mae", "rmse"):  # lower is better: the artifact's larger error is a positive drop
        iv = paired_bootstrap_drop(ref, art, None, spec, higher_is_better=False)
        assert iv.drop > 0 and iv.lo > 0, spec
    rng = np.random.default_rng(4)
    cos_ref, cos_art = np.ones(2000), 1.0 - rng.exponential(0.01, 2000)  # higher is better: less agreement
    iv = paired_bootstrap_drop(cos_ref, cos_art, None, "agreement:cosine", higher_is_better=True)
    assert iv.drop == pytest.approx(np.mean(cos_ref - cos_art)) and iv.lo > 0


def test_bootstrap_sqnr_and_reconstruction_auc() -> None:
    rng = np.random.default_rng(5)
    signal = rng.exponential(100.0, 1000)
    ref = np.stack([signal, np.zeros(1000)], axis=1)  # the reference against itself: no noise, 100 dB
    art = np.stack([signal, rng.exponential(1.0, 1000)], axis=1)
    iv = paired_bootstrap_drop(ref, art, None, "sqnr", higher_is_better=True)
    assert iv.reference == 100.0 and iv.lo <= iv.drop <= iv.hi and iv.drop == pytest.approx(80.0, abs=1.0)
    y = (rng.random(3000) < 0.3).astype(int)
    errors = rng.exponential(1.0, 3000) + y  # anomalies reconstruct worse
    blurred = errors + rng.normal(0.0, 0.5, 3000)  # the artifact's errors separate them less well
    iv = paired_bootstrap_drop(errors, blurred, y, "reconstruction_auc", higher_is_better=True)
    assert iv.lo > 0 and iv.lo <= iv.drop <= iv.hi


def test_drop_interval_dispatches_on_the_metric() -> None:
    ref, art = _pairs(300, 3, 1, 56)
    iv = drop_interval(ref, art, None, "accuracy", True)
    assert iv is not None and iv.method == NEWCOMBE and iv.drop == pytest.approx(2 / 360)
    for spec in ("top_k:5", "agreement:top1"):
        found = drop_interval(ref.tolist(), art.tolist(), None, spec, True)
        assert found is not None and found.method == NEWCOMBE
    found = drop_interval(*_regression_stats(200, 0.1, 6), None, "mse", False)
    assert found is not None and found.method == BOOTSTRAP
    assert drop_interval(None, art, None, "accuracy", True) is None
    assert drop_interval([], [], None, "mse", False) is None


def test_to_report() -> None:
    iv = DropInterval(0.0056, -0.004, 0.015, 0.95, NEWCOMBE, 360, 4, 0.99)
    assert iv.to_report() == {"drop": 0.0056, "interval": [-0.004, 0.015], "level": 0.95, "method": NEWCOMBE,
                              "samples": 360, "discordant": 4}


def _demo(n: int) -> DropInterval:
    """The edgepipe demo's case: accuracy ~0.99 and 4 discordant pairs in 360 (1.1%), at n samples."""
    scale = n / 360
    return paired_proportion_drop(*_pairs(round(354 * scale), round(3 * scale), round(1 * scale), round(2 * scale)))


def test_the_demo_split_is_too_small_for_a_one_point_budget() -> None:
    small = _demo(360)
    half = half_width_at_zero(small)
    assert half > 0.005  # the 95% interval of a zero drop is wider than ±budget/2
    needed = samples_to_resolve(small, 0.01)
    assert needed is not None and needed > 360
    assert half_width_at_zero(small, needed) <= 0.005 < half_width_at_zero(small, needed - 1)
    warning = resolution_warning(small, 0.01)
    assert warning is not None
    assert warning.startswith("the test split of 360 samples cannot resolve the budget 0.01: a zero drop's 95% "
                              f"interval is ±{half:.4g}; about ")
    assert warning.endswith(" samples would")
    assert int(warning.split("about ")[1].split()[0]) >= needed


def test_a_large_split_resolves_the_same_budget() -> None:
    large = _demo(100_000)
    assert half_width_at_zero(large) < 0.005
    assert resolution_warning(large, 0.01) is None
    assert samples_to_resolve(large, 0.01) == samples_to_resolve(_demo(360), 0.01)  # same rates, same answer
    assert samples_to_resolve(large, 0.0) is None


def test_bootstrap_resolution_scales_as_one_over_root_n() -> None:
    iv = DropInterval(0.01, -0.01, 0.03, 0.95, BOOTSTRAP, 400, None, 0.5)  # half-width 0.02 at n = 400
    assert half_width_at_zero(iv, 1600) == pytest.approx(0.01)
    assert samples_to_resolve(iv, 0.02) == 1600  # half-width 0.01 = budget / 2
    warning = resolution_warning(iv, 0.02)
    assert warning is not None and "about 1600 samples would" in warning
    assert resolution_warning(iv, 0.04) is None


def test_verdict() -> None:
    iv = DropInterval(0.0056, -0.004, 0.015, 0.95, NEWCOMBE, 360, 4, 0.99)
    assert verdict(iv, 0.01) == (True, True)  # the point estimate meets it; the budget is inside the interval
    assert verdict(iv, 0.01, confidence=0.95) == (False, True)  # the interval does not
    assert verdict(iv, 0.02, confidence=0.95) == (True, False)
    assert verdict(iv, 0.0) == (False, True)
    assert verdict(iv, -0.01) == (False, False)  # the whole interval above the budget: a clear fail
    assert verdict(iv, 0.0056) == (True, True)  # a drop equal to the budget meets it
    with pytest.raises(ValueError, match="confidence"):
        verdict(iv, 0.01, confidence=0.9)
