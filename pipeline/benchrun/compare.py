"""Regression verdicts of `edgepipe bench compare`: the candidate's latency against the baseline's as the ratio
of medians with a bootstrap interval (pipeline.measure.speedup.ratio_interval, from the raw samples), and its
metric as the drop with a paired interval (pipeline.measure.intervals) where both ran on the same eval set. A
regression is a whole interval beyond the threshold; an artifact compared with itself (one content hash) is
never flagged, whatever the machine's noise did to its interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.measure.intervals import drop_interval
from pipeline.measure.speedup import RESAMPLES, ratio_interval
from targets.runner import median_interval


@dataclass(frozen=True)
class LatencyVerdict:
    """candidate median / baseline median (> 1: the candidate is slower) and its 95% interval."""

    ratio: float
    lo: float
    hi: float
    threshold: float
    interleaved: bool
    same_artifact: bool
    samples: tuple[int, int]
    method: str = "samples"

    @property
    def interval_flags(self) -> bool:
        """What the interval alone says: the whole of it above 1 + threshold."""
        return self.lo > 1.0 + self.threshold

    @property
    def regression(self) -> bool:
        return self.interval_flags and not self.same_artifact

    @property
    def verdict(self) -> str:
        if self.same_artifact:
            return "same artifact: never a regression"
        if self.regression:
            return f"REGRESSION: slower by more than {self.threshold:.0%}"
        if self.hi < 1.0:
            return "faster"
        return f"no regression beyond {self.threshold:.0%}"

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": round(self.ratio, 4), "interval": [round(self.lo, 4), round(self.hi, 4)], "level": 0.95,
                "threshold": self.threshold, "interleaved": self.interleaved, "same_artifact": self.same_artifact,
                "samples": list(self.samples), "method": self.method, "interval_flags": self.interval_flags,
                "regression": self.regression, "verdict": self.verdict}


SAMPLES = "samples"  # every sample resampled on its own (speedup.ratio_interval)
ROUNDS = "paired-rounds"  # the ratio of each interleaved round's medians, a distribution-free interval of their median
BLOCKS = "blocks"  # medians of consecutive blocks resampled (two runs measured apart)
BLOCK_COUNT = 10


def round_ratios(baseline_ms: Any, candidate_ms: Any, rounds: int) -> np.ndarray:
    """Per interleaved round, the candidate's block median over the baseline's (the two ran back to back)."""
    b = np.asarray(baseline_ms, np.float64)
    c = np.asarray(candidate_ms, np.float64)
    per = min(len(b), len(c)) // rounds
    b, c = b[: per * rounds].reshape(rounds, per), c[: per * rounds].reshape(rounds, per)
    return np.median(c, axis=1) / np.maximum(np.median(b, axis=1), 1e-12)


def block_medians(samples: Any, blocks: int = BLOCK_COUNT) -> np.ndarray:
    a = np.asarray(samples, np.float64)
    per = max(1, len(a) // blocks)
    return np.median(a[: per * (len(a) // per)].reshape(-1, per), axis=1)


def latency_verdict(baseline_ms: Any, candidate_ms: Any, threshold: float, interleaved: bool,
                    same_artifact: bool, method: str = SAMPLES, rounds: int = 0) -> LatencyVerdict:
    """The candidate/baseline ratio and its 95% interval by `method` (SAMPLES, ROUNDS with `rounds`, BLOCKS)."""
    n = (len(baseline_ms), len(candidate_ms))
    if method == ROUNDS:
        r = round_ratios(baseline_ms, candidate_ms, rounds)
        lo, hi = median_interval(r)
        return LatencyVerdict(float(np.median(r)), lo, hi, threshold, interleaved, same_artifact, n, method)
    if method == BLOCKS:
        sp = ratio_interval(block_medians(candidate_ms), block_medians(baseline_ms), interleaved=interleaved)
    else:
        sp = ratio_interval(candidate_ms, baseline_ms, interleaved=interleaved)  # candidate / baseline
    return LatencyVerdict(sp.ratio, sp.lo, sp.hi, threshold, interleaved, same_artifact, n, method)


@dataclass(frozen=True)
class MetricVerdict:
    """The candidate's drop in the metric against the baseline (positive: worse) and its 95% interval."""

    baseline: float
    candidate: float
    drop: float
    lo: float | None
    hi: float | None
    method: str
    threshold: float
    same_artifact: bool

    @property
    def regression(self) -> bool:
        return self.lo is not None and self.lo > self.threshold and not self.same_artifact

    @property
    def verdict(self) -> str:
        if self.same_artifact:
            return "same artifact: never a regression"
        if self.lo is None:
            return "no interval (no per-sample scores): not judged"
        return f"REGRESSION: worse by more than {self.threshold:g}" if self.regression else \
            f"no regression beyond {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        iv = None if self.lo is None or self.hi is None else [self.lo, self.hi]
        return {"baseline": self.baseline, "candidate": self.candidate, "drop": self.drop, "interval": iv,
                "level": 0.95, "method": self.method, "threshold": self.threshold, "regression": self.regression,
                "verdict": self.verdict}


def unpaired_drop(base: np.ndarray, cand: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap of mean(base) - mean(cand), each resampled on its own (different eval sets)."""
    rng = np.random.default_rng(seed)
    b = base[rng.integers(0, len(base), (RESAMPLES, len(base)))].mean(axis=1)
    c = cand[rng.integers(0, len(cand), (RESAMPLES, len(cand)))].mean(axis=1)
    lo, hi = np.percentile(b - c, [2.5, 97.5])
    return float(lo), float(hi)


def metric_verdict(baseline: dict[str, Any], candidate: dict[str, Any], threshold: float,
                   same_artifact: bool) -> MetricVerdict | None:
    """None unless both sides have a metric value; paired (same eval set, same samples) when they can be."""
    if baseline.get("accuracy") is None or candidate.get("accuracy") is None:
        return None
    b, c = float(baseline["accuracy"]), float(candidate["accuracy"])
    bs, cs = baseline.get("per_sample"), candidate.get("per_sample")
    if not bs or not cs:
        return MetricVerdict(b, c, b - c, None, None, "none", threshold, same_artifact)
    paired = baseline.get("eval_sha256") == candidate.get("eval_sha256") and len(bs) == len(cs)
    if paired:
        iv = drop_interval(bs, cs, None, "accuracy", True)
        assert iv is not None
        return MetricVerdict(b, c, b - c, iv.lo, iv.hi, iv.method, threshold, same_artifact)
    lo, hi = unpaired_drop(np.asarray(bs, np.float64), np.asarray(cs, np.float64))
    return MetricVerdict(b, c, b - c, lo, hi, "unpaired-bootstrap", threshold, same_artifact)
