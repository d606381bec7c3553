"""The int8 grid, once for numpy and for Keras: fake quantization (a value onto the integer grid and back) and
the step of a symmetric weight grid. Each function takes the array module as `xp`: numpy (the default:
calibration's range search, weights snapped for export) or keras.ops (quantization-aware training, with a
straight-through `rounding`). numpy only here: the caller brings keras.ops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def fake_quant(x: Any, step: Any, zero: Any, qmin: float, qmax: float, xp: Any = np,
               rounding: Callable[[Any], Any] | None = None) -> Any:
    """x on the integer grid of `step` and zero point `zero`, clipped to the integers [qmin, qmax], and back:
    (round(clip(x / step + zero, qmin, qmax)) - zero) * step, rounded by `rounding` (default xp.round)."""
    q = xp.clip(x / step + zero, qmin, qmax)
    return ((rounding or xp.round)(q) - zero) * step


def symmetric_step(w: Any, levels: int, axes: tuple[int, ...], xp: Any = np) -> Any:
    """The step of the symmetric grid of `levels` integers (odd: 255 is int8's [-127, 127]) that spans max|w|
    over `axes`: max|w| / ((levels - 1) / 2), kept apart from 0."""
    return xp.maximum(xp.max(xp.abs(w), axis=axes, keepdims=True), 1e-12) / ((levels - 1) / 2.0)


def on_symmetric_grid(w: Any, levels: int, axes: tuple[int, ...], xp: Any = np) -> Any:
    """w on its symmetric grid (symmetric_step over `axes`, zero point 0): integer multiples of the step."""
    half = (levels - 1) / 2.0
    return fake_quant(w, symmetric_step(w, levels, axes, xp), 0.0, -half, half, xp)
