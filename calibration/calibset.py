"""A calibration set: which samples a quantizer sees, chosen reproducibly, with a fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np


class SamplingMethod(str, Enum):
    RANDOM = "random"
    STRATIFIED = "stratified"


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed float32 samples in the model's input layout (N, ...), plus how they were chosen."""

    samples: np.ndarray
    source: str
    sampling: SamplingMethod
    seed: int

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    def batches(self, batch_size: int = 1) -> Iterator[np.ndarray]:
        """Input batches, in a fixed order."""
        for i in range(0, len(self), batch_size):
            yield self.samples[i : i + batch_size]

    def fingerprint(self) -> str:
        """Content hash of the samples and how they were chosen; part of every quantization cache key."""
        h = hashlib.sha256()
        h.update(f"{self.source}|{self.sampling.value}|{self.seed}|{self.samples.shape}|".encode())
        h.update(np.ascontiguousarray(self.samples, dtype=np.float32).tobytes())
        return h.hexdigest()

    def save(self, path: Path) -> None:
        np.savez(path, x=self.samples.astype(np.float32))


def _stratified_indices(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder allocation of `size` over classes, proportional to class frequency.
    quota = counts / counts.sum() * size
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take))[: size - int(take.sum())]:
        take[i] += 1
    take = np.minimum(take, counts)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked))


def make_calibration_set(
    x: Any,
    labels: np.ndarray | None,
    size: int,
    *,
    seed: int = 0,
    source: str = "train",
    sampling: SamplingMethod | None = None,
) -> CalibrationSet:
    """Pick `size` samples from `x` (the training split: an array, or a lazy one that reads the rows an index array
    asks for): stratified by label when labels are given."""
    if size < 1:
        raise ValueError("calibration size must be at least 1")
    rng = np.random.default_rng(seed)
    size = min(size, int(x.shape[0]))
    method = sampling or (SamplingMethod.STRATIFIED if labels is not None else SamplingMethod.RANDOM)
    if method is SamplingMethod.STRATIFIED:
        if labels is None:
            raise ValueError("stratified sampling needs labels")
        idx = _stratified_indices(np.asarray(labels), size, rng)
    else:
        idx = np.sort(rng.permutation(x.shape[0])[:size])
    return CalibrationSet(np.asarray(x[idx], dtype=np.float32), source, method, seed)
