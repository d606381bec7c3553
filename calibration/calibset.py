"""A calibration set: which samples a quantizer sees, chosen reproducibly, with a fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

# One input: an array (N, ...). Several: {input name: array (N, ...)}, in the model's input order.
Arrays = np.ndarray | dict[str, np.ndarray]


def count_samples(x: Arrays) -> int:
    """Samples in an array or in each array of {input name: array}."""
    return int(next(iter(x.values())).shape[0]) if isinstance(x, dict) else int(x.shape[0])


def take_samples(x: Arrays, index: Any) -> Arrays:
    """x[index] of an array, or of each array of {input name: array}."""
    return {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]


class SamplingMethod(str, Enum):
    RANDOM = "random"
    STRATIFIED = "stratified"


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed float32 samples in the model's input layout (N, ...), plus how they were chosen; a model with
    several inputs has {input name: samples} (every input covered, the same rows of each)."""

    samples: Arrays
    source: str
    sampling: SamplingMethod
    seed: int

    def __len__(self) -> int:
        return count_samples(self.samples)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The input names of a several-input set; () for one input."""
        return tuple(self.samples) if isinstance(self.samples, dict) else ()

    def batches(self, batch_size: int = 1) -> Iterator[Arrays]:
        """Input batches, in a fixed order: arrays, or {input name: array} for several inputs."""
        for i in range(0, len(self), batch_size):
            yield take_samples(self.samples, slice(i, i + batch_size))

    def head(self, n: int) -> CalibrationSet:
        """The first n samples, chosen the same way."""
        return CalibrationSet(take_samples(self.samples, slice(0, n)), self.source, self.sampling, self.seed)

    def fingerprint(self) -> str:
        """Content hash of the samples and how they were chosen; part of every quantization cache key."""
        h = hashlib.sha256()
        arrays = self.samples if isinstance(self.samples, dict) else {"": self.samples}
        shapes = "|".join(f"{k}{v.shape}" for k, v in arrays.items()) if self.input_names else str(arrays[""].shape)
        h.update(f"{self.source}|{self.sampling.value}|{self.seed}|{shapes}|".encode())
        for v in arrays.values():
            h.update(np.ascontiguousarray(v, dtype=np.float32).tobytes())
        return h.hexdigest()

    def save(self, path: Path) -> None:
        """`x`, or `x.<input name>` per input."""
        if isinstance(self.samples, dict):
            named: dict[str, Any] = {f"x.{k}": v.astype(np.float32) for k, v in self.samples.items()}
            np.savez(path, **named)
        else:
            np.savez(path, x=self.samples.astype(np.float32))

    @staticmethod
    def load_samples(path: Path) -> Arrays:
        """What save() wrote."""
        with np.load(path) as data:
            if "x" in data.files:
                return np.asarray(data["x"])
            return {k[2:]: np.asarray(data[k]) for k in data.files if k.startswith("x.")}


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
    size = min(size, count_samples(x))
    method = sampling or (SamplingMethod.STRATIFIED if labels is not None else SamplingMethod.RANDOM)
    if method is SamplingMethod.STRATIFIED:
        if labels is None:
            raise ValueError("stratified sampling needs labels")
        idx = _stratified_indices(np.asarray(labels), size, rng)
    else:
        idx = np.sort(rng.permutation(count_samples(x))[:size])
    picked = {k: np.asarray(v[idx], dtype=np.float32) for k, v in x.items()} if isinstance(x, dict) \
        else np.asarray(x[idx], dtype=np.float32)
    return CalibrationSet(picked, source, method, seed)
