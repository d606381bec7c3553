"""The validation split: every choice the build makes (ladder attempts, QAT, precision auto, ship_faster_float,
search trials) is judged on it, so that the test split reports a number no choice was fitted to.

The user's x_val / y_val when given; otherwise a seeded part of the training split, stratified by class for
class labels, held out of every training step (teacher of a built-in example, distillation, pruning, QAT)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.inputs.arrays import take
from pipeline.inputs.data import RawData

FRACTION = 0.2  # of the training split, when the user gives no validation split
MAX_SAMPLES = 10_000  # a larger validation split only slows every attempt down
MIN_TRAIN = 2  # samples per class left to train on


def _rows(x: Any) -> int:
    first = next(iter(x.values())) if isinstance(x, dict) else x
    return int(first.shape[0])


def _strata(y: Any, output: str | None) -> np.ndarray | None:
    """Class ids to stratify by: integer labels (or one-hot rows) of the judged output; None for targets."""
    if isinstance(y, dict):
        y = y.get(output) if output is not None else next(iter(y.values()), None)
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "biuf" and np.all(np.isin(y, (0, 1))):
        y = y.argmax(axis=1)
    y = y.reshape(y.shape[0], -1)
    if y.shape[1] != 1 or y.dtype.kind not in "biu":
        return None
    y = y.reshape(-1)
    return y if len(np.unique(y)) <= max(2, len(y) // 4) else None


def holdout_index(n: int, strata: np.ndarray | None, seed: int, fraction: float = FRACTION) -> np.ndarray:
    """Sorted row indices of the held-out part: `fraction` of each class (at least one, leaving MIN_TRAIN),
    drawn with `seed`; of all rows when there are no classes. At most MAX_SAMPLES rows."""
    rng = np.random.default_rng(seed)
    want = min(MAX_SAMPLES, max(1, round(n * fraction)))
    if strata is None:
        return np.sort(rng.permutation(n)[:want])
    picked = []
    for c in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == c))
        k = min(len(rows) - MIN_TRAIN, max(1, round(len(rows) * want / n)))
        picked.append(rows[: max(0, k)])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _subset(v: Any, index: np.ndarray) -> Any:
    if isinstance(v, dict):
        return {k: _subset(a, index) for k, a in v.items()}
    return take(v, index) if not isinstance(v, np.ndarray) else v[index]


def with_validation(raw: RawData, seed: int, output: str | None = None) -> RawData:
    """`raw` with a validation split: the user's, or one held out of (and removed from) the training split."""
    if raw.x_val is not None:
        if _rows(raw.x_val) == 0:
            raise DataError("x_val: no samples")
        return replace(raw, validation="given")
    n = _rows(raw.x_train)
    if _rows(raw.y_train) != n:  # mismatched splits: data.prepare names the problem (exit 2)
        return raw
    held = holdout_index(n, _strata(raw.y_train, output), seed)
    if len(held) == 0 or len(held) >= n:
        raise DataError(f"x_train: {n} sample(s) are too few to hold out a validation split; give x_val and y_val")
    keep = np.setdiff1d(np.arange(n), held)
    return replace(raw, x_train=_subset(raw.x_train, keep), y_train=_subset(raw.y_train, keep),
                   x_val=_subset(raw.x_train, held),
                   y_val=_subset(raw.y_train, held), validation="held out")
