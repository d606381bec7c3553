"""The prune stage: channel (structured, really smaller) or magnitude (unstructured zeros) pruning."""

from __future__ import annotations

import math
from typing import Any

import keras

from pipeline.compress.base import StageContext, StageResult
from pipeline.compress.channel_prune import channel_prune, group_widths
from pipeline.compress.graph import to_functional
from pipeline.compress.magnitude_prune import (
    PolynomialDecayPruning,
    apply_magnitude_pruning,
    kernel_sparsity,
    overall_sparsity,
    prunable_kernels,
)
from pipeline.compress.training import fine_tune
from pipeline.config import PruneMethod, PruneSection

MAGNITUDE_NOTE = (
    "magnitude sparsity shrinks compressed size, not latency, on LiteRT/OpenVINO/ONNX Runtime CPU"
)


def step_sparsities(target: float, iterations: int) -> list[float]:
    """Cumulative sparsity after each of `iterations` steps (of the original widths), geometric to `target`."""
    return [1.0 - (1.0 - target) ** ((i + 1) / iterations) for i in range(iterations)]


def split_epochs(epochs: int, iterations: int) -> list[int]:
    """`epochs` spread over `iterations` fine-tuning rounds (earlier rounds get the remainder)."""
    return [epochs // iterations + (1 if i < epochs % iterations else 0) for i in range(iterations)]


class PruneStage:
    name = "prune"
    version = "4"

    def __init__(self, cfg: PruneSection) -> None:
        self.cfg = cfg

    def config_dict(self) -> dict[str, Any]:
        return self.cfg.model_dump(mode="json")

    def run(self, model: keras.Model, ctx: StageContext) -> StageResult:
        keras.utils.set_random_seed(ctx.seed)
        if self.cfg.method == PruneMethod.MAGNITUDE:
            return self._magnitude(model, ctx)
        return self._channel(model, ctx)

    def _fine_tune(self, model: keras.Model, ctx: StageContext, epochs: int, label: str,
                   callbacks: list[Any] | None = None) -> keras.Model:
        return fine_tune(model, ctx, self.cfg, epochs, label, callbacks)

    def _channel(self, model: keras.Model, ctx: StageContext) -> StageResult:
        from pipeline.compress.cost import count_macs, count_params

        params_before, macs_before = count_params(model), count_macs(model)
        current = to_functional(model)
        reference = group_widths(current)
        steps = []
        iterations = self.cfg.iterations
        for i, (sparsity, epochs) in enumerate(
            zip(
                step_sparsities(self.cfg.sparsity, iterations),
                split_epochs(self.cfg.epochs, iterations),
                strict=True,
            )
        ):
            current = channel_prune(current, sparsity, reference=reference)
            label = "prune fine-tune" if iterations == 1 else f"prune fine-tune {i + 1}/{iterations}"
            current = self._fine_tune(current, ctx, epochs, label)
            steps.append({"sparsity": sparsity, "epochs": epochs, "params": count_params(current)})
        params_after, macs_after = count_params(current), count_macs(current)
        notes = (
            f"channel pruning: params {params_before} -> {params_after}, MACs {macs_before} -> {macs_after}",
        )
        details = {
            "method": "channel",
            "target_sparsity": self.cfg.sparsity,
            "params_before": params_before,
            "params_after": params_after,
            "macs_before": macs_before,
            "macs_after": macs_after,
            "iterations": steps,
        }
        return StageResult(current, notes, details)

    def _magnitude(self, model: keras.Model, ctx: StageContext) -> StageResult:
        target = self.cfg.sparsity
        epochs = self.cfg.epochs
        current = to_functional(model)
        if epochs > 0:
            steps = epochs * math.ceil(len(ctx.data.x_train) / self.cfg.batch_size)
            schedule = PolynomialDecayPruning(target, steps)
            current = self._fine_tune(current, ctx, epochs, "magnitude prune", [schedule])
        apply_magnitude_pruning(current, target)  # fold the final masks in: the weights are zeros
        achieved = kernel_sparsity(current)
        details = {
            "method": "magnitude",
            "target_sparsity": target,
            "achieved_sparsity": achieved,
            "overall_sparsity": overall_sparsity(current),
            "pruned_kernels": len(prunable_kernels(current)),
        }
        notes = (MAGNITUDE_NOTE, f"magnitude pruning: kernel sparsity {achieved:.3f} (target {target:.3f})")
        return StageResult(current, notes, details)
