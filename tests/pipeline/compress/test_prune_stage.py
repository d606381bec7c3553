from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipeline.compress.base import StageContext, TrainData
from pipeline.compress.magnitude_prune import kernel_sparsity, polynomial_sparsity, prunable_kernels
from pipeline.compress.prune import MAGNITUDE_NOTE, PruneStage, split_epochs, step_sparsities
from pipeline.config import PruneMethod, PruneSection


def test_polynomial_schedule() -> None:
    kw: dict[str, Any] = {"begin_step": 0, "end_step": 100, "final": 0.8}
    assert polynomial_sparsity(0, **kw) == 0.0
    assert polynomial_sparsity(100, **kw) == polynomial_sparsity(500, **kw) == 0.8
    assert 0.0 < polynomial_sparsity(10, **kw) < polynomial_sparsity(50, **kw) < 0.8
    assert abs(polynomial_sparsity(50, **kw) - 0.8 * (1 - 0.5**3)) < 1e-12


def test_magnitude_pruning_reaches_target_and_saves_zeros(
    sequential_model: Callable[..., keras.Model], digits: TrainData, tmp_path: Path
) -> None:
    model = sequential_model(num_classes=10)
    stage = PruneStage(PruneSection(method=PruneMethod.MAGNITUDE, sparsity=0.6, epochs=2, batch_size=64))
    result = stage.run(model, StageContext(data=digits, teacher=model))
    assert MAGNITUDE_NOTE in result.notes
    assert abs(result.details["achieved_sparsity"] - 0.6) <= 0.02
    path = tmp_path / "pruned.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert abs(kernel_sparsity(loaded) - 0.6) <= 0.02
    for v in prunable_kernels(loaded):
        w = keras.ops.convert_to_numpy(v)
        assert abs((w == 0).mean() - 0.6) <= 0.02, v.path


def test_channel_prune_stage_iterative(
    sequential_model: Callable[..., keras.Model], digits: TrainData
) -> None:
    model = sequential_model(num_classes=10)
    stage = PruneStage(
        PruneSection(method=PruneMethod.CHANNEL, sparsity=0.5, epochs=2, iterations=2, batch_size=64)
    )
    data = TrainData(digits.x_train[:128], digits.y_train[:128], digits.x_test, digits.y_test, 10)
    result = stage.run(model, StageContext(data=data, teacher=model))
    d = result.details
    assert d["params_after"] < d["params_before"] and d["macs_after"] < d["macs_before"]
    assert len(d["iterations"]) == 2
    assert result.model.get_layer("conv_b").filters == 6  # 12 -> 8 -> 6 of the original width
    assert result.model.output_shape == (None, 10)
    assert np.isfinite(result.model.predict(digits.x_test[:4], verbose=0)).all()


def test_iterative_schedule_reaches_target() -> None:
    steps = step_sparsities(0.75, 2)
    assert abs(steps[0] - 0.5) < 1e-12 and abs(steps[-1] - 0.75) < 1e-12
    assert split_epochs(5, 2) == [3, 2] and sum(split_epochs(1, 3)) == 1
