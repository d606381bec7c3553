"""The pipeline's own cost against the toolkits' floor: `edgepipe build` vs the raw toolkit calls, one script.

    python -m bench.pipeline_floor [--size 224] [--eval 2000] [--calib 300] [--iterations 20] [--write]

Both sides get the same MobileNetV2 1.0 (weights=None, seeded random init, 10 classes) saved as .keras and the
same generated data (random images, random labels): CALIB training samples to calibrate on, EVAL evaluation
samples, three targets, no compression stages, ITERATIONS latency runs (+2 warmup) of the int8 and the float
artifact per target. Each side runs in its own child process with a fresh cache; its wall time and peak RSS
(ru_maxrss from wait4, children included) are measured from outside. The floor (`--floor DIR`, run as that
child) does what edgepipe's targets do, with each toolkit's own calls and nothing else: Keras SavedModel export
once; LiteRT TFLiteConverter float + full-integer int8 with a representative dataset; OpenVINO convert_model +
nncf.quantize; ONNX: Keras' ONNX export + quant_pre_process + quantize_static (QDQ, symmetric s8, per channel);
each int8 artifact evaluated in batches of 32 in its own runtime (ONNX Runtime with graph optimizations off,
as edgepipe evaluates a Q/DQ graph), and the reference accuracy with Keras predict. `--write` replaces this
host kind's section of BENCHMARKS.md's pipeline-floor table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # pipeline_cost, as bench/__main__ imports it
from pipeline_cost import measure_build  # noqa: E402

BATCH = 32
FIRST = "start-up, load model + data, reference accuracy, report"
TARGETS = ("tflite", "openvino", "tensorrt")


def make_inputs(work: Path, size: int, n_calib: int, n_eval: int) -> Path:
    """model.keras and data.npz (uint8 images; edgepipe divides by 255, the floor does the same)."""
    import keras

    keras.utils.set_random_seed(0)
    keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=1.0, weights=None, classes=10).save(
        work / "model.keras")
    rng = np.random.default_rng(0)
    img = (n_calib + n_eval, size, size, 3)
    x = rng.integers(0, 256, img, dtype=np.uint8)
    y = rng.integers(0, 10, n_calib + n_eval)
    np.savez(work / "data.npz", x_train=x[:n_calib], y_train=y[:n_calib], x_test=x[n_calib:], y_test=y[n_calib:])
    return write_config(work, n_calib, 20)


def write_config(work: Path, n_calib: int, iterations: int) -> Path:
    tables = "\n".join(f"[targets.{t}]\niterations = {iterations}\nwarmup = 2" for t in TARGETS)
    cfg = work / "floor.toml"
    cfg.write_text(f'[model]\npath = "{work / "model.keras"}"\n\n[data]\npath = "{work / "data.npz"}"\n'
                   f'scale = 255.0\n\n[quantize]\ncalibration_samples = {n_calib}\n\n{tables}\n')
    return cfg


class Steps:
    """Wall seconds per named step, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> Steps:
        self._name, self._t0 = name, time.perf_counter()
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._name] = self.seconds.get(self._name, 0.0) + time.perf_counter() - self._t0


