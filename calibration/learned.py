"""Learned activation ranges (quantization-aware fine-tuning) and how each backend finds the tensors they
belong to: by value, not by name. The fine-tuned float model's activation has a signature (its statistics on
the calibration set); a backend computes the same statistics for each tensor it quantizes, on the same
calibration set, and every tensor whose signature matches takes the learned range (a layout change such as
NHWC -> NCHW, a reshape or an identity keeps the statistics, so all of them do). numpy only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

K = TypeVar("K")
RTOL = 1e-3  # of the tensor's largest magnitude: float conversions differ by far less, other tensors by more
SYMMETRIC_QMAX = 127.0  # symmetric int8 activations: zero point 0, integers in [-127, 127], step max|range| / 127
ASYMMETRIC_STEPS = 255.0  # asymmetric int8 activations: 256 levels, 255 steps over [lo, hi], an integer zero point


def on_grid(lo: float, hi: float, steps: float = ASYMMETRIC_STEPS) -> tuple[float, float]:
    """An asymmetric range moved onto the grid whose zero point is an integer, as the fake quantization trains
    it and the backends store it: step = (hi - lo) / 255, z = round(-lo / step), and the ends -z step and
    (255 - z) step (lo <= 0 <= hi). Given these limits, every backend's grid is the trained one."""
    step = max(hi - lo, 1e-6) / steps
    zero = float(np.clip(np.round(-lo / step), 0.0, steps))
    return -zero * step, (steps - zero) * step


@dataclass(frozen=True)
class LearnedRange:
    """One activation's learned int8 range, and the statistics that identify its tensor in a backend."""

    layer: str
    lo: float
    hi: float
    symmetric: bool
    signature: tuple[float, ...]  # Signature.values(): size per sample, min, max, mean, mean |x|, rms

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LearnedRange:
        return cls(str(d["layer"]), float(d["lo"]), float(d["hi"]), bool(d["symmetric"]),
                   tuple(float(v) for v in d["signature"]))

    def scale(self) -> float:
        """The int8 step: max|range| / 127 when symmetric (zero point 0), else (hi - lo) / 255."""
        if self.symmetric:
            return max(abs(self.lo), abs(self.hi)) / SYMMETRIC_QMAX
        return (self.hi - self.lo) / ASYMMETRIC_STEPS


class Signatures:
    """Running statistics of named tensors over a calibration set (one add per tensor per sample)."""

    def __init__(self) -> None:
        self._acc: dict[Any, list[float]] = {}

    def add(self, key: Any, x: np.ndarray) -> None:
        a = np.asarray(x, np.float64).reshape(-1)
        if a.size == 0 or not np.all(np.isfinite(a)):
            return
        acc = self._acc.setdefault(key, [float(a.size), np.inf, -np.inf, 0.0, 0.0, 0.0, 0.0])
        acc[1], acc[2] = min(acc[1], float(a.min())), max(acc[2], float(a.max()))
        acc[3] += float(a.sum())
        acc[4] += float(np.abs(a).sum())
        acc[5] += float(np.square(a).sum())
        acc[6] += float(a.size)

    def values(self) -> dict[Any, tuple[float, ...]]:
        out: dict[Any, tuple[float, ...]] = {}
        for key, (size, lo, hi, s, sa, sq, n) in self._acc.items():
            out[key] = (size, lo, hi, s / n, sa / n, float(np.sqrt(sq / n)))
        return out


def same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two signatures describe the same values (up to float conversion noise)."""
    if len(a) != len(b) or a[0] != b[0]:
        return False
    tol = RTOL * max(abs(a[1]), abs(a[2]), 1e-6)
    return all(abs(x - y) <= tol for x, y in zip(a[1:], b[1:], strict=True))


def match(ranges: tuple[LearnedRange, ...] | list[LearnedRange], signatures: dict[K, tuple[float, ...]],
          ) -> dict[K, LearnedRange]:
    """Each backend tensor (by its key) whose signature matches a learned range's."""
    out: dict[K, LearnedRange] = {}
    for key, sig in signatures.items():
        hit = next((r for r in ranges if same(r.signature, sig)), None)
        if hit is not None:
            out[key] = hit
    return out


def note(found: int, ranges: tuple[LearnedRange, ...] | list[LearnedRange]) -> str:
    """The export note: how many quantized tensors took a learned range."""
    layers = len(ranges)
    return (f"quantization-aware: {found} activation tensor(s) quantized with the range learned in fine-tuning "
            f"({layers} learned range(s), tensors found by their statistics on the calibration set); "
            "the others keep their calibrated range")
