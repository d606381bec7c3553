"""The accuracy-aware ladder's last step on tflite: the most sensitive layers kept out of int8 as
`[targets.tflite] kept_precision` says (16x8 by scope or float), written into report.json and report.html."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main

OUTLIER = 1000.0


def _outlier_model(trained: Path, dest: Path) -> Path:
    """One more channel out of the last conv, constant OUTLIER (zero kernel, bias OUTLIER) and unused by the
    Dense (zero weights): the float function is unchanged, but that channel sets the int8 range of the conv,
    the pooling and the Dense input, so every other channel rounds to a few levels; no calibration method or
    equalization helps, 16-bit activations do."""
    import keras

    model = keras.saving.load_model(trained)
    conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-1]
    dense = model.layers[-1]
    kernel, bias = conv.get_weights()
    kernel[..., 0], bias[0] = 0.0, OUTLIER
    conv.set_weights([kernel, bias])
    w, b = dense.get_weights()
    w[0, :] = 0.0  # before: the channel's contribution; now nothing reads it
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
        print(a["calibration"], a["cross_layer_equalization"], a["float_layers"], a["int16_layers"], a["accuracy"])
    plain, kept_out = t["attempts"][0], [a for a in t["attempts"] if a["float_layers"] or a["int16_layers"]]
    assert len(kept_out) >= 2, "the ladder's last step: one more layer at a time"
    kinds = tflite_quantizer.op_kinds((tmp_path / "run" / "tflite" / "model_float.tflite").read_bytes())
    for a in kept_out:
        if kept == "int16":  # every op here has a 16x8 kernel
            assert a["int16_layers"] and not a["float_layers"]
        else:
            assert all(kinds[n] in tflite_quantizer.FAST_16X8_OPS for n in a["int16_layers"])
            assert all(kinds[n] not in tflite_quantizer.FAST_16X8_OPS for n in a["float_layers"])
    best = max(kept_out, key=lambda a: a["accuracy"])
    assert best["accuracy"] > plain["accuracy"] + 0.1, "keeping the pooled outlier out of int8 recovers accuracy"
    assert t["accuracy"] == max(a["accuracy"] for a in t["attempts"])
    shipped = next(a for a in t["attempts"] if a["accuracy"] == t["accuracy"])
    assert (t["int16_layers"], t["float_layers"]) == (shipped["int16_layers"], shipped["float_layers"])
    types = tflite_quantizer.layer_types((tmp_path / "run" / t["artifact"]).read_bytes())
    assert all(types[n] == "int16" for n in t["int16_layers"]) and all(types[n] == "float32" for n in t["float_layers"])
    assert "kept 16x8" in (tmp_path / "run" / "report.html").read_text()
