from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from pipeline.compress.base import FitSpec, StageContext, TrainData
from pipeline.compress.distill import DistillStage
from pipeline.compress.training import fit_classifier, is_softmax_output
from pipeline.config import DistillSection


def _accuracy(model: keras.Model, data: TrainData) -> float:
    return float((model.predict(data.x_test, verbose=0).argmax(-1) == data.y_test).mean())


def test_distill_width_student_learns_and_saves(
    residual_model: Callable[..., keras.Model], digits: TrainData, tmp_path: Path
) -> None:
    teacher = residual_model(num_classes=10, channels=1, bn_momentum=0.5)
    teacher, _ = fit_classifier(teacher, digits, FitSpec(epochs=4, learning_rate=5e-3, batch_size=32))
    assert is_softmax_output(teacher)
    cfg = DistillSection(student="width:0.75", epochs=3, learning_rate=1e-2, batch_size=16, patience=2)
    stage = DistillStage(cfg)
    result = stage.run(teacher, StageContext(data=digits, teacher=teacher, seed=0))
    student = result.model
    assert student.count_params() < teacher.count_params()
    assert is_softmax_output(student)
    acc = _accuracy(student, digits)
    assert acc > 0.35, f"student accuracy {acc:.3f} (chance 0.1)"
    assert result.details["epochs_run"] >= 1 and result.details["best_val_accuracy"] is not None
    path = tmp_path / "student.keras"
    student.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(digits.x_test[:8], verbose=0), student.predict(digits.x_test[:8], verbose=0), atol=1e-6
    )


def test_distill_student_from_file_takes_teacher_convention(
    sequential_model: Callable[..., keras.Model],
    residual_model: Callable[..., keras.Model],
    digits: TrainData,
    tmp_path: Path,
) -> None:
    teacher = sequential_model(num_classes=10)  # logits
    student_file = tmp_path / "student.keras"
    residual_model(num_classes=10, channels=1).save(student_file)  # softmax
    cfg = DistillSection(student=str(student_file), epochs=1, batch_size=64)
    stage = DistillStage(cfg, student_path=student_file)
    assert "student_sha256" in stage.config_dict()
    small = TrainData(digits.x_train[:96], digits.y_train[:96], digits.x_test, digits.y_test, 10)
    result = stage.run(teacher, StageContext(data=small, teacher=teacher, seed=0))
    assert not is_softmax_output(result.model)
    out = result.model.predict(digits.x_test[:4], verbose=0)
    assert out.shape == (4, 10) and not np.allclose(out.sum(-1), 1.0)
