"""Where calibration samples come from: the training split (default), or unlabeled samples the user
provides (`[quantize] calibration_data`: an npz with `x`, or a folder of images), preprocessed like the
training data. Sampling itself lives in the framework-free calibration package."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from calibration import CalibrationSet, SamplingMethod, make_calibration_set
from pipeline.compress.base import TrainData
from pipeline.config import Config
from pipeline.errors import DataError
from pipeline.inputs.data import IMAGE_SUFFIXES, Preprocess


def _images(folder: Path, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images for calibration")
    if len(shape) != 3:
        raise DataError(f"{folder}: image calibration data needs a model with an image input (H, W, C)")
    h, w, c = shape
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                px = im.convert("L" if c == 1 else "RGB").resize((w, h))
                out.append(np.asarray(px, np.float32).reshape(h, w, c))
        except (OSError, ValueError) as err:
            raise DataError(f"{f}: not a readable image ({err})") from None
    return np.stack(out)


def _npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            key = "x" if "x" in data.files else ("x_train" if "x_train" in data.files else None)
            if key is None:
                raise DataError(f"{path}: calibration npz needs an array named x")
            return np.asarray(data[key])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None


def load_unlabeled(path: Path, pre: Preprocess, shape: tuple[int, ...]) -> np.ndarray:
    """Unlabeled samples, checked against the model input and preprocessed."""
    if not path.exists():
        raise DataError(f"{path}: calibration data not found")
    x = _images(path, shape) if path.is_dir() else _npz(path)
    if x.dtype.kind not in "fiub" or x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{path}: calibration data must be a non-empty numeric array")
    if x.ndim == len(shape):
        x = x[..., None]
    if tuple(x.shape[1:]) != tuple(shape):
        raise DataError(f"{path}: calibration samples of shape {x.shape[1:]} do not fit the model input {shape}")
    x = pre(x)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: calibration data contains NaN or inf")
    return x


def calibration_set(config: Config, data: TrainData, pre: Preprocess, shape: tuple[int, ...],
                    class_labels: bool = True) -> CalibrationSet:
    """`class_labels`: y_train holds class ids, so the default sampling can stratify by them."""
    q = config.quantize
    sampling = SamplingMethod(q.sampling.value) if q.sampling is not None else None
    if q.calibration_data is None:
        return make_calibration_set(data.x_train, data.y_train if class_labels else None, q.calibration_samples,
                                    seed=q.seed, source="train split", sampling=sampling)
    path = config.resolve(q.calibration_data)
    if isinstance(data.x_train, dict):
        raise DataError(f"{path}: [quantize] calibration_data with several model inputs: calibrate from the training "
                        "split (remove calibration_data), which covers every input")
    if sampling is SamplingMethod.STRATIFIED:
        raise DataError(f"{path}: unlabeled calibration data cannot be sampled stratified; use sampling = \"random\"")
    x = load_unlabeled(path, pre, shape)
    return make_calibration_set(x, None, q.calibration_samples, seed=q.seed, source=str(path), sampling=sampling)
