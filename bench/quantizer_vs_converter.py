"""LiteRT Quantizer (litert-quantizer) against the TFLite converter's built-in PTQ, on the bench models.

Per model (bench/models.py, seeded random weights, the final softmax removed so the outputs are logits: a
random-weight softmax is near uniform and int8 rounds it to a few levels; each BatchNormalization's statistics
set by one training-mode pass over 16 other uniform(-1, 1) inputs, since with Keras' initial statistics the
random MobileNetV2's logits are ~1e-11 and the converter's int8 output rounds them all to 0), from the same SavedModel and the
same 32 calibration samples (uniform(-1, 1), bench/artifacts.py's set):
- converter int8: what edgepipe ships (targets/tflite.py: calibrate-only conversion, then the MLIR quantizer);
- LiteRT Quantizer int8: the float .tflite, its static_wi8_ai8 recipe, its own min-max calibration;
- keeping two layers out of int8 (the first conv and the last fully-connected layer here), three ways:
  converter with both in float (denylisted_nodes, kept_precision float); LiteRT Quantizer with both 16x8 by
  scope (kept_precision int16); edgepipe's tflite export with kept_precision cheapest (the default: the
  fully-connected layer 16x8 by scope, the conv in float, ranges from the converter's calibration).
Agreement with the float .tflite on 100 other uniform(-1, 1) inputs (top-1 agreement of the logits,
SQNR of the logits in dB), each artifact run in LiteRT; median latency at one thread, every artifact of a model
timed interleaved in one child process (bench/measure.py), ratios against converter int8 from the same rounds;
conversion seconds (SavedModel -> artifact, calibration included, one process, sequential).

    python -m bench.quantizer_vs_converter [--quick] [--out BENCHMARKS-litert-quantizer.md]

--out keeps the file's hand-written '## Reading' section (and what follows it) below the new tables.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np

from calibration import CalibrationSet, SamplingMethod
from calibration.sensitivity import sqnr_db
from targets import FloatModel, runner, tflite, tflite_quantizer
from targets.base import KeptPrecision

from .artifacts import CALIBRATION_SAMPLES
from .measure import Timing, median_ms, ratio, run_child
from .models import BenchModel, selected
from .pipeline_floor import host_kind
from .system import machine, versions

EVAL_SAMPLES = 100
READING = "\n## Reading"
ROUTES = ("float", "conv_int8", "lrtq_int8", "conv_kept_float", "lrtq_kept_16x8", "kept_cheapest")
TITLES = {"float": "float", "conv_int8": "converter int8", "lrtq_int8": "LiteRT Quantizer int8",
          "conv_kept_float": "converter int8, conv + FC float", "lrtq_kept_16x8": "LiteRT Quantizer int8, conv + FC 16x8",
          "kept_cheapest": "edgepipe cheapest: FC 16x8, conv float"}


def _calibration(bm: BenchModel) -> CalibrationSet:
    """bench/artifacts.py's calibration set: CALIBRATION_SAMPLES of uniform(-1, 1), seed 0."""
    x = np.random.default_rng(0).uniform(-1.0, 1.0, (CALIBRATION_SAMPLES, *bm.input_shape)).astype(np.float32)
    return CalibrationSet(x, "bench:uniform(-1,1)", SamplingMethod.RANDOM, 0)


def _export(bm: BenchModel, work: Path) -> tuple[FloatModel, bytes, float]:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    km = bm.build()
    km.layers[-1].activation = keras.activations.linear  # logits
    for layer in km.layers:  # BN statistics from data, so activations keep a trained net's unit scale
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    km(np.random.default_rng(2).uniform(-1, 1, (16, *bm.input_shape)).astype(np.float32), training=True)
    km.export(str(work / "sm"), verbose=False)
    t0 = time.perf_counter()
    float_tflite = bytes(tf.lite.TFLiteConverter.from_saved_model(str(work / "sm")).convert())
    return FloatModel(work / "sm", None, bm.input_shape), float_tflite, time.perf_counter() - t0


