"""Per-layer quantization sensitivity of a target: one algorithm for every backend
(calibration.sensitivity.sensitivity_table: each picked layer quantized alone, the SQNR of its output and the
task's metric with only it quantized, most sensitive first). What differs per backend sits behind a small
interface, the LayerProbe its `Target.probe` returns: which layers, how to quantize one alone, its SQNR, and
the runtime session a model is evaluated in (`RuntimeProbe.session`). Runs in the worker's child process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calibration import CalibrationSet
from calibration.sensitivity import SAMPLES, sensitivity_table

from . import runner
from .base import ExportOptions, FloatModel

if TYPE_CHECKING:
    from .base import Target


@dataclass(frozen=True)
class SensitivityRequest:
    """What a target's per-layer sensitivity is measured on: the float model, its calibration set, a folder for
    the backend's scratch files, the evaluation samples, the export options of the artifact in question and
    the task's metric (a runner_metrics spec) with its direction."""

    model: FloatModel
    calib: CalibrationSet
    out_dir: Path
    eval_x: np.ndarray
    eval_y: np.ndarray
    opts: ExportOptions = field(default_factory=ExportOptions)
    metric: str = "accuracy"
    higher_is_better: bool = True


class RuntimeProbe:
    """What every backend's LayerProbe shares: its request, the calibration samples the per-layer SQNR is
    computed on, and the metric of a model with one layer quantized, evaluated by the runner (as every value
    edgepipe reports) in the session the backend opens on it."""

    def __init__(self, req: SensitivityRequest) -> None:
        self.req = req
        self.small = req.calib.head(SAMPLES)

    # the backend's part (calibration.sensitivity.LayerProbe, less accuracy):
    def candidates(self) -> list[str]:
        raise NotImplementedError

    def quantized_alone(self, layer: str) -> Any | None:
        raise NotImplementedError

    def sqnr(self, layer: str, model: Any) -> float | None:
        raise NotImplementedError

    def session(self, model: Any) -> runner.Session:
        """The backend's runtime session on a model `quantized_alone` gave (one thread)."""
        raise NotImplementedError

    def accuracy(self, model: Any) -> float:
        return runner.evaluate(self.session(model), self.req.eval_x, self.req.eval_y, self.req.metric)


def sensitivity(target: Target, req: SensitivityRequest) -> list[dict[str, Any]]:
    """Per-layer sensitivity, most sensitive first: [{"layer", "sqnr_db", "accuracy"}], where "layer" is a name
    ExportOptions.float_layers accepts, "sqnr_db" the SQNR of that layer's output with only it quantized and
    "accuracy" the task's metric on the evaluation samples with only it quantized."""
    return sensitivity_table(target.probe(req), higher_is_better=req.higher_is_better)
