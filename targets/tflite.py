"""LiteRT (TFLite) for ARM boards: full-integer int8 .tflite from the TFLite converter."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import numpy as np

from calibration import CalibrationSet

from .base import ExportOptions, ExportResult, FloatModel, TargetName


class TFLiteTarget:
    name = TargetName.TFLITE
    version = "1"
    host_latency_note = None

    def export(self, model: FloatModel, calib: CalibrationSet, out_dir: Path, opts: ExportOptions) -> ExportResult:
        import tensorflow as tf

        out_dir.mkdir(parents=True, exist_ok=True)
        float_conv = tf.lite.TFLiteConverter.from_saved_model(str(model.saved_model_dir))
        (out_dir / "model_float.tflite").write_bytes(float_conv.convert())

        conv = tf.lite.TFLiteConverter.from_saved_model(str(model.saved_model_dir))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative() -> Iterator[list[np.ndarray]]:
            for batch in calib.batches(1):
                yield [batch.astype(np.float32)]

        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        (out_dir / "model_int8.tflite").write_bytes(conv.convert())
        return ExportResult(
            artifact="model_int8.tflite",
            float_artifact="model_float.tflite",
            precision="int8",
            files=("model_int8.tflite", "model_float.tflite"),
            calibration=opts.calibration_method,
            versions={"tensorflow": tf.__version__, "ai-edge-litert": version("ai-edge-litert")},
        )
