"""MobileNetV2 1.0 @224's LiteRT int8 latency as two benchmark files prepare the model, on one host, in one run.

BENCHMARKS.md (`python -m bench`) and BENCHMARKS-litert-quantizer.md (`python -m bench.quantizer_vs_converter`)
time the same architecture and seed but prepare it differently:
- "bench.artifacts": keras.applications.MobileNetV2(weights=None) as built, Keras' initial BatchNormalization
  statistics, softmax output (bench/artifacts.py, what BENCHMARKS.md times);
- "quantizer_vs_converter": the softmax removed and each BatchNormalization's statistics set by one
  training-mode pass over 16 uniform(-1, 1) inputs (bench/quantizer_vs_converter.py's `_export`).
and convert it differently: BENCHMARKS.md's artifacts come from edgepipe's tflite target (`export_target`), the
quantizer file's "float" and "converter int8" rows from TFLiteConverter and targets/tflite.py's
`calibrated_model` + `quantize` called directly. Here both preparations are exported by `export_target`, and
the second is also converted the quantizer file's way ("own conversion"), all with bench/artifacts.py's 32
calibration samples of uniform(-1, 1); the six artifacts (float and int8 of each) are timed interleaved in one
child process (bench/measure.py), so host, load and versions are the same for all. Per int8 artifact it also
reports the smallest activation scale the calibration gave (a model whose activations collapse towards 0 gets
tiny scales).

    python -m bench.litert_across_files [--rounds 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from calibration import CalibrationSet, SamplingMethod
from pipeline.cache import Cache
from pipeline.quantize.export import ExportRequest, export_target
from pipeline.ui import UI
from targets import ExportOptions, FloatModel

from .artifacts import CALIBRATION_SAMPLES
from .measure import Timing, median_ms, ratio, run_child
from .models import MODELS, mobilenet_v2
from .pipeline_floor import host_kind
from .quantizer_vs_converter import _calibration as qvc_calibration
from .quantizer_vs_converter import _export as qvc_export
from .system import machine, versions

SHAPE = (224, 224, 3)
PREPARATIONS = ("bench.artifacts", "quantizer_vs_converter")
OWN = "quantizer_vs_converter, own conversion"
ROWS = (*PREPARATIONS, OWN)


def _model(preparation: str):  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(0)
    km = mobilenet_v2(1.0, SHAPE[0])
    if preparation == "quantizer_vs_converter":  # bench/quantizer_vs_converter.py's _export, step for step
        km.layers[-1].activation = keras.activations.linear
        for layer in km.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.0
        km(np.random.default_rng(2).uniform(-1, 1, (16, *SHAPE)).astype(np.float32), training=True)
    return km


def _export(preparation: str, work: Path, cache: Cache) -> tuple[Path, Path]:
    km = _model(preparation)
    folder = work / preparation
    folder.mkdir(parents=True)
    km.save(folder / "model.keras")
    km.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    h = hashlib.sha256(f"bench-across|{preparation}|".encode())
    for w in km.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    x = np.random.default_rng(0).uniform(-1.0, 1.0, (CALIBRATION_SAMPLES, *SHAPE)).astype(np.float32)
    calib = CalibrationSet(x, "bench:uniform(-1,1)", SamplingMethod.RANDOM, 0)
    fm = FloatModel(folder / "saved_model", folder / "model.keras", SHAPE)
    exp = export_target(ExportRequest("tflite", fm, h.hexdigest(), calib, cache, UI(quiet=True)), ExportOptions())
    assert exp.result.float_artifact is not None
    return exp.folder / exp.result.float_artifact, exp.folder / exp.result.artifact


def _own_conversion(work: Path) -> tuple[Path, Path]:
    """bench/quantizer_vs_converter.py's "float" and "converter int8" artifacts, built as it builds them."""
    from targets import tflite

    bm = next(m for m in MODELS if m.key == "mobilenetv2-1.0-224")
    work.mkdir(parents=True)
    model, float_tflite, _ = qvc_export(bm, work)
    calib = qvc_calibration(bm)
    own = CalibrationSet(calib.samples, f"{calib.source}|{()}", calib.sampling, calib.seed)
    (work / "float.tflite").write_bytes(float_tflite)
    (work / "int8.tflite").write_bytes(tflite.quantize(tflite.calibrated_model(model, own, "minmax"), ()))
    return work / "float.tflite", work / "int8.tflite"


def _smallest_scale(path: Path) -> float:
    """The smallest non-zero per-tensor scale among the int8 model's int8 activation tensors."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    scales = [d["quantization"][0] for d in interp.get_tensor_details()
              if d["dtype"] == np.int8 and len(d["shape"]) == 4 and d["quantization"][0] > 0]
    return float(min(scales)) if scales else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.litert_across_files", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-across-") as tmp:
        cache = Cache()
        for prep in PREPARATIONS:
            print(f"{prep}: building and exporting", flush=True)
            paths[f"{prep} float"], paths[f"{prep} int8"] = _export(prep, Path(tmp), cache)
        print(f"{OWN}: building and converting", flush=True)
        paths[f"{OWN} float"], paths[f"{OWN} int8"] = _own_conversion(Path(tmp) / "own")
        lat = run_child(paths, SHAPE, a.threads, Timing(rounds=a.rounds))
        scales = {row: _smallest_scale(paths[f"{row} int8"]) for row in ROWS}
    m, v = machine(), versions()
    lines = ["# MobileNetV2 1.0 @224 on LiteRT: the two benchmark files' model preparations side by side", "",
             f"`python -m bench.litert_across_files --rounds {a.rounds} --threads {a.threads}` on "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}: {m.cpu}, {m.cores} cores, host kind {host_kind()}; "
             f"1-minute load average {load0:.1f} -> {os.getloadavg()[0]:.1f}; run time "
             f"{(time.perf_counter() - t0) / 60:.1f} min.",
             "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), "",
             "| preparation | float ms | int8 ms | float / int8 | smallest int8 activation scale |",
             "|---|---|---|---|---|"]
    for row in ROWS:
        r = ratio(lat, f"{row} float", f"{row} int8")
        lines.append(f"| {row} | {median_ms(lat, f'{row} float'):.2f} | {median_ms(lat, f'{row} int8'):.2f} | "
                     f"{r[0]:.2f}x [{r[1]:.2f}-{r[2]:.2f}] | {scales[row]:.3g} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
