"""int8 against float: both artifacts timed in rounds interleaved in one process (ABBA order, so neither gains
from where it stood while the machine's load drifts), and the ratio of medians with a bootstrap interval. A
speed-up whose interval holds 1.0 is "no measurable difference": the slower-int8 warning and
ship_faster_float act only on a difference the interval resolves."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.report.schema import SpeedupStats
from targets import runner, runner_bench

ROUNDS = 10  # blocks per artifact; the samples of a round run back to back
RESAMPLES = 2000
NOISY_WIDTH = 0.10  # a median whose 95% interval is wider than ±10% of it is reported as noisy


class Verdict(str, Enum):
    FASTER = "faster"
    SLOWER = "slower"
    SAME = "no measurable difference"


@dataclass(frozen=True)
class Speedup:
    """float median / int8 median (> 1: int8 faster), its interval, how it was measured."""

    ratio: float
    lo: float
    hi: float
    interleaved: bool
    level: float = 0.95

    @property
    def verdict(self) -> Verdict:
        if self.lo > 1.0:
            return Verdict.FASTER
        if self.hi < 1.0:
            return Verdict.SLOWER
        return Verdict.SAME

    def to_report(self) -> SpeedupStats:
        return SpeedupStats(ratio=round(self.ratio, 4), interval=[round(self.lo, 4), round(self.hi, 4)],
                            level=self.level, verdict=self.verdict.value, interleaved=self.interleaved)


def ratio_interval(float_ms: Any, int8_ms: Any, interleaved: bool, level: float = 0.95, seed: int = 0) -> Speedup:
    """The ratio of medians and its percentile bootstrap interval (each sample set resampled on its own)."""
    f, q = np.asarray(float_ms, np.float64), np.asarray(int8_ms, np.float64)
    rng = np.random.default_rng(seed)
    fm = np.median(f[rng.integers(0, len(f), (RESAMPLES, len(f)))], axis=1)
    qm = np.median(q[rng.integers(0, len(q), (RESAMPLES, len(q)))], axis=1)
    ratios = fm / np.maximum(qm, 1e-12)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(ratios, [tail, 100.0 - tail])
    return Speedup(float(np.median(f) / max(float(np.median(q)), 1e-12)), float(lo), float(hi), interleaved, level)


def interleaved_samples(int8: Path, float_: Path, warmup: int, iterations: int, threads: int,
                        ) -> tuple[list[float], list[float]]:
    """Both artifacts opened in this process and timed alternately, ROUNDS blocks each, in ABBA order (the same
    loop that times two artifacts on a device: targets.runner_bench.interleaved)."""
    sessions = [runner.open_session(p, threads) for p in (int8, float_)]
    feeds = [runner.zeros_feed(p) for p in (int8, float_)]
    q, f = runner_bench.interleaved(sessions, feeds, warmup, iterations, threads, ROUNDS)
    return list(q), list(f)


def noisy_note(latency: dict[str, Any]) -> str | None:
    """A note when the median's interval is wider than ±NOISY_WIDTH of it: the machine was too noisy for the
    median to be read as stable."""
    ci, median = latency.get("median_ci"), latency.get("median")
    if not ci or not median or not np.all(np.isfinite(ci)):
        return None
    half = (ci[1] - ci[0]) / 2.0 / median
    if half <= NOISY_WIDTH:
        return None
    return (f"latency too noisy to read as stable: the median's 95% interval is {ci[0]:.4g}-{ci[1]:.4g} ms "
            f"(±{half:.0%}) after {latency.get('iterations')} runs; measure on a quiet machine or with more "
            "iterations")