def _kept(float_tflite: bytes) -> tuple[str, ...]:
    kinds = list(tflite_quantizer.op_kinds(float_tflite).items())
    first = next(n for n, k in kinds if k == "CONV_2D")
    last = next(n for n, k in reversed(kinds) if k == "FULLY_CONNECTED")
    return first, last


def _timed(fn: Callable[[], bytes]) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _builds(model: FloatModel, float_tflite: bytes, float_s: float,
            calib: CalibrationSet) -> dict[str, tuple[bytes, float]]:
    """Every route's artifact and seconds from the SavedModel (the float conversion counted where a route needs it)."""
    kept = _kept(float_tflite)

    def converter(layers: tuple[str, ...]) -> bytes:  # its own source name: no calibration memo reused
        own = CalibrationSet(calib.samples, f"{calib.source}|{layers}", calib.sampling, calib.seed)
        return tflite.quantize(tflite.calibrated_model(model, own, "minmax"), layers)

    def lrtq(int16: tuple[str, ...]) -> bytes:
        return tflite_quantizer.quantize(float_tflite, calib, int16=int16)

    def cheapest() -> bytes:  # what the tflite target exports for kept_precision cheapest
        own = CalibrationSet(calib.samples, f"{calib.source}|cheapest", calib.sampling, calib.seed)
        calibrated = tflite.calibrated_model(model, own, "minmax")
        mixed, _note = tflite_quantizer.keep_layers(float_tflite, own, calibrated, kept, KeptPrecision.CHEAPEST)
        return mixed.content if mixed else tflite.quantize(calibrated, kept)

    out = {"float": (float_tflite, float_s)}
    for route, fn in (("conv_int8", lambda: converter(())), ("lrtq_int8", lambda: lrtq(())),
                      ("conv_kept_float", lambda: converter(kept)), ("lrtq_kept_16x8", lambda: lrtq(kept)),
                      ("kept_cheapest", cheapest)):
        content, seconds = _timed(fn)
        out[route] = (content, seconds + (float_s if route in ("lrtq_int8", "lrtq_kept_16x8", "kept_cheapest") else 0.0))
    return out


def _agreement(paths: dict[str, Path], x: np.ndarray) -> dict[str, tuple[float, float]]:
    """Top-1 agreement and SQNR (dB) of each artifact's logits against the float .tflite's, in LiteRT."""
    outs = {}
    for route, path in paths.items():
        session = runner.open_session(path).exact()
        outs[route] = np.concatenate([np.asarray(session.run(x[i:i + 1]), np.float32).reshape(1, -1)
                                      for i in range(len(x))])
    ref = outs["float"]
    return {r: (float(np.mean(o.argmax(1) == ref.argmax(1))), float(sqnr_db(ref, o))) for r, o in outs.items()}


def bench_model(bm: BenchModel, work: Path, timing: Timing) -> list[list[str]]:
    model, float_tflite, float_s = _export(bm, work)
    builds = _builds(model, float_tflite, float_s, _calibration(bm))
    paths = {}
    for route, (content, _) in builds.items():
        paths[route] = work / f"{route}.tflite"
        paths[route].write_bytes(content)
    x = np.random.default_rng(1).uniform(-1, 1, (EVAL_SAMPLES, *bm.input_shape)).astype(np.float32)
    agree = _agreement(paths, x)
    lat = run_child(paths, bm.input_shape, 1, timing)
    rows = []
    for route in ROUTES:
        r = ratio(lat, route, "conv_int8")
        rows.append([bm.title, TITLES[route], f"{agree[route][0]:.3f}",
                     "-" if route == "float" else f"{agree[route][1]:.1f}",
                     f"{median_ms(lat, route):.2f}", f"{r[0]:.2f}x [{r[1]:.2f}-{r[2]:.2f}]",
                     f"{builds[route][1]:.1f}", f"{len(builds[route][0]) / 1024:.0f}"])
    return rows


