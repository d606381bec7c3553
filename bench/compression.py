"""Does compression buy latency? 50% channel pruning of MobileNetV2 1.0 @ 224 (LiteRT, OpenVINO) and
low-rank decomposition of a dense-heavy model, each int8 artifact timed against its unpruned twin,
interleaved in one run. Random weights: latency does not need trained ones.

    python -m bench.compression [--out BENCHMARKS-compression.md]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

from calibration import CalibrationSet, SamplingMethod
from pipeline.cache import Cache
from pipeline.quantize.export import ExportRequest, export_target
from pipeline.ui import UI
from targets import ExportOptions, FloatModel

from .measure import Timing, median_ms, run_child
from .models import mobilenet_v2
from .pipeline_floor import host_kind
from .system import machine, versions

TARGETS = ("tflite", "openvino")
ROUNDS = 7


def dense_heavy():  # type: ignore[no-untyped-def]
    import keras

    inp = keras.Input((1024,))
    x = keras.layers.Dense(2048, activation="relu")(inp)
    x = keras.layers.Dense(2048, activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(1000)(x))


def _int8(km, key: str, target: str, work: Path, cache: Cache) -> Path:  # type: ignore[no-untyped-def]
    folder = work / key
    if not (folder / "saved_model").exists():
        folder.mkdir(parents=True, exist_ok=True)
        km.save(folder / "model.keras")
        km.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    shape = tuple(int(d) for d in km.inputs[0].shape[1:])
    x = np.random.default_rng(0).uniform(-1, 1, (16, *shape)).astype(np.float32)
    calib = CalibrationSet(x, "bench:uniform(-1,1)", SamplingMethod.RANDOM, 0)
    model_id = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in km.get_weights())).hexdigest()
    fm = FloatModel(folder / "saved_model", folder / "model.keras", shape)
    exp = export_target(ExportRequest(target, fm, model_id, calib, cache, UI(quiet=True)), ExportOptions())
    return exp.folder / exp.result.artifact


def _host() -> list[str]:
    """Where and with what the rows were measured: a latency means nothing without its host kind."""
    from targets.runner import cpu_info

    m, v = machine(), versions()
    return [f"- Host kind: {host_kind()} (CPU features: {', '.join(cpu_info()['features'])}); CPU: {m.cpu}, "
            f"{m.cores} cores visible; 1-minute load average {os.getloadavg()[0]:.1f} at the end of the run.",
            "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
            f"- Timing: 1 thread, batch 1, random uniform(-1, 1) input, the before and after int8 artifacts "
            f"interleaved in {ROUNDS} rounds in one child process (bench/measure.py); 16 calibration samples."]


def main(argv: list[str] | None = None) -> int:
    import keras

    from pipeline.compress.channel_prune import channel_prune
    from pipeline.compress.cost import count_macs, count_params
    from pipeline.compress.decompose import decompose_model

    p = argparse.ArgumentParser(prog="python -m bench.compression")
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS-compression.md"))
    args = p.parse_args(argv)
    keras.utils.set_random_seed(0)
    mnv2 = mobilenet_v2(1.0, 224)
    mlp = dense_heavy()
    cases = [("MobileNetV2 1.0 @224, 50% channel pruning", "mnv2", mnv2, channel_prune(mnv2, 0.5)),
             ("Dense 1024-2048-2048-1000, decomposition rank 0.25", "mlp", mlp, decompose_model(mlp, 0.25))]
    rows = ["| model | target | params before -> after | MACs before -> after | median ms before | "
            "median ms after | after/before | result |", "|---|---|---|---|---|---|---|---|"]
    cache = Cache()
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-compress-") as tmp:
        for title, key, before, after in cases:
            for target in TARGETS:
                print(f"{title}: {target}", flush=True)
                a = _int8(before, f"{key}-before", target, Path(tmp), cache)
                b = _int8(after, f"{key}-after", target, Path(tmp), cache)
                res = run_child({"before": a, "after": b}, tuple(int(d) for d in before.inputs[0].shape[1:]),
                                1, Timing(rounds=ROUNDS))
                mb, ma = median_ms(res, "before"), median_ms(res, "after")
                rows.append(f"| {title} | {target} int8 | {count_params(before)} -> {count_params(after)} | "
                            f"{count_macs(before)} -> {count_macs(after)} | {mb:.3f} | {ma:.3f} | "
                            f"{ma / mb:.2f} | {'PASS' if ma < mb else 'FAIL'} |")
                print(rows[-1], flush=True)
    text = [f"# Compression latency ({date.today()}, one thread, interleaved rounds, medians of round medians)",
            "", "Reproduce: `./scripts/bench-compression` (or `python -m bench.compression`).", "", *_host(), "",
            *rows, ""]
    args.out.write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
