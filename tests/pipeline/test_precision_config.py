"""[targets.X] precision: validated against the target registry (exit 2, one line), built and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main


def _config(path: Path, model: Path, data: Path, precisions: dict[str, str], budget: str = "") -> Path:
    tables = "\n".join(f'[targets.{t}]\niterations = 20\nwarmup = 2\nprecision = "{p}"' for t, p in precisions.items())
    path.write_text(f'[model]\npath = "{model}"\n\n[data]\npath = "{data}"\nscale = 16.0\n\n'
                    f"[quantize]\ncalibration_samples = 100\n\n{budget}\n{tables}\n")
    return path


@pytest.mark.parametrize(("target", "precision", "expected"), [
    ("openvino", "int16x8", "openvino has no int16x8 ("),
    ("tensorrt", "int16x8", "tensorrt has no int16x8 (TensorRT's Q/DQ layers take int8"),
    ("tflite", "int4", "targets.tflite.precision: Input should be 'int8', 'int16x8', 'fp16', 'float' or 'auto'"),
])
def test_a_precision_the_target_lacks_is_one_line_exit_2(tmp_path: Path, target: str, precision: str, expected: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path / "c.toml", tmp_path / "m.keras", tmp_path / "d.npz", {target: precision})
    rc = main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    if "has no" in expected:
        assert err.strip().endswith("it supports int8, fp16, float")
    assert not (tmp_path / "run").exists()


def test_build_ships_and_reports_the_configured_precisions(trained_cnn: Path, digits_npz: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    precisions = {"tflite": "int16x8", "openvino": "fp16", "tensorrt": "fp16"}
    cfg = _config(tmp_path / "c.toml", trained_cnn, digits_npz, precisions, "[budget]\nmax_accuracy_drop = 0.01\n")
    rc = main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    artifacts = {"tflite": "tflite/model_int16x8.tflite", "openvino": "openvino/model_fp16.xml",
                 "tensorrt": "tensorrt/model_fp16.onnx"}
    for name, t in report["targets"].items():
        print(f"{name} {t['precision']}: accuracy {t['accuracy']:.4f} drop {t['accuracy_drop']:+.4f} "
              f"size {t['size_bytes']} B median {t['latency_ms']['median']:.3f} ms")
        assert t["precision"] == precisions[name] and t["artifact"] == artifacts[name]
        assert (tmp_path / "run" / t["artifact"]).is_file() and t["passed"]
        assert "attempts" not in t  # the accuracy-aware ladder is int8's
        assert t["calibration"] == ("minmax" if name == "tflite" else "none")


def test_kept_precision_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[targets.X] kept_precision: cheapest | int16 | float; anything else is exit 2 with one line."""
    from pipeline.config import TargetSection
    from targets.base import KeptPrecision

    assert TargetSection().kept_precision is KeptPrecision.CHEAPEST
    assert TargetSection(kept_precision="int16").kept_precision is KeptPrecision.INT16  # type: ignore[arg-type]
    cfg = _config(tmp_path / "c.toml", tmp_path / "m.keras", tmp_path / "d.npz", {"tflite": "int8"})
    cfg.write_text(cfg.read_text() + 'kept_precision = "fp16"\n')
    rc = main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "kept_precision" in err and "'cheapest', 'int16' or 'float'" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
