"""Activation range estimators for int8 calibration, on plain numpy arrays (no ML framework).

Each estimator takes every value one tensor took over the calibration set and returns the float range
(lo, hi) that the int8 grid should cover; values outside it are clipped. `symmetric=True` gives
(-T, T), the form TensorRT wants (zero point 0).

- minmax: the observed extremes.
- percentile: the `pct` and `100 - pct` percentiles (|x| percentile when symmetric).
- entropy: TensorRT's calibrator: the clipping threshold T on |x| whose quantized histogram has the
  smallest KL divergence from the float one.
- mse: the clipping that minimises the mean squared error between x and its fake-quantized self.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from calibration import grid

METHODS = ("minmax", "percentile", "entropy", "mse")
MAX_VALUES = 1 << 18  # larger tensors are subsampled (evenly, deterministically) for entropy / mse

Range = tuple[float, float]


def _flat(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    return a[np.isfinite(a)]


def _subsample(a: np.ndarray) -> np.ndarray:
    if a.size <= MAX_VALUES:
        return a
    return a[:: int(np.ceil(a.size / MAX_VALUES))]


def _with_zero(lo: float, hi: float) -> Range:
    """An int8 grid must represent 0 exactly, so every range contains it."""
    return float(min(lo, 0.0)), float(max(hi, 0.0))


def minmax_range(x: np.ndarray, symmetric: bool = False) -> Range:
    a = _flat(x)
    if a.size == 0:
        return 0.0, 0.0
    if symmetric:
        t = float(np.abs(a).max())
        return -t, t
    return _with_zero(float(a.min()), float(a.max()))


def percentile_range(x: np.ndarray, symmetric: bool = False, pct: float = 99.99) -> Range:
    a = _flat(x)
    if a.size == 0:
        return 0.0, 0.0
    if symmetric:
        t = float(np.percentile(np.abs(a), pct))
        return -t, t
    return _with_zero(float(np.percentile(a, 100.0 - pct)), float(np.percentile(a, pct)))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = np.maximum(q / max(q.sum(), 1e-30), 1e-12)
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def _expanded_quantized(ref: np.ndarray, levels: int) -> np.ndarray:
    """`ref` merged into `levels` bins, then spread back evenly over the non-empty source bins."""
    n = ref.size
    group = (np.arange(n) * levels) // n
    nonzero = (ref > 0).astype(np.float64)
    total = np.bincount(group, weights=ref, minlength=levels)
    count = np.bincount(group, weights=nonzero, minlength=levels)
    return np.where(nonzero > 0, total[group] / np.maximum(count[group], 1.0), 0.0)


def entropy_threshold(a: np.ndarray, levels: int = 128, bins: int = 2048, stride: int = 4) -> float:
    """TensorRT-style KL calibration on |a|: the histogram edge whose clipped, `levels`-bin quantized
    distribution is closest (KL) to the clipped float one. Exact zeros (ReLU outputs, padding) are left out
    of the histogram: the int8 grid represents 0 exactly, and their spike would push the threshold down."""
    mags = np.abs(a)
    mags = mags[mags > 0]
    amax = float(mags.max()) if mags.size else 0.0
    if amax == 0.0:
        return 0.0
    hist, edges = np.histogram(mags, bins=bins, range=(0.0, amax))
    hist = hist.astype(np.float64)
    best_kl, best_i = np.inf, bins
    for i in [*range(levels, bins, stride), bins]:
        ref = hist[:i].copy()
        ref[-1] += hist[i:].sum()  # clipped values land in the last kept bin
        if ref.sum() == 0:
            continue
        kl = _kl(ref, _expanded_quantized(hist[:i], levels))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(edges[min(best_i, bins)])


def entropy_range(x: np.ndarray, symmetric: bool = False) -> Range:
    a = _subsample(_flat(x))
    if a.size == 0:
        return 0.0, 0.0
    one_sided = bool(a.min() >= 0) and not symmetric
    t = entropy_threshold(a, levels=255 if one_sided else 128)
    if symmetric:
        return -t, t
    return _with_zero(max(float(a.min()), -t), min(float(a.max()), t))


def fake_quant(a: np.ndarray, lo: float, hi: float, levels: int = 256) -> np.ndarray:
    """Quantize to `levels` evenly spaced values over [lo, hi] (clipping outside) and back (grid.fake_quant)."""
    if hi <= lo:
        return np.zeros_like(a)
    step = (hi - lo) / (levels - 1)
    return grid.fake_quant(a, step, -lo / step, 0, levels - 1)


def mse_range(x: np.ndarray, symmetric: bool = False, steps: int = 100) -> Range:
    a = _subsample(_flat(x))
    if a.size == 0:
        return 0.0, 0.0
    lo, hi = minmax_range(a, symmetric)
    if hi <= lo:
        return lo, hi
    levels = 255 if symmetric else 256
    best, best_err = (lo, hi), np.inf
    for alpha in np.linspace(1.0 / steps, 1.0, steps):
        err = float(np.mean((fake_quant(a, lo * alpha, hi * alpha, levels) - a) ** 2))
        if err < best_err:
            best, best_err = (float(lo * alpha), float(hi * alpha)), err
    return best


class ValueCollector:
    """Per-tensor calibration values with bounded memory: an evenly strided subsample of each batch
    (at most `per_batch` values), plus each batch's exact extremes so min-max stays exact."""

    def __init__(self, per_batch: int = 8192) -> None:
        self.per_batch = per_batch
        self._parts: dict[str, list[np.ndarray]] = {}

    def add(self, name: str, x: np.ndarray) -> None:
        a = _flat(x)
        if a.size == 0:
            return
        if a.size > self.per_batch:
            a = np.concatenate([a[:: int(np.ceil(a.size / self.per_batch))], [a.min(), a.max()]])
        self._parts.setdefault(name, []).append(a.astype(np.float32))

    def names(self) -> list[str]:
        return list(self._parts)

    def values(self, name: str) -> np.ndarray:
        return np.concatenate(self._parts[name])

    def ranges(self, method: str, symmetric: bool = False) -> dict[str, Range]:
        return {n: estimate_range(self.values(n), method, symmetric) for n in self._parts}


_ESTIMATORS: dict[str, Callable[[np.ndarray, bool], Range]] = {
    "minmax": minmax_range,
    "percentile": percentile_range,
    "entropy": entropy_range,
    "mse": mse_range,
}


def estimate_range(x: np.ndarray, method: str, symmetric: bool = False) -> Range:
    """The int8 range of one tensor's calibration values by `method` (one of METHODS)."""
    if method not in _ESTIMATORS:
        raise ValueError(f"unknown calibration method {method!r} (expected one of {', '.join(METHODS)})")
    lo, hi = _ESTIMATORS[method](x, symmetric)
    if hi - lo <= 0.0:  # a constant tensor: keep what min-max says rather than an empty grid
        return minmax_range(x, symmetric)
    return lo, hi
