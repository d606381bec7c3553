"""Calibration from unlabeled samples the user provides (npz or image folder), not the training split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config

from pipeline.cli import main
from pipeline.errors import DataError
from pipeline.inputs.calib_source import load_unlabeled
from pipeline.inputs.data import Preprocess


def test_unlabeled_npz_and_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    np.savez(tmp_path / "c.npz", x=np.full((5, 8, 8), 16.0))
    x = load_unlabeled(tmp_path / "c.npz", Preprocess(16.0), (8, 8, 1))
    assert x.shape == (5, 8, 8, 1) and np.allclose(x, 1.0)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((10, 12), 255, np.uint8)).save(tmp_path / "imgs" / "sub" / f"{i}.png")
    x = load_unlabeled(tmp_path / "imgs", Preprocess(255.0), (8, 8, 1))
    assert x.shape == (3, 8, 8, 1) and np.allclose(x, 1.0)
    np.savez(tmp_path / "bad.npz", x=np.ones((5, 7, 8)))
    with pytest.raises(DataError, match="do not fit the model input"):
        load_unlabeled(tmp_path / "bad.npz", Preprocess(), (8, 8, 1))


def test_build_calibrates_on_the_given_samples(trained_cnn: Path, digits_npz: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with np.load(digits_npz) as d:
        np.savez(tmp_path / "unlabeled.npz", x=d["x_train"][:100])
    extra = '[quantize]\ncalibration_samples = 64\ncalibration_data = "unlabeled.npz"\n'
    cfg = write_config(tmp_path / "c.toml", trained_cnn, digits_npz, targets=("tflite",))
    cfg.write_text(cfg.read_text().replace("[quantize]\ncalibration_samples = 200\n", extra))
    rc = main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert rc in (0, 1), err
    assert report["calibration"]["source"].endswith("unlabeled.npz")
    assert report["calibration"]["samples"] == 64 and report["calibration"]["sampling"] == "random"
    # calibrated on those samples, the int8 model still does what the float model does
    assert report["targets"]["tflite"]["accuracy_drop"] <= 0.05, (report["targets"]["tflite"]["accuracy"],
                                                                  report["reference"]["accuracy"])
