"""Device-side metrics: the task's score of a model's outputs, numpy only (copied next to runner.py).

A metric is named by a spec string: `accuracy`, `top_k:K`, `mse`, `mae`, `rmse`, `reconstruction_auc`,
`sqnr`, `agreement:top1`, `agreement:cosine`, or `function:MODULE:NAME` (the user's Python function
(outputs, y) -> float, host only). For `sqnr` and `agreement`, `y` holds the reference model's outputs.
per_sample() gives each sample's part of the metric, for the host's paired intervals on a drop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# name -> higher is better
HIGHER_IS_BETTER = {"accuracy": True, "top_k": True, "mse": False, "mae": False, "rmse": False,
                    "reconstruction_auc": True, "sqnr": True, "agreement": True}
SQNR_CAP_DB = 100.0


def _flat(a: Any) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def accuracy(outputs: np.ndarray, y: np.ndarray, x: Any = None) -> float:
    return float(np.mean(_flat(outputs).argmax(axis=1) == np.asarray(y).reshape(-1)))


def top_k(outputs: np.ndarray, y: np.ndarray, k: int) -> float:
    best = np.argsort(-_flat(outputs), axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(best == np.asarray(y).reshape(-1, 1), axis=1)))


def mse(outputs: np.ndarray, y: np.ndarray, x: Any = None) -> float:
    return float(np.mean((_flat(outputs) - _flat(y)) ** 2))


def mae(outputs: np.ndarray, y: np.ndarray, x: Any = None) -> float:
    return float(np.mean(np.abs(_flat(outputs) - _flat(y))))


def rmse(outputs: np.ndarray, y: np.ndarray, x: Any = None) -> float:
    return float(np.sqrt(mse(outputs, y)))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic, ties counted half."""
    labels = np.asarray(labels).reshape(-1).astype(bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = np.asarray(scores)[order]
    i = 0
    while i < len(sorted_scores):  # average ranks over ties
        j = i
        while j + 1 < len(sorted_scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        raise ValueError("reconstruction_auc needs both normal (0) and anomalous (1) samples")
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def reconstruction_errors(outputs: np.ndarray, x: Any) -> np.ndarray:
    """Each sample's reconstruction error (mean squared, input vs output), shape (N,)."""
    if x is None:
        raise ValueError("reconstruction_auc needs the inputs")
    out = _flat(outputs)
    step = 1024  # x may be read lazily (runner_arrays): a batch of inputs at a time
    errors = [np.mean((_flat(x[i : i + step]) - out[i : i + step]) ** 2, axis=1) for i in range(0, len(out), step)]
    return np.concatenate(errors) if errors else np.zeros(0)


def reconstruction_auc(outputs: np.ndarray, y: np.ndarray, x: Any = None) -> float:
    """ROC AUC of each sample's reconstruction error (mean squared, input vs output); y: 1 = anomalous."""
    return roc_auc(y, reconstruction_errors(outputs, x))


def sqnr(outputs: np.ndarray, y: np.ndarray, x: Any = None) -> float:
    """Signal-to-quantization-noise ratio (dB) of the outputs against the reference outputs `y`."""
    ref, out = _flat(y), _flat(outputs)
    return float(sqnr_from_energies(np.float64(np.sum(ref * ref)), np.float64(np.sum((ref - out) ** 2))))


def sqnr_from_energies(signal: Any, noise: Any) -> Any:
    """SQNR in dB from signal and noise energies (numbers or arrays of them), capped at +-SQNR_CAP_DB: the cap
    where the noise is negligible, minus it where there is no signal."""
    signal, noise = np.asarray(signal, np.float64), np.asarray(noise, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.minimum(SQNR_CAP_DB, 10.0 * np.log10(signal / noise))
    db = np.where(signal == 0.0, -SQNR_CAP_DB, db)
    return np.where(noise <= signal * 1e-10, SQNR_CAP_DB, db)


def _cosines(outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    a, b = _flat(outputs), _flat(y)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, np.sum(a * b, axis=1) / np.maximum(norms, 1e-300), 1.0)


def cosine(outputs: np.ndarray, y: np.ndarray, x: Any = None) -> float:
    """Mean cosine similarity of each sample's outputs with the reference outputs `y`."""
    return float(np.mean(_cosines(outputs, y)))


def agreement_top1(outputs: np.ndarray, y: np.ndarray, x: Any = None) -> float:
    return float(np.mean(_flat(outputs).argmax(axis=1) == _flat(y).argmax(axis=1)))


_SIMPLE: dict[str, Callable[..., float]] = {
    "accuracy": accuracy, "mse": mse, "mae": mae, "rmse": rmse, "reconstruction_auc": reconstruction_auc,
    "sqnr": sqnr, "agreement:top1": agreement_top1, "agreement:cosine": cosine,
}


def parse(spec: str) -> tuple[str, str]:
    """(metric name, argument) of a spec string, e.g. ("top_k", "5"), ("agreement", "cosine")."""
    name, _, arg = spec.partition(":")
    return name, arg


def score(outputs: np.ndarray, y: np.ndarray, spec: str = "accuracy", x: Any = None) -> float:
    """The metric `spec` of `outputs` (N, ...) against `y` (labels, targets or reference outputs)."""
    outputs = np.asarray(outputs)
    if outputs.shape[0] == 0:
        return 0.0
    name, arg = parse(spec)
    if spec in _SIMPLE:
        value = _SIMPLE[spec](outputs, y, x)
    elif name == "top_k":
        value = top_k(outputs, y, int(arg))
    elif name == "function":
        import importlib

        module, _, attr = arg.rpartition(":")
        value = getattr(importlib.import_module(module), attr)(outputs, y)
    else:
        raise ValueError("unknown metric " + repr(spec))
    value = float(value)
    if not np.isfinite(value):
        raise ValueError("metric " + spec + " gave " + str(value))
    return value


# Per-sample statistics: the metric recomputed on any subset of the samples (a resample, a split), so that the
# drop between two models evaluated on the same samples can be given a paired interval on the host.
_CORRECT = ("accuracy", "top_k", "agreement:top1")


def _correct(outputs: np.ndarray, y: np.ndarray, spec: str) -> np.ndarray:
    """1.0 where the sample's prediction counts as correct for a class metric, else 0.0; shape (N,)."""
    name, arg = parse(spec)
    out = _flat(outputs)
    if spec == "agreement:top1":
        hit = out.argmax(axis=1) == _flat(y).argmax(axis=1)
    elif name == "top_k":
        best = np.argsort(-out, axis=1, kind="stable")[:, : int(arg)]
        hit = np.any(best == np.asarray(y).reshape(-1, 1), axis=1)
    else:
        hit = out.argmax(axis=1) == np.asarray(y).reshape(-1)
    return hit.astype(np.float64)


def per_sample(outputs: np.ndarray, y: np.ndarray, spec: str = "accuracy", x: Any = None) -> np.ndarray | None:
    """Per-sample statistics of the metric `spec`, from which from_per_sample() recomputes it on any subset:
    (N,) 0/1 correct (accuracy, top_k, agreement:top1), (N,) squared error mean (mse, rmse), absolute error mean
    (mae), reconstruction error (reconstruction_auc), cosine (agreement:cosine); (N, 2) signal and noise energy
    (sqnr). None for a user's function, which has no per-sample form."""
    outputs = np.asarray(outputs)
    name, _ = parse(spec)
    if name == "function":
        return None
    if outputs.shape[0] == 0:
        return np.zeros((0, 2) if spec == "sqnr" else (0,))
    if spec in _CORRECT or name == "top_k":
        return _correct(outputs, y, spec)
    if spec in ("mse", "rmse"):
        return np.mean((_flat(outputs) - _flat(y)) ** 2, axis=1)
    if spec == "mae":
        return np.mean(np.abs(_flat(outputs) - _flat(y)), axis=1)
    if spec == "reconstruction_auc":
        return reconstruction_errors(outputs, x)
    if spec == "sqnr":
        ref, out = _flat(y), _flat(outputs)
        return np.stack([np.sum(ref * ref, axis=1), np.sum((ref - out) ** 2, axis=1)], axis=1)
    if spec == "agreement:cosine":
        return _cosines(outputs, y)
    raise ValueError("unknown metric " + repr(spec))


def from_per_sample(stats: Any, y: Any, spec: str) -> float:
    """The metric `spec` from per_sample() statistics (of all samples or a subset; `y` the same samples' labels,
    read by reconstruction_auc only): equal to score() on those samples up to rounding."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.shape[0] == 0:
        return 0.0
    if spec == "rmse":
        value = float(np.sqrt(np.mean(stats)))
    elif spec == "reconstruction_auc":
        value = roc_auc(y, stats)
    elif spec == "sqnr":
        value = float(sqnr_from_energies(np.sum(stats[:, 0]), np.sum(stats[:, 1])))
    elif spec in _SIMPLE or parse(spec)[0] == "top_k":
        value = float(np.mean(stats))
    else:
        raise ValueError("metric " + repr(spec) + " has no per-sample form")
    if not np.isfinite(value):
        raise ValueError("metric " + spec + " gave " + str(value))
    return value


def score_and_per_sample(outputs: np.ndarray, y: np.ndarray, spec: str = "accuracy",
                         x: Any = None) -> tuple[float, np.ndarray | None]:
    """(score(), per_sample()) of the same outputs, reading lazily-read inputs once (reconstruction_auc)."""
    stats = per_sample(outputs, y, spec, x)
    if spec == "reconstruction_auc" and stats is not None and len(stats):
        return from_per_sample(stats, y, spec), stats  # score() computes exactly this
    return score(outputs, y, spec, x), stats
