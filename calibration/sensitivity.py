"""Per-layer quantization sensitivity: the shared maths (numpy only). Each target measures its layers in
its own runtime and builds the table with these helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

MAX_LAYERS = 12  # layers examined per target
SAMPLES = 32  # calibration samples for the per-layer SQNR
EVAL_SAMPLES = 256  # eval samples for "accuracy with only this layer quantized"


def sqnr_db(reference: np.ndarray | Sequence[np.ndarray], test: np.ndarray | Sequence[np.ndarray]) -> float:
    """Signal-to-quantization-noise ratio of `test` against `reference`, in dB (capped at 100)."""
    ref = np.concatenate([np.asarray(r, np.float64).reshape(-1) for r in _as_list(reference)])
    tst = np.concatenate([np.asarray(t, np.float64).reshape(-1) for t in _as_list(test)])
    if ref.shape != tst.shape:
        raise ValueError(f"shape mismatch: {ref.shape} vs {tst.shape}")
    signal = float(np.sum(ref * ref))
    noise = float(np.sum((ref - tst) ** 2))
    if noise <= signal * 1e-10:
        return 100.0
    if signal == 0.0:
        return -100.0
    return float(min(100.0, 10.0 * np.log10(signal / noise)))


def _as_list(x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    return [x] if isinstance(x, np.ndarray) else list(x)


class LayerProbe(Protocol):
    """The per-backend part of the sensitivity analysis: how to quantize one layer alone and how to run it."""

    def candidates(self) -> list[str]:
        """Layers that could be kept in float, in graph order, named as ExportOptions.float_layers takes them."""
        ...

    def quantized_alone(self, layer: str) -> Any | None:
        """A model with only `layer` quantized; None when the layer cannot be measured."""
        ...

    def sqnr(self, layer: str, model: Any) -> float | None:
        """SQNR (dB) of `layer`'s output in `model` against the float model, on the calibration samples."""
        ...

    def accuracy(self, model: Any) -> float:
        """The evaluation score of `model` on the evaluation samples, in the backend's runtime."""
        ...


def sensitivity_table(probe: LayerProbe, limit: int = MAX_LAYERS, higher_is_better: bool = True) -> list[dict[str, Any]]:
    """Each picked layer quantized alone: its SQNR and the accuracy with only it quantized, most sensitive
    first (the one algorithm; each target supplies a LayerProbe)."""
    rows = []
    for layer in pick_layers(probe.candidates(), limit):
        model = probe.quantized_alone(layer)
        if model is None:
            continue
        sqnr = probe.sqnr(layer, model)
        if sqnr is None:
            continue
        rows.append(row(layer, sqnr, probe.accuracy(model)))
    return rank(rows, higher_is_better)


def row(layer: str, sqnr: float, accuracy: float | None) -> dict[str, Any]:
    return {"layer": layer, "sqnr_db": round(float(sqnr), 3),
            "accuracy": None if accuracy is None else round(float(accuracy), 6)}


def rank(rows: list[dict[str, Any]], higher_is_better: bool = True) -> list[dict[str, Any]]:
    """Most sensitive first: the worst metric ("accuracy": the task's metric) with only that layer quantized
    (when measured), then the lowest SQNR. Ties keep graph order."""
    sign = 1.0 if higher_is_better else -1.0

    def key(r: dict[str, Any]) -> tuple[float, float]:
        acc = r.get("accuracy")
        return (float("inf") if acc is None else sign * float(acc), float(r["sqnr_db"]))

    return sorted(rows, key=key)


def pick_layers(candidates: Sequence[str], limit: int = MAX_LAYERS) -> list[str]:
    """At most `limit` layers, spread evenly over the graph when there are more."""
    if len(candidates) <= limit:
        return list(candidates)
    idx = np.unique(np.linspace(0, len(candidates) - 1, limit).round().astype(int))
    return [candidates[i] for i in idx]
