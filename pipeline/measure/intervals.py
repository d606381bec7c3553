"""The drop of an int8 artifact's metric against the reference, with its uncertainty.

Both models run on the same test samples, so the drop is a paired quantity: per-sample statistics
(targets.runner_metrics.per_sample) of the two are compared sample by sample. A class metric (0/1 correct per
sample) gets Newcombe's (1998) method 10 interval for the difference of paired proportions; any other metric a
paired percentile bootstrap. A test split too small to tell a drop of the budget from none is said so."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from targets.runner_metrics import from_per_sample, parse, sqnr_from_energies

NEWCOMBE = "newcombe-paired"
BOOTSTRAP = "paired-bootstrap"
_TOLERANCE = 1e-9  # as pipeline.measure.budget: a drop equal to the budget meets it
_MAX_SAMPLES = 10**12  # samples_to_resolve gives up beyond this
_BLOCK = 2_000_000  # resampled sample indices held at once (resamples x samples)


@dataclass(frozen=True)
class DropInterval:
    """A drop (in the metric's worse direction: positive is worse) and its `level` confidence interval."""

    drop: float
    lo: float
    hi: float
    level: float
    method: str  # NEWCOMBE or BOOTSTRAP
    samples: int
    discordant: int | None  # Newcombe: pairs where exactly one of the two models is correct
    reference: float | None = None  # the reference's metric on these samples (how the width scales with n)

    def to_report(self) -> dict[str, Any]:
        """The keys report.json's target `metric` entry takes from the interval."""
        return {"drop": self.drop, "interval": [self.lo, self.hi], "level": self.level, "method": self.method,
                "samples": self.samples, "discordant": self.discordant}


# ---------- Newcombe (1998) method 10: paired proportions ----------


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level {level} is not between 0 and 1")
    return NormalDist().inv_cdf(0.5 + level / 2.0)  # the stdlib's, as scipy's norm.ppf to 1e-15 (scipy: 0.6 s to import)


def wilson(successes: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (no continuity correction); (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    z = _z(level)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _phi(a: float, b: float, c: float, d: float) -> float:
    """Newcombe's corrected phi of the 2x2 table: ad - bc shrunk by n/2 towards 0 when positive, 0 when a
    margin is empty (no correlation to estimate)."""
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins <= 0:
        return 0.0
    cross, n = a * d - b * c, a + b + c + d
    if cross > n / 2:
        cross -= n / 2
    elif cross >= 0:
        cross = 0.0
    return cross / math.sqrt(margins)


def newcombe_counts(a: float, b: float, c: float, d: float, level: float = 0.95) -> tuple[float, float, float]:
    """(p1 - p2, lo, hi) for a paired 2x2 table: a both correct, b only the first, c only the second, d
    neither; p1 = (a + b) / n, p2 = (a + c) / n. Counts may be fractional (samples_to_resolve's projections)."""
    n = a + b + c + d
    if n <= 0:
        return 0.0, -1.0, 1.0
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, level)
    l2, u2 = wilson(a + c, n, level)
    phi = _phi(a, b, c, d)
    diff = p1 - p2
    below = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    above = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    return diff, max(-1.0, diff - math.sqrt(max(below, 0.0))), min(1.0, diff + math.sqrt(max(above, 0.0)))


def _table(first: np.ndarray, second: np.ndarray) -> tuple[int, int, int, int]:
    one, two = first > 0.5, second > 0.5
    return (int(np.sum(one & two)), int(np.sum(one & ~two)), int(np.sum(~one & two)), int(np.sum(~one & ~two)))


def _pair(ref_stats: Any, art_stats: Any) -> tuple[np.ndarray, np.ndarray]:
    ref, art = np.asarray(ref_stats, dtype=np.float64), np.asarray(art_stats, dtype=np.float64)
    if ref.shape != art.shape:
        raise ValueError(f"per-sample statistics of different shapes: {ref.shape} vs {art.shape} (not paired)")
    return ref, art


def paired_proportion_drop(ref_correct: Any, art_correct: Any, level: float = 0.95,
                           higher_is_better: bool = True) -> DropInterval:
    """Reference accuracy minus artifact accuracy on the same samples (0/1 correct each), with Newcombe's
    method 10 hybrid-score interval for paired proportions."""
    ref, art = _pair(ref_correct, art_correct)
    first, second = (ref, art) if higher_is_better else (art, ref)
    a, b, c, d = _table(first, second)
    diff, lo, hi = newcombe_counts(a, b, c, d, level)
    reference = float(np.mean(ref > 0.5)) if ref.size else None
    return DropInterval(diff, lo, hi, level, NEWCOMBE, a + b + c + d, b + c, reference)


# ---------- paired bootstrap: any metric with per-sample statistics ----------


class _Resampled:
    """The metric `spec` of one model's per-sample statistics on each row of sample indices (resamples, n)."""

    def __init__(self, stats: np.ndarray, labels: np.ndarray | None, spec: str) -> None:
        self.stats, self.spec = stats, spec
        if spec == "reconstruction_auc":  # sorted once: ties grouped, each group's place fixed
            assert labels is not None
            order = np.argsort(stats, kind="mergesort")
            ranked = stats[order]
            self.order, self.positive = order, labels[order]
            self.starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        if self.spec == "sqnr":
            return sqnr_from_energies(self.stats[idx, 0].sum(axis=1), self.stats[idx, 1].sum(axis=1))
        if self.spec == "reconstruction_auc":
            return self._auc(_counts(idx))
        values = self.stats[idx].mean(axis=1)
        return np.sqrt(values) if self.spec == "rmse" else values

    def _auc(self, counts: np.ndarray) -> np.ndarray:
        """runner_metrics.roc_auc of a resample given as draw counts per sample (no sort per resample):
        Mann-Whitney, ties half; NaN for a resample lacking a class."""
        w = counts[:, self.order]
        pos_w, neg_w = w * self.positive, w * (1.0 - self.positive)
        pos, neg = np.add.reduceat(pos_w, self.starts, axis=1), np.add.reduceat(neg_w, self.starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        wins = np.sum(pos * (below + 0.5 * neg), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return wins / (pos.sum(axis=1) * neg.sum(axis=1))


def _counts(idx: np.ndarray) -> np.ndarray:
    """Resamples of sample indices (rows, n) as draw counts per sample (rows, n)."""
    rows, n = idx.shape
    flat = (idx + (np.arange(rows) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


@dataclass(frozen=True)
class Bootstrap:
    """A paired bootstrap's settings: the interval's confidence level, how many resamples, the seed."""

    level: float = 0.95
    resamples: int = 2000
    seed: int = 0


def paired_bootstrap_drop(ref_stats: Any, art_stats: Any, y: Any, spec: str, higher_is_better: bool,
                          how: Bootstrap = Bootstrap()) -> DropInterval:
    """The drop of metric `spec` in its worse direction, with a percentile interval from resampling the
    samples jointly for both models (their pairing kept); seeded, so a build reports the same interval twice."""
    level, resamples = how.level, how.resamples
    ref, art = _pair(ref_stats, art_stats)
    n = ref.shape[0]
    if n == 0:
        raise ValueError("no samples to bootstrap")
    _z(level)
    labels = np.asarray(y).reshape(-1).astype(bool).astype(np.float64) if spec == "reconstruction_auc" else None
    sign = 1.0 if higher_is_better else -1.0
    reference = from_per_sample(ref, y, spec)
    drop = sign * (reference - from_per_sample(art, y, spec))
    rng = np.random.default_rng(how.seed)
    block, of_ref, of_art = max(1, _BLOCK // n), _Resampled(ref, labels, spec), _Resampled(art, labels, spec)
    drops = []
    for start in range(0, resamples, block):
        idx = rng.integers(0, n, size=(min(block, resamples - start), n))
        drops.append(sign * (of_ref(idx) - of_art(idx)))
    found = np.concatenate(drops) if drops else np.zeros(0)
    found = found[np.isfinite(found)]  # resamples without both classes (reconstruction_auc) say nothing
    if found.size == 0:
        lo = hi = drop
    else:
        lo, hi = (float(v) for v in np.quantile(found, [0.5 - level / 2.0, 0.5 + level / 2.0]))
    return DropInterval(float(drop), lo, hi, level, BOOTSTRAP, n, None, float(reference))


def is_proportion(spec: str) -> bool:
    """Metrics whose per-sample statistic is 0/1 correct: their drop is a difference of paired proportions."""
    return spec in ("accuracy", "agreement:top1") or parse(spec)[0] == "top_k"


def drop_interval(ref_stats: Any, art_stats: Any, y: Any, spec: str, higher_is_better: bool,
                  level: float = 0.95) -> DropInterval | None:
    """The paired interval suited to the metric; None without per-sample statistics (a user's function, an
    old runner) or without samples."""
    if ref_stats is None or art_stats is None or len(ref_stats) == 0:
        return None
    if is_proportion(spec):
        return paired_proportion_drop(ref_stats, art_stats, level, higher_is_better)
    return paired_bootstrap_drop(ref_stats, art_stats, y, spec, higher_is_better, Bootstrap(level))


# ---------- how many samples would resolve the budget ----------


def _newcombe_zero_half(n: float, accuracy: float, discordance: float, level: float) -> float:
    """Half-width of Newcombe's interval for a zero drop on n samples: both accuracies `accuracy`, a fraction
    `discordance` of the pairs discordant, split evenly between the two directions."""
    one_way = n * discordance / 2.0
    a = max(n * accuracy - one_way, 0.0)
    d = max(n - a - 2 * one_way, 0.0)
    _, lo, hi = newcombe_counts(a, one_way, one_way, d, level)
    return (hi - lo) / 2.0


def half_width_at_zero(interval: DropInterval, samples: float | None = None) -> float:
    """Half-width the interval would have for a zero drop, at `samples` test samples (default: its own), the
    per-sample rates kept: Newcombe's with the same accuracy and discordance rate; the bootstrap's own
    half-width scaled as 1/sqrt(n)."""
    n = float(interval.samples if samples is None else samples)
    if interval.samples <= 0 or n <= 0:
        return 1.0 if interval.method == NEWCOMBE else math.inf
    if interval.method == NEWCOMBE:
        accuracy = interval.reference if interval.reference is not None else 0.5  # unknown: the widest case
        discordance = (interval.discordant or 0) / interval.samples
        return _newcombe_zero_half(n, accuracy, discordance, interval.level)
    return (interval.hi - interval.lo) / 2.0 * math.sqrt(interval.samples / n)


def samples_to_resolve(interval: DropInterval, budget: float) -> int | None:
    """Test samples at which a zero drop's interval would be at most ±budget/2 (so a drop of the budget could
    be told from none), the per-sample rates kept; None when no number would (budget <= 0, or beyond 1e12)."""
    target = budget / 2.0
    if target <= 0 or interval.samples <= 0:
        return None
    if interval.method != NEWCOMBE:
        now = half_width_at_zero(interval)
        return max(1, math.ceil(interval.samples * (now / target) ** 2 - 1e-9))
    lo, hi = 1, 1
    while half_width_at_zero(interval, hi) > target:  # Newcombe's half-width shrinks with n: double, then bisect
        lo, hi = hi, hi * 2
        if hi > _MAX_SAMPLES:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if half_width_at_zero(interval, mid) > target:
            lo = mid + 1
        else:
            hi = mid
    return hi


def _about(n: int) -> int:
    """n rounded up to two significant figures: a projection, not a count."""
    scale = 10 ** max(len(str(n)) - 2, 0)
    return -(-n // scale) * scale


def resolution_warning(interval: DropInterval, budget: float, split: str = "test") -> str | None:
    """The build's warning when the split is too small to resolve the budget (a zero drop's interval wider
    than ±budget/2); None when it is not."""
    half = half_width_at_zero(interval)
    if half <= budget / 2.0:
        return None
    needed = samples_to_resolve(interval, budget)
    would = "no number of samples would" if needed is None else f"about {_about(needed)} samples would"
    return (f"the {split} split of {interval.samples} samples cannot resolve the budget {budget:g}: a zero drop's "
            f"{interval.level * 100:g}% interval is ±{half:.4g}; {would}")


def verdict(interval: DropInterval, budget: float, confidence: float | None = None) -> tuple[bool, bool]:
    """(passed, uncertain). By default the point estimate is judged (drop <= budget); with `confidence` (the
    interval's own level) the whole interval must be within the budget (hi <= budget). Uncertain: the budget
    lies inside the interval, so another test split could judge the other way."""
    if confidence is not None and not math.isclose(confidence, interval.level, abs_tol=1e-12):
        raise ValueError(f"the interval is at {interval.level:g}, not at the confidence {confidence:g} asked for")
    edge = interval.drop if confidence is None else interval.hi
    passed = edge <= budget + _TOLERANCE
    return passed, interval.lo <= budget <= interval.hi
