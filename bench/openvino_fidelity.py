"""OpenVINO latency fidelity: does targets/runner.py report the latency OpenVINO's own tool reports?

Builds one small conv model (ONNX via onnx.helper -> openvino.convert_model -> IR; int8 with NNCF unless
--fp32), times it with runner.py (run as the device runs it: a copy in a temp dir, JSON on stdout) and
with `benchmark_app -hint latency -nstreams 1 -nthreads N -t SECONDS`, and prints both medians.
PASS when the median over the repeats of (runner median / benchmark_app median) is within 10% of 1.

    .venv/bin/python bench/openvino_fidelity.py [--threads 1] [--seconds 10] [--repeats 1] [--fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.10


def build_ir(folder: Path, size: int, int8: bool) -> Path:
    """Conv3x3(3->32) s1 -> Conv3x3(32->32) s2 -> Conv3x3(32->64) s2 -> GAP -> FC(10), ReLUs between."""
    import onnx
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i, (cin, cout, stride) in enumerate([(3, 32, 1), (32, 32, 2), (32, 64, 2)]):
        w = rng.normal(0, (2 / (9 * cin)) ** 0.5, (cout, cin, 3, 3)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node(
                "Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], strides=[stride] * 2
            ),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        prev = f"r{i}"
    inits += [numpy_helper.from_array(rng.normal(0, 0.1, (64, 10)).astype(np.float32), "fc")]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fidelity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    ov_model = ov.convert_model(str(folder / "model.onnx"))
    if int8:
        import nncf

        samples = [rng.normal(size=(1, 3, size, size)).astype(np.float32) for _ in range(32)]
        ov_model = nncf.quantize(ov_model, nncf.Dataset(samples), subset_size=len(samples))
    xml = folder / ("model_int8.xml" if int8 else "model_fp32.xml")
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    return xml


def runner_median(xml: Path, threads: int, seconds: float, folder: Path) -> tuple[float, int]:
    """runner.py's median as on a device: a copy next to nothing else, its JSON on stdout."""
    copy = folder / "device"
    copy.mkdir(exist_ok=True)
    for name in ("runner.py", "trt_runner.py"):
        shutil.copy(ROOT / "targets" / name, copy / name)

    def run(iterations: int) -> dict:
        cmd = [sys.executable, str(copy / "runner.py"), str(xml), "--threads", str(threads),
               "--warmup", "20", "--iterations", str(iterations)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        if "error" in result:
            raise RuntimeError(result["error"])
        return result["latency_ms"]

    probe = run(50)["median"]
    iterations = max(100, int(seconds * 1000 / max(probe, 1e-3)))  # about as long as benchmark_app runs
    return run(iterations)["median"], iterations


def same_loop_medians(xml: Path, threads: int, iterations: int) -> tuple[float, float]:
    """Diagnostic: runner.measure's clock vs OpenVINO's own `request.latency` (what benchmark_app reports
    with -hint latency) over the same iterations, in this process. A gap here is the runner's overhead
    (Python call, input copy, waking the caller); a gap only against benchmark_app is the machine."""
    sys.path.insert(0, str(ROOT))
    from targets import runner

    session = runner.open_session(xml, threads)
    x = np.random.default_rng(0).normal(size=session.request.get_input_tensor(0).shape).astype(np.float32)
    ov_ms: list[float] = []
    stats, _ = runner.measure(
        session, x, 20, iterations, threads, tick=lambda: ov_ms.append(session.request.latency)
    )
    return stats["median"], float(np.median(ov_ms))


def benchmark_app_median(xml: Path, threads: int, seconds: float) -> tuple[float, str]:
    tool = shutil.which("benchmark_app", path=str(Path(sys.executable).parent)) or shutil.which(
        "benchmark_app"
    )
    if tool is None:
        raise SystemExit("benchmark_app not found (it ships with the openvino pip package)")
    # benchmark_app rejects -nstreams/-nthreads next to -hint latency (its "UI rule"): the same settings go in
    # through -load_config, the exact compile config runner.py uses (LATENCY, 1 stream, N threads).
    config = xml.with_name("benchmark_app_config.json")
    cpu = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads)}
    config.write_text(json.dumps({"CPU": cpu}))
    cmd = [tool, "-m", str(xml), "-d", "CPU", "-hint", "latency", "-load_config", str(config),
           "-t", f"{seconds:g}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    text = out.stdout + out.stderr
    median = re.search(r"Median:\s+([0-9.]+)\s*(ms|us)", text)
    if out.returncode != 0 or median is None:
        raise SystemExit("benchmark_app failed:\n" + text[-2000:])
    count = re.search(r"Count:\s+(\d+)", text)
    scale = 1e-3 if median.group(2) == "us" else 1.0  # it switches to microseconds below 1 ms
    return float(median.group(1)) * scale, count.group(1) if count else "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", type=int, default=256, help="input height and width")
    p.add_argument("--repeats", type=int, default=3, help="alternate the two tools this many times")
    p.add_argument("--fp32", action="store_true", help="skip NNCF int8 quantization")
    a = p.parse_args()
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-") as tmp:
        folder = Path(tmp)
        xml = build_ir(folder, a.size, int8=not a.fp32)
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"OpenVINO {ov.get_version()}  model {xml.name} (1x3x{a.size}x{a.size})  threads {a.threads}  "
              f"cpus {os.cpu_count()}  load {load}")  # fmt: skip
        print(f"{'run':>3}  {'runner median ms':>16}  {'(iters)':>8}  {'benchmark_app median ms':>23}  "
              f"{'(count)':>8}  {'ratio':>6}  verdict")  # fmt: skip
        ratios: list[float] = []
        diag: list[str] = []
        for i in range(a.repeats):
            if i % 2:  # alternate which tool goes first: a busy machine drifts
                theirs, count = benchmark_app_median(xml, a.threads, a.seconds)
                ours, iters = runner_median(xml, a.threads, a.seconds, folder)
            else:
                ours, iters = runner_median(xml, a.threads, a.seconds, folder)
                theirs, count = benchmark_app_median(xml, a.threads, a.seconds)
            loop_runner, loop_ov = same_loop_medians(xml, a.threads, max(100, iters // 2))
            diag.append(f"{i + 1:>3}  same loop: runner clock {loop_runner:.3f} ms, OpenVINO request.latency "
                        f"{loop_ov:.3f} ms (ratio {loop_runner / loop_ov:.3f})")  # fmt: skip
            ratios.append(ours / theirs)
            verdict = "PASS" if abs(ratios[-1] - 1) <= TOLERANCE else "FAIL"
            print(
                f"{i + 1:>3}  {ours:>16.3f}  {iters:>8}  {theirs:>23.3f}  {count:>8}  {ratios[-1]:>6.3f}  {verdict}"
            )
    print("\n".join(diag))
    ratio = float(np.median(ratios))
    ok = abs(ratio - 1) <= TOLERANCE
    print(
        f"{'PASS' if ok else 'FAIL'}: median ratio runner/benchmark_app {ratio:.3f} over {len(ratios)} runs (limit 1 +- 10%)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
