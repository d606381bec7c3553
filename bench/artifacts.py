"""Artifacts per model and target: edgepipe's float twin and int8 export, and the toolkit's default int8.

edgepipe's exports go through `pipeline.export.export_target` (a child process per conversion, cached by
content hash), exactly as `edgepipe build` runs them; the defaults through bench/baselines.py.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np

from calibration import CalibrationSet, SamplingMethod
from pipeline.cache import Cache, cache_key
from pipeline.quantize.export import ExportRequest, export_target
from pipeline.ui import UI
from targets import ExportOptions, FloatModel

from . import baselines
from .models import BenchModel

TARGETS = ("tflite", "openvino", "tensorrt")
CALIBRATION_SAMPLES = 32


@dataclass
class Prepared:
    model: BenchModel
    macs: int
    params: int
    artifacts: dict[str, dict[str, Path]] = field(default_factory=dict)  # target -> float/int8/default
    export_s: dict[str, dict[str, float]] = field(default_factory=dict)  # target -> edgepipe/default seconds
    errors: dict[str, str] = field(default_factory=dict)


def _model_id(bm: BenchModel, km: object) -> str:
    h = hashlib.sha256(f"bench|{bm.key}|".encode())
    h.update(json.dumps(km.get_config(), sort_keys=True, default=str).encode())  # type: ignore[attr-defined]
    for w in km.get_weights():  # type: ignore[attr-defined]
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _calibration(bm: BenchModel) -> CalibrationSet:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (CALIBRATION_SAMPLES, *bm.input_shape)).astype(np.float32)
    return CalibrationSet(x, "bench:uniform(-1,1)", SamplingMethod.RANDOM, 0)


def _versions(target: str) -> list[str]:
    dists = {"tflite": ["tensorflow-cpu"], "openvino": ["openvino", "nncf"], "tensorrt": ["onnxruntime"]}[target]
    return [f"{d}=={version(d)}" for d in dists]


def _default_int8(target: str, source: Path, model_id: str, calib: CalibrationSet, cache: Cache) -> tuple[Path, float]:
    key = cache_key("bench-default-int8", target, baselines.BASELINE_VERSION, model_id, calib.fingerprint(),
                    _versions(target))
    hit = cache.get(key)
    if hit is not None:
        return hit / baselines.ARTIFACT[target], 0.0
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-default-") as tmp:
        t0 = time.perf_counter()
        baselines.convert_in_child(target, source, calib.samples, Path(tmp) / "out")
        seconds = time.perf_counter() - t0
        entry = cache.put(key, Path(tmp) / "out")
    return entry / baselines.ARTIFACT[target], seconds


def prepare(bm: BenchModel, work: Path, cache: Cache, log: UI, targets: tuple[str, ...] = TARGETS) -> Prepared:
    import keras

    from pipeline.compress.cost import count_macs

    keras.utils.set_random_seed(0)
    km = bm.build()
    folder = work / bm.key
    folder.mkdir(parents=True, exist_ok=True)
    km.save(folder / "model.keras")
    km.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    prep = Prepared(bm, count_macs(km), int(km.count_params()))
    fm = FloatModel(folder / "saved_model", folder / "model.keras", bm.input_shape)
    model_id, calib = _model_id(bm, km), _calibration(bm)
    quiet = UI(quiet=True)
    for target in targets:
        log.info(f"  {bm.key}: {target} export (edgepipe) and default int8")
        try:
            t0 = time.perf_counter()
            exp = export_target(ExportRequest(target, fm, model_id, calib, cache, quiet), ExportOptions())
            ep_s = 0.0 if exp.cached else time.perf_counter() - t0
            assert exp.result.float_artifact is not None
            source = fm.saved_model_dir if target != "tensorrt" else exp.folder / exp.result.float_artifact
            default, default_s = _default_int8(target, source, model_id, calib, cache)
        except Exception as err:  # one target's failure is a row that says so, not a lost run
            prep.errors[target] = f"{type(err).__name__}: {err}"
            log.warn(f"{bm.key}: {target}: {prep.errors[target]}")
            continue
        prep.artifacts[target] = {"float": exp.folder / exp.result.float_artifact,
                                  "int8": exp.folder / exp.result.artifact, "default": default}
        prep.export_s[target] = {"edgepipe": ep_s, "default": default_s}
    return prep
