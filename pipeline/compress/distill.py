"""Knowledge distillation into a smaller student: the teacher's architecture at a width, or a model file.

Loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels), on logits
(the teacher's logits are computed once; a softmax teacher gives its exact pre-softmax values). A seeded
validation split drives EarlyStopping on accuracy with the best epoch restored. The student comes back as a
plain functional model in the teacher's output convention (softmax probabilities or logits).

A model that is not a classifier (`ctx.labels` other than "classes") distils on its outputs as they are:
Loss = alpha * MSE(teacher outputs) + (1 - alpha) * MSE(the task's target: y, the input for an autoencoder, or
the reference model's outputs), with early stopping on the validation loss; the temperature is not used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import keras

from pipeline.compress.base import Distillation, FitSpec, StageContext, StageResult, one_input
from pipeline.compress.training import (
    fit_classifier,
    fit_regression,
    is_softmax_output,
    predict_logits,
    predict_outputs,
    task_targets,
)
from pipeline.compress.width import scale_width
from pipeline.config import DistillSection
from pipeline.errors import ModelLoadError


def load_student(path: Path) -> keras.Model:
    """A student model file, loaded like the teacher: safe mode, legacy .h5 adapted, clear errors."""
    from pipeline.inputs.models import load_model

    model = load_model(path).keras_model
    if model is None:
        raise ModelLoadError(f"{path}: a student must be a Keras model (.keras or .h5), not a SavedModel")
    return model


class DistillStage:
    name = "distill"
    version = "3"

    def __init__(self, cfg: DistillSection, student_path: Path | None = None) -> None:
        """`student_path`: where `cfg.student` points when it is a file (resolved by the caller)."""
        self.cfg = cfg
        self.width: float | None = None
        self.student_path: Path | None = None
        if cfg.student.startswith("width:"):
            self.width = float(cfg.student.split(":", 1)[1])
        else:
            self.student_path = student_path if student_path is not None else Path(cfg.student)

    def config_dict(self) -> dict[str, Any]:
        data = self.cfg.model_dump(mode="json")
        if self.student_path is not None and self.student_path.is_file():
            data["student_sha256"] = hashlib.sha256(self.student_path.read_bytes()).hexdigest()
        return data

    def make_student(self, teacher: keras.Model) -> keras.Model:
        if self.width is not None:
            return scale_width(teacher, self.width)
        assert self.student_path is not None
        return load_student(self.student_path)

    def _spec(self, ctx: StageContext) -> FitSpec:
        cfg = self.cfg
        return FitSpec(cfg.epochs, cfg.learning_rate, cfg.batch_size, ctx.seed, cfg.validation_split, cfg.patience,
                       ctx.progress_callbacks("distill", cfg.epochs))

    def run(self, model: keras.Model, ctx: StageContext) -> StageResult:
        """Distil `model` (the teacher: the stage's input) into the configured student."""
        cfg = self.cfg
        keras.utils.set_random_seed(ctx.seed)
        student = self.make_student(model)
        if tuple(student.output_shape) != tuple(model.output_shape):
            raise ValueError(
                f"student output shape {student.output_shape} differs from the teacher's {model.output_shape}"
            )
        if ctx.labels != "classes":
            return self._regress(model, student, ctx)
        teacher_logits = predict_logits(model, one_input(ctx.data.x_train), batch_size=max(cfg.batch_size, 256))
        trained, history = fit_classifier(student, ctx.data, self._spec(ctx),
                                          Distillation(teacher_logits, cfg.alpha, cfg.temperature),
                                          softmax=is_softmax_output(model))
        val_acc = history.get("val_label_accuracy", [])
        best = max(val_acc) if val_acc else None
        details = {
            "student": cfg.student,
            "teacher_params": int(model.count_params()),
            "student_params": int(trained.count_params()),
            "epochs_run": len(history.get("loss", [])),
            "best_val_accuracy": best,
        }
        notes = (
            f"distilled into {cfg.student}: {details['student_params']} params "
            f"(teacher {details['teacher_params']})"
            + (f", best validation accuracy {best:.4f}" if best is not None else ""),
        )
        return StageResult(trained, notes, details)

    def _regress(self, teacher: keras.Model, student: keras.Model, ctx: StageContext) -> StageResult:
        """Distillation for a model that is not a classifier: MSE to the teacher's outputs and the task's target."""
        cfg = self.cfg
        x, target = task_targets(ctx.data, ctx.labels, ctx.teacher)
        teacher_outputs = predict_outputs(teacher, x, batch_size=max(cfg.batch_size, 256))
        trained, history = fit_regression(student, x, target, self._spec(ctx), Distillation(teacher_outputs, cfg.alpha))
        val_loss = history.get("val_loss", [])
        best = min(val_loss) if val_loss else None
        details = {
            "student": cfg.student,
            "teacher_params": int(teacher.count_params()),
            "student_params": int(trained.count_params()),
            "epochs_run": len(history.get("loss", [])),
            "best_val_accuracy": None,
            "best_val_loss": best,
        }
        notes = (
            f"distilled into {cfg.student} on the teacher's outputs (MSE): {details['student_params']} params "
            f"(teacher {details['teacher_params']})" + (f", best validation loss {best:.6g}" if best is not None else ""),
        )
        return StageResult(trained, notes, details)