def _batched_accuracy(run_batch, x: np.ndarray, y: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    hits = 0
    for i in range(0, len(x), BATCH):
        xb = x[i : i + BATCH]
        pad = np.concatenate([xb, np.zeros((BATCH - len(xb), *xb.shape[1:]), xb.dtype)]) if len(xb) < BATCH else xb
        hits += int((run_batch(pad)[: len(xb)].reshape(len(xb), -1).argmax(axis=1) == y[i : i + BATCH]).sum())
    return hits / len(y)


def _latency(fn, x: np.ndarray, iterations: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for i in range(iterations + 2):
        t0 = time.perf_counter()
        fn(x)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def floor_tflite(saved: Path, calib: np.ndarray, x: np.ndarray, y: np.ndarray, it: int) -> dict:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    float_bytes = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    int8_bytes = conv.convert()
    ip = Interpreter(model_content=int8_bytes, num_threads=1)
    d = ip.get_input_details()[0]
    ip.resize_tensor_input(d["index"], [BATCH, *x.shape[1:]])
    ip.allocate_tensors()
    d, o = ip.get_input_details()[0], ip.get_output_details()[0]
    (si, zi), (so, zo) = d["quantization"], o["quantization"]

    def run(xb: np.ndarray) -> np.ndarray:
        ip.set_tensor(d["index"], np.clip(np.round(xb / si + zi), -128, 127).astype(np.int8))
        ip.invoke()
        return (ip.get_tensor(o["index"]).astype(np.float32) - zo) * so

    acc = _batched_accuracy(run, x, y)
    return {"accuracy": acc, **_litert_latency(int8_bytes, float_bytes, x[:1], it)}


def _litert_latency(int8_bytes: bytes, float_bytes: bytes, x1: np.ndarray, it: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    out = {}
    for key, content in (("int8_ms", int8_bytes), ("float_ms", float_bytes)):
        ip = Interpreter(model_content=content, num_threads=1)
        ip.allocate_tensors()
        d = ip.get_input_details()[0]
        ip.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        out[key] = _latency(lambda _: ip.invoke(), x1, it)  # noqa: B023
    return out


def floor_openvino(saved: Path, calib: np.ndarray, x: np.ndarray, y: np.ndarray, it: int) -> dict:
    import nncf
    import openvino as ov

    core, cfg = ov.Core(), {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "1"}
    fm = ov.convert_model(str(saved))
    fm.reshape([1, *x.shape[1:]])
    qm = nncf.quantize(fm, nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]), subset_size=len(calib))
    lat = {}
    for key, m in (("int8_ms", qm), ("float_ms", fm)):
        req = core.compile_model(m, "CPU", cfg).create_infer_request()
        lat[key] = _latency(lambda xb: req.infer([xb]), x[:1], it)  # noqa: B023
    bm = qm.clone()
    bm.reshape([BATCH, *x.shape[1:]])
    req = core.compile_model(bm, "CPU", cfg).create_infer_request()
    acc = _batched_accuracy(lambda xb: np.asarray(req.infer([xb])[0]), x, y)
    return {"accuracy": acc, **lat}


def floor_onnx(keras_path: Path, work: Path, calib: np.ndarray, x: np.ndarray, y: np.ndarray, it: int) -> dict:
    import keras
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    km = keras.saving.load_model(keras_path, compile=False)
    km(np.zeros((1, *x.shape[1:]), np.float32))
    km.export(str(work / "fp32.onnx"), format="onnx", verbose=False)
    quant_pre_process(str(work / "fp32.onnx"), str(work / "pre.onnx"), skip_symbolic_shape=False)
    name = ort.InferenceSession(str(work / "pre.onnx")).get_inputs()[0].name

    class Reader:
        def __init__(self) -> None:
            self.it = iter([{name: calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict | None:
            return next(self.it, None)

    quantize_static(str(work / "pre.onnx"), str(work / "qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    out = {}
    for key, f in (("int8_ms", "qdq.onnx"), ("float_ms", "fp32.onnx")):
        s = ort.InferenceSession(str(work / f), providers=["CPUExecutionProvider"])
        out[key] = _latency(lambda xb: s.run(None, {name: xb}), x[:1], it)  # noqa: B023
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(work / "qdq.onnx"), opts, providers=["CPUExecutionProvider"])
    out["accuracy"] = _batched_accuracy(lambda xb: s.run(None, {name: xb})[0], x, y)
    return out


def run_floor(work: Path, iterations: int) -> dict:
    """The toolkits' own calls, timed step by step (this runs as the floor child)."""
    import onnxruntime  # noqa: F401  # every runtime imported before the clock starts, as edgepipe's CLI does
    import openvino  # noqa: F401
    import tensorflow as tf  # noqa: F401

    steps, res = Steps(), {}
    with steps("load model + data, reference accuracy"):
        import keras

        with np.load(work / "data.npz") as d:
            calib, x, y = d["x_train"].astype(np.float32) / 255, d["x_test"].astype(np.float32) / 255, d["y_test"]
        km = keras.saving.load_model(work / "model.keras", compile=False)
        res["reference"] = float((km.predict(x, batch_size=BATCH, verbose=0).argmax(1) == y).mean())
        saved = work / "saved_model"
        km.export(str(saved), verbose=False)
    with steps("tflite"):
        res["tflite"] = floor_tflite(saved, calib, x, y, iterations)
    with steps("openvino"):
        res["openvino"] = floor_openvino(saved, calib, x, y, iterations)
    with steps("tensorrt"):
        res["tensorrt"] = floor_onnx(work / "model.keras", work, calib, x, y, iterations)
    return {"steps": steps.seconds, "results": res}


def measure_floor(work: Path, iterations: int) -> dict:
    """The floor in a child process: its steps, wall time and peak RSS (MB)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bench.pipeline_floor", "--floor", str(work),
                             "--iterations", str(iterations)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    text = proc.stdout.read() if proc.stdout else ""  # until the child closes it (it ends)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"floor script failed (exit {os.waitstatus_to_exitcode(status)})")
    return {**json.loads(text.strip().splitlines()[-1]), "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def _edgepipe_rows(cost: object) -> dict[str, float]:
    """edgepipe's build.log steps folded per target, the rest as model + data + reference."""
    per = {t: sum(s for name, s in cost.steps if name.startswith(f"{t}:")) for t in TARGETS}  # type: ignore[attr-defined]
    per[FIRST] = cost.wall_s - sum(per.values())  # type: ignore[attr-defined]
    return per


def table(args: argparse.Namespace, cost: object, floor: dict) -> list[str]:
    from system import machine, versions

    from targets.runner import cpu_info

    m, feats, v = machine(), ", ".join(cpu_info()["features"]), versions()
    host = host_kind()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ep = _edgepipe_rows(cost)
    lines = [f"### {host}", "",
             f"{now}; {m.cpu}, {m.cores} cores (shared with other work), CPU features: {feats}. "
             f"MobileNetV2 1.0 @{args.size} (weights=None, random init), {args.calib} calibration + {args.eval} "
             f"evaluation samples generated, three targets, no compression stages, {args.iterations} latency runs "
             f"per artifact. Command: `python -m bench.pipeline_floor --size {args.size} --eval {args.eval} "
             f"--calib {args.calib} --iterations {args.iterations} --write`.",
             "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), "",
             "| Step | edgepipe build s | toolkit floor s | edgepipe / floor |", "|---|---|---|---|"]
    fs = dict(floor["steps"])  # as for edgepipe: the first row is the wall time outside the three targets
    fs[FIRST] = floor["wall_s"] - sum(fs[t] for t in TARGETS)
    for name in [FIRST, *TARGETS]:
        lines.append(f"| {name} | {ep[name]:.1f} | {fs[name]:.1f} | {ep[name] / max(fs[name], 1e-9):.2f}x |")
    lines.append(f"| **wall (process)** | **{cost.wall_s:.1f}** | **{floor['wall_s']:.1f}** | "  # type: ignore[attr-defined]
                 f"**{cost.wall_s / floor['wall_s']:.2f}x** (goal <= 1.25x) |")  # type: ignore[attr-defined]
    lines.append(f"| peak RSS MB | {cost.peak_rss_mb:.0f} | {floor['peak_rss_mb']:.0f} | "  # type: ignore[attr-defined]
                 f"{cost.peak_rss_mb / floor['peak_rss_mb']:.2f}x |")  # type: ignore[attr-defined]
    acc = ", ".join(f"{t} {floor['results'][t]['accuracy']:.3f}" for t in TARGETS)
    lines += ["", f"Floor accuracies (random model and labels, a sanity check only): reference "
              f"{floor['results']['reference']:.3f}, {acc}. edgepipe's build: exit {cost.exit_code}"  # type: ignore[attr-defined]
              + (f" ({cost.error})" if cost.error else "") + ".", ""]  # type: ignore[attr-defined]
    return lines


def host_kind() -> str:
    """The host kind a section belongs to: the int8-relevant features that decide int8 speed."""
    from targets.runner import cpu_info

    f = set(cpu_info()["features"])
    if "amx" in f:
        return "x86-64 with AMX"
    if "avx512_vnni" in f:
        return "x86-64 with AVX-512 VNNI"
    if "avx2" in f:
        return "x86-64 with AVX2, no VNNI"
    return "ARM with dot-product" if "dotprod" in f else f"{cpu_info()['arch']} (no int8 dot-product features)"


HEADING = "## Pipeline cost vs the toolkits' floor"


def write_section(lines: list[str], path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace this host kind's subsection under HEADING (added at the end when missing)."""
    text = path.read_text()
    if HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\nWritten by `python -m bench.pipeline_floor --write`; " \
            "one subsection per host kind.\n\n"
    head, _, rest = text.partition(HEADING)
    nxt = rest.find("\n## ")
    body, tail = (rest, "") if nxt < 0 else (rest[:nxt + 1], rest[nxt + 1:])
    start = body.find(lines[0] + "\n")
    if start >= 0:
        end = body.find("\n### ", start + 1)
        body = body[:start] + (body[end + 1:] if end >= 0 else "")
    body = body.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    path.write_text(head + HEADING + body + ("\n" + tail if tail else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline_floor", description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--eval", type=int, default=2000)
    p.add_argument("--calib", type=int, default=300)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--write", action="store_true", help="write this host kind's section of BENCHMARKS.md")
    p.add_argument("--floor", type=Path, help=argparse.SUPPRESS)  # the floor child
    a = p.parse_args(argv)
    if a.floor is not None:
        print(json.dumps(run_floor(a.floor, a.iterations)))
        return 0
    with tempfile.TemporaryDirectory(prefix="edgepipe-floor-") as tmp:
        work = Path(tmp)
        cfg = make_inputs(work, a.size, a.calib, a.eval)
        write_config(work, a.calib, a.iterations)
        print(f"inputs ready in {work}; edgepipe build ...", file=sys.stderr, flush=True)
        cost = measure_build(config=str(cfg))
        print(f"edgepipe: {cost.wall_s:.1f} s; floor ...", file=sys.stderr, flush=True)
        floor = measure_floor(work, a.iterations)
    lines = table(a, cost, floor)
    print("\n".join(lines))
    if a.write:
        write_section(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
