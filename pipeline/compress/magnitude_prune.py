"""Unstructured magnitude pruning with the polynomial-decay sparsity schedule of Zhu & Gupta (2017).

During fine-tuning a callback recomputes per-kernel magnitude masks every `frequency` steps at the scheduled
sparsity and re-applies them after every batch; at the end the target masks are applied once more, so the
pruned weights are plain zeros in an ordinary model (nothing to strip, nothing custom to save).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "recurrent_kernel")


def prunable_kernels(model: keras.Model) -> list[Any]:
    """The multiply weights (Dense/Conv/RNN kernels) of a model; biases, norms and embeddings stay dense."""
    seen: set[int] = set()
    kernels = []
    for v in model.weights:
        if v.name in KERNEL_NAMES and id(v) not in seen and v.trainable:
            seen.add(id(v))
            kernels.append(v)
    return kernels


def polynomial_sparsity(
    step: int, *, begin_step: int, end_step: int, final: float, initial: float = 0.0, power: float = 3.0
) -> float:
    """s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t_end - t0))^power, clamped to [t0, t_end]."""
    if step <= begin_step:
        return initial
    if step >= end_step or end_step <= begin_step:
        return final
    frac = (step - begin_step) / (end_step - begin_step)
    return final + (initial - final) * (1.0 - frac) ** power


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """A 0/1 mask zeroing exactly round(sparsity * size) of the smallest-magnitude entries."""
    n_zero = int(round(sparsity * weights.size))
    mask = np.ones(weights.size, dtype=weights.dtype)
    if n_zero > 0:
        order = np.argpartition(np.abs(weights).reshape(-1), n_zero - 1)[:n_zero]
        mask[order] = 0
    return mask.reshape(weights.shape)


def apply_magnitude_pruning(model: keras.Model, sparsity: float) -> None:
    """Zero the smallest `sparsity` fraction of every prunable kernel of `model`, in place (one shot)."""
    for v in prunable_kernels(model):
        w = keras.ops.convert_to_numpy(v)
        v.assign(w * magnitude_mask(w, sparsity))


def kernel_sparsity(model: keras.Model) -> float:
    """Fraction of zeros over the prunable kernels."""
    arrays = [keras.ops.convert_to_numpy(v) for v in prunable_kernels(model)]
    total = sum(a.size for a in arrays)
    return float(sum(int((a == 0).sum()) for a in arrays) / total) if total else 0.0


def overall_sparsity(model: keras.Model) -> float:
    """Fraction of zeros over all weights."""
    arrays = [keras.ops.convert_to_numpy(v) for v in model.weights]
    total = sum(a.size for a in arrays)
    return float(sum(int((a == 0).sum()) for a in arrays) / total) if total else 0.0


class PolynomialDecayPruning(keras.callbacks.Callback):
    """Keras callback: magnitude masks on the fitted model's kernels following the polynomial schedule.

    The target is reached at `end_fraction` of the `total_steps`, leaving the rest to recover at it.
    """

    def __init__(
        self,
        target: float,
        total_steps: int,
        *,
        end_fraction: float = 0.75,
        frequency: int | None = None,
        initial: float = 0.0,
        power: float = 3.0,
    ) -> None:
        super().__init__()
        self.target = target
        self.end_step = max(1, int(round(total_steps * end_fraction)))
        self.frequency = frequency or max(1, min(100, self.end_step // 10))
        self.initial = initial
        self.power = power
        self.step = 0
        self.kernels: list[Any] = []
        self.masks: list[Any] = []

    def current_sparsity(self) -> float:
        return polynomial_sparsity(
            self.step,
            begin_step=0,
            end_step=self.end_step,
            final=self.target,
            initial=self.initial,
            power=self.power,
        )

    def _update_masks(self, sparsity: float) -> None:
        self.masks = [
            keras.ops.convert_to_tensor(magnitude_mask(keras.ops.convert_to_numpy(v), sparsity))
            for v in self.kernels
        ]

    def _apply(self) -> None:
        for v, m in zip(self.kernels, self.masks, strict=True):
            v.assign(keras.ops.multiply(v, m))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.step = 0
        self.kernels = prunable_kernels(self.model)
        self._update_masks(self.initial)
        self._apply()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        if self.step % self.frequency == 0 or self.step == self.end_step:
            self._update_masks(self.current_sparsity())
        self._apply()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._update_masks(self.target)
        self._apply()
