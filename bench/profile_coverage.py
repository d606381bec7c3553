"""Do `edgepipe bench --profile`'s per-op times add up to the model's latency? On this host, for the demo and
for larger models.

    python -m bench.profile_coverage [--repeats 3] [--out BENCHMARKS-profile.md]

Models: the demo (`edgepipe build digits-cnn`, its three int8 artifacts), ResNet-8 and MobileNetV2 0.35 @96
(bench/models.py, seeded random weights, edgepipe's int8 export for each target through bench/artifacts.py).
Each artifact is measured as `edgepipe bench --profile` measures it on this host (targets/runner_bench.py in a
fresh process, 200 timed runs, one thread), `--repeats` times. Per row: the median latency, the sum of the
per-op medians, their ratio (coverage: 1.0 is "the ops are the whole latency"; the issue asks for within 20%),
how much slower an inference ran with the profiler on, the per-op sum over that profiled inference, and the op
types that ran in a float precision.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.benchrun.cells import run_here
from pipeline.benchrun.profile import summarize
from targets.runner import cpu_info

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"tflite": "LiteRT", "openvino": "OpenVINO", "tensorrt": "ONNX Runtime (Q/DQ)"}


def demo_artifacts(work: Path) -> dict[str, Path]:
    from pipeline.cli import main

    out = work / "demo"
    assert main(["--quiet", "build", "digits-cnn", "--out", str(out)]) in (0, 1)  # 1: a budget missed; built
    return {"tflite": out / "tflite/model_int8.tflite", "openvino": out / "openvino/model_int8.xml",
            "tensorrt": out / "tensorrt/model_qdq.onnx"}


def bench_artifacts(key: str, work: Path) -> dict[str, Path]:
    from pipeline.cache import Cache
    from pipeline.ui import UI

    from .artifacts import prepare
    from .models import MODELS

    model = next(m for m in MODELS if m.key == key)
    prep = prepare(model, work, Cache(), UI(quiet=True))
    return {t: a["int8"] for t, a in prep.artifacts.items()}


def profile_row(name: str, target: str, artifact: Path, repeats: int) -> str:
    found = []
    for _ in range(repeats):
        cell = run_here([str(artifact), "--iterations", "200", "--warmup", "20", "--profile"], artifact.name)
        summarize(cell)
        found.append(cell)
    prof = [c["profile"] for c in found]
    median = float(np.median([c["latency_ms"]["median"] for c in found]))
    if not prof[0]["available"]:
        return f"| {name} | {KINDS[target]} | {median:.4f} | - | - | - | - | {prof[0]['reason']} |"
    total = float(np.median([p["total_ms"] for p in prof]))
    cover = [p["coverage"] for p in prof]
    slow = float(np.median([p["profiler_slowdown"] or 0 for p in prof]))
    within = float(np.median([p["coverage_profiled"] or 0 for p in prof]))
    fell = ", ".join(sorted(set().union(*[set(p["fell_back"]) for p in prof]))) or "none"
    return (f"| {name} | {KINDS[target]} | {median:.4f} | {total:.4f} | {np.median(cover):.2f} "
            f"({min(cover):.2f}-{max(cover):.2f}) | {slow:.1f}x | {within:.2f} | ops in a float precision: {fell} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS-profile.md")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepipe-profile-") as tmp:
        work = Path(tmp)
        models = {"demo (digits-cnn)": demo_artifacts(work), "ResNet-8": bench_artifacts("resnet8", work),
                  "MobileNetV2 0.35 @96": bench_artifacts("mobilenetv2-0.35-96", work)}
        for name, artifacts in models.items():
            for target, artifact in artifacts.items():
                rows.append(profile_row(name, target, artifact, a.repeats))
                print(rows[-1], flush=True)
    cpu = cpu_info()
    text = "\n".join([
        "# `bench --profile`: do the per-op times add up?", "",
        f"Written by `python -m bench.profile_coverage --repeats {a.repeats}` on {datetime.now(timezone.utc).date()}, "
        f"{cpu['model']} ({cpu['arch']}; {', '.join(cpu['features'])}), one thread, a shared host. What it measures: "
        "the docstring of `bench/profile_coverage.py`. Coverage is the sum of the per-op medians over the median "
        "latency measured without the profiler (median of the repeats, and their range); the profiler slowdown is "
        "the median inference with the profiler on over the one without; the last number is the per-op sum over "
        "the profiled inference.", "",
        "| model | runtime | median latency ms | per-op sum ms | coverage | profiler slowdown | coverage of the profiled inference | notes |",
        "|---|---|---|---|---|---|---|---|", *rows, ""])
    a.out.write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
