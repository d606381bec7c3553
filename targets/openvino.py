"""OpenVINO for Intel CPUs: convert the SavedModel, quantize the IR with NNCF, save .xml/.bin."""

from __future__ import annotations

from pathlib import Path

from calibration import CalibrationSet

from .base import ExportOptions, ExportResult, FloatModel, TargetName


class OpenVINOTarget:
    name = TargetName.OPENVINO
    version = "1"
    host_latency_note = None

    def export(self, model: FloatModel, calib: CalibrationSet, out_dir: Path, opts: ExportOptions) -> ExportResult:
        import nncf
        import openvino as ov

        out_dir.mkdir(parents=True, exist_ok=True)
        ov_model = ov.convert_model(str(model.saved_model_dir))
        ov_model.reshape([1, *model.input_shape])
        ov.save_model(ov_model, str(out_dir / "model_float.xml"), compress_to_fp16=False)
        dataset = nncf.Dataset(list(calib.batches(1)))
        quantized = nncf.quantize(ov_model, dataset, subset_size=len(calib))
        ov.save_model(quantized, str(out_dir / "model_int8.xml"), compress_to_fp16=False)
        return ExportResult(
            artifact="model_int8.xml",
            float_artifact="model_float.xml",
            precision="int8",
            files=("model_int8.xml", "model_int8.bin", "model_float.xml", "model_float.bin"),
            calibration=opts.calibration_method,
            versions={"openvino": ov.get_version().split("-")[0], "nncf": nncf.__version__},
        )