def per_op(bm: BenchModel, work: Path, timing: Timing) -> list[str]:
    """One layer (the first of each op kind) kept out of LiteRT Quantizer's int8, at 16x8 and in float: the
    latency each costs against plain int8, interleaved in one run. The evidence for FAST_16X8_OPS."""
    _, float_tflite, _ = _export(bm, work)
    calib, firsts = _calibration(bm), {}
    for name, kind in tflite_quantizer.op_kinds(float_tflite).items():
        firsts.setdefault(kind, name)
    paths = {"int8": work / "op_int8.tflite"}
    paths["int8"].write_bytes(tflite_quantizer.quantize(float_tflite, calib))
    for kind, name in firsts.items():
        for how, int16, floats in (("16x8", (name,), ()), ("float", (), (name,))):
            paths[f"{kind} {how}"] = work / f"op_{kind}_{how}.tflite"
            paths[f"{kind} {how}"].write_bytes(tflite_quantizer.quantize(float_tflite, calib, int16, floats))
    lat = run_child(paths, bm.input_shape, 1, timing)
    rows = [[kind, f"{ratio(lat, f'{kind} 16x8', 'int8')[0]:.2f}x", f"{ratio(lat, f'{kind} float', 'int8')[0]:.2f}x",
             "16x8" if kind in tflite_quantizer.FAST_16X8_OPS else "float"] for kind in firsts]
    return [f"### One layer kept out of int8, per op kind: {bm.title}", "",
            f"The first op of each kind kept at 16x8 or in float by LiteRT Quantizer, the rest int8; median latency "
            f"(one thread, interleaved) over plain LiteRT Quantizer int8 ({median_ms(lat, 'int8'):.2f} ms).", "",
            *_md(["op kind", "16x8 / int8", "float / int8", "kept_precision cheapest uses"], rows), ""]


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _table(rows: list[list[str]]) -> list[str]:
    header = ["model", "artifact", "top-1 agreement", "SQNR dB", "median ms (1 thread)", "vs converter int8",
              "conversion s", "KiB"]
    return _md(header, rows)


def _header(elapsed_s: float, load: tuple[float, float, float]) -> list[str]:
    m, v = machine(), versions()
    import importlib.metadata as md

    return ["# LiteRT Quantizer vs the TFLite converter's PTQ", "",
            f"Written by `python -m bench.quantizer_vs_converter` on {date.today()}: {m.cpu}, {m.cores} cores, "
            f"host kind **{host_kind()}**; the cores were shared with other work during the run "
            f"(load average {load[0]:.1f} at the start); run time {elapsed_s / 60:.1f} min.",
            f"tensorflow-cpu {v.get('tensorflow-cpu')}, ai-edge-litert {v.get('ai-edge-litert')}, "
            f"litert-quantizer {md.version('litert-quantizer')}.", "",
            (__doc__ or "").split("\n\n")[1].strip(), ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="only the quick bench models")
    p.add_argument("--out", type=Path, default=None, help="write the tables to this markdown file")
    p.add_argument("--rounds", type=int, default=20)
    a = p.parse_args(argv)
    t0, load = time.perf_counter(), os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-lrtq-") as tmp:
        for bm in selected(a.quick):
            print(f"{bm.title} ...", flush=True)
            (Path(tmp) / bm.key).mkdir()
            rows += bench_model(bm, Path(tmp) / bm.key, Timing(rounds=a.rounds))
            print("\n".join(_table(rows)), flush=True)
        probe = next(m for m in selected(a.quick) if m.headline or a.quick)
        (Path(tmp) / "per-op").mkdir()
        ops = per_op(probe, Path(tmp) / "per-op", Timing(rounds=a.rounds))
    lines = _header(time.perf_counter() - t0, load) + _table(rows) + [""] + ops
    print("\n".join(lines))
    if a.out:
        old = a.out.read_text() if a.out.is_file() else ""
        kept = old[old.index(READING):] if READING in old else ""
        a.out.write_text("\n".join(lines) + "\n" + kept)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
