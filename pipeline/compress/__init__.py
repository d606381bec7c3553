"""Compression stages: Keras model in, smaller Keras model out (distill, prune, decompose).

Stage modules load lazily (they pull in Keras/TensorFlow); `base` stays importable on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.compress.base import Stage
    from pipeline.config import Config


def build_stages(config: Config) -> list[Stage]:
    """The configured stages in their fixed order: distill, prune, decompose."""
    stages: list[Stage] = []
    if config.distill is not None:
        from pipeline.compress.distill import DistillStage

        student = config.distill.student
        path = None if student.startswith("width:") else config.resolve(student)
        stages.append(DistillStage(config.distill, student_path=path))
    if config.prune is not None:
        from pipeline.compress.prune import PruneStage

        stages.append(PruneStage(config.prune))
    if config.decompose is not None:
        from pipeline.compress.decompose import DecomposeStage

        stages.append(DecomposeStage(config.decompose))
    return stages
