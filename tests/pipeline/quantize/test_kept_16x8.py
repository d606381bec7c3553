"""The accuracy-aware ladder's last step on tflite: the most sensitive layers kept out of int8 as
`[targets.tflite] kept_precision` says (16x8 by scope or float), written into report.json and report.html."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runtimes import accuracy, eval_set

from pipeline.cli import main

OUTLIER = 3000.0


def _outlier_model(trained: Path, dest: Path) -> Path:
    """Channel 0 of the last conv replaced by a constant OUTLIER (zero kernel, bias OUTLIER) that the Dense
    ignores (zero weights): the float model loses one of its channels, and that constant sets the int8 range
    of the conv, the pooling and the Dense input, so every other channel rounds to a level or two. No
    calibration method or equalization helps; 16-bit activations (or float) on that path do."""
    import keras

    model = keras.saving.load_model(trained)
    conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-1]
    dense = model.layers[-1]
    kernel, bias = conv.get_weights()
    kernel[..., 0], bias[0] = 0.0, OUTLIER
    conv.set_weights([kernel, bias])
    w, b = dense.get_weights()
    w[0, :] = 0.0
    dense.set_weights([w, b])
    model.save(dest)
    return dest


def _build(tmp: Path, model: Path, data: Path, kept: str, capsys: pytest.CaptureFixture[str]) -> dict:
    cfg = tmp / "c.toml"
    cfg.write_text(f'[model]\npath = "{model}"\n\n[data]\npath = "{data}"\nscale = 16.0\n\n'
                   '[quantize]\ncalibration_samples = 64\n\n[budget]\nmax_accuracy_drop = 0.0\n\n'
                   f'[targets.tflite]\niterations = 5\nwarmup = 1\nkept_precision = "{kept}"\n')
    main(["--quiet", "build", str(cfg), "--out", str(tmp / "run")])
    capsys.readouterr()
    return dict(json.loads((tmp / "run" / "report.json").read_text())["targets"]["tflite"])


@pytest.mark.slow
@pytest.mark.parametrize("kept", ["int16", "cheapest"])
def test_ladder_keeps_sensitive_layers_out_of_int8(trained_cnn: Path, digits_npz: Path, tmp_path: Path, kept: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from targets import tflite_quantizer

    t = _build(tmp_path, _outlier_model(trained_cnn, tmp_path / "outlier.keras"), digits_npz, kept, capsys)
    for a in t["attempts"]:  # shown with -s
        print(a["calibration"], a["equalization"], a["float_layers"], a["int16_layers"], a["accuracy"])
    kept_out = [a for a in t["attempts"] if a["float_layers"] or a["int16_layers"]]
    assert len(kept_out) >= 2, "the ladder's last step: one more layer at a time"
    kinds = tflite_quantizer.op_kinds((tmp_path / "run" / "tflite" / "model_float.tflite").read_bytes())
    for a in kept_out:
        if kept == "int16":  # every op here has a 16x8 kernel
            assert a["int16_layers"] and not a["float_layers"]
        else:
            assert all(kinds[n] in tflite_quantizer.FAST_16X8_OPS for n in a["int16_layers"])
            assert all(kinds[n] not in tflite_quantizer.FAST_16X8_OPS for n in a["float_layers"])
    passing = [a for a in t["attempts"] if a["passed"]]  # what ships: the first that passed, else the most accurate
    shipped = passing[0] if passing else max(t["attempts"], key=lambda a: a["accuracy"])
    assert t["selection"]["validation_value"] == shipped["accuracy"]  # the attempts are judged on validation
    assert (t["int16_layers"], t["float_layers"]) == (shipped["int16_layers"], shipped["float_layers"])
    x, y = eval_set(tmp_path / "run" / "data" / "eval.npz")
    assert t["accuracy"] == accuracy(tmp_path / "run" / t["artifact"], x, y)  # the test split, LiteRT by hand
    types = tflite_quantizer.layer_types((tmp_path / "run" / t["artifact"]).read_bytes())
    assert all(types[n] == "int16" for n in t["int16_layers"]) and all(types[n] == "float32" for n in t["float_layers"])
    assert "kept 16x8" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.parametrize("kept", ["int16", "cheapest"])
def test_keeping_the_outlier_path_out_of_int8_recovers_accuracy(trained_cnn: Path, digits_npz: Path, tmp_path: Path,
                                                                 kept: str) -> None:
    """The outlier's path (last conv, pooling, Dense) kept out of int8, measured in LiteRT, against plain int8."""
    import keras
    import numpy as np

    from calibration import CalibrationSet, SamplingMethod
    from targets import ExportOptions, FloatModel, get_target, runner, tflite_quantizer
    from targets.base import KeptPrecision

    model = _outlier_model(trained_cnn, tmp_path / "outlier.keras")
    keras.saving.load_model(model).export(str(tmp_path / "sm"), verbose=False)
    with np.load(digits_npz) as d:
        x_tr, x, y = d["x_train"][..., None] / 16.0, (d["x_test"][..., None] / 16.0).astype(np.float32), d["y_test"]
    calib, fm = CalibrationSet(x_tr[:64].astype(np.float32), "digits", SamplingMethod.RANDOM, 0), FloatModel(
        tmp_path / "sm", model, (8, 8, 1))
    target = get_target("tflite")
    plain = target.export(fm, calib, tmp_path / "plain", ExportOptions())
    kinds = list(tflite_quantizer.op_kinds((tmp_path / "plain" / "model_float.tflite").read_bytes()).items())
    path = ([n for n, k in kinds if k == "CONV_2D"][-1], next(n for n, k in kinds if k == "MEAN"),
            next(n for n, k in kinds if k == "FULLY_CONNECTED"))
    result = target.export(fm, calib, tmp_path / "kept", ExportOptions(float_layers=path,
                                                                         kept_precision=KeptPrecision(kept)))
    assert set(result.int16_layers) == (set(path) if kept == "int16" else {path[2]})

    def accuracy(p: Path) -> float:
        return runner.evaluate(runner.open_session(p).exact(), x, y, "accuracy")

    got, before = accuracy(tmp_path / "kept" / result.artifact), accuracy(tmp_path / "plain" / plain.artifact)
    reference = accuracy(tmp_path / "plain" / "model_float.tflite")
    print(f"{kept}: plain int8 {before:.4f}, kept {got:.4f}, float {reference:.4f}")
    assert before < reference - 0.1 and got >= reference - 0.02, (before, got, reference)
