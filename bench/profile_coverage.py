"""Do `edgepipe bench --profile`'s per-op times add up to the model's latency? On this host, for the demo and
for larger models.

    python -m bench.profile_coverage [--repeats 3] [--out BENCHMARKS-profile.md]

Models: the demo (`edgepipe build digits-cnn`, its three int8 artifacts), ResNet-8 and MobileNetV2 0.35 @96
(bench/models.py, seeded random weights, edgepipe's int8 export for each target through bench/artifacts.py).
Each artifact is measured as `edgepipe bench --profile` measures it on this host (targets/runner_bench.py in a
fresh process, 200 timed runs, one thread), `--repeats` times. Per row: the end-to-end median latency measured
without the profiler; OpenVINO's own latency with its counters off; the sum of the per-op medians and the check
(`profile.adds_up`: the sum within 20% of the whole-model latency measured without the profiler, the runtime's
own where it has one, else the end-to-end; pipeline/benchrun/profile.py says why); the runtime's own time for the
profiled inferences (OpenVINO's InferRequest.latency, ONNX Runtime's model_run events, LiteRT's Invoke events) and
the per-op sum over it; the per-op sum over the end-to-end latency; how much slower a call ran with the profiler
on; and the op types that ran in a float precision.
"""

from __future__ import annotations

import argparse
import re
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


def _ratio(values: list) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    return f"{np.median(got):.2f} ({min(got):.2f}-{max(got):.2f})"


def _ms(values: list) -> str:
    got = [v for v in values if v is not None]
    return f"{np.median(got):.4f}" if got else "-"


def profile_row(name: str, target: str, artifact: Path, repeats: int) -> str:
    found = []
    for _ in range(repeats):
        cell = run_here([str(artifact), "--iterations", "200", "--warmup", "20", "--profile"], artifact.name)
        summarize(cell)
        found.append(cell)
    prof = [c["profile"] for c in found]
    median = _ms([c["latency_ms"]["median"] for c in found])
    if not prof[0]["available"]:
        return f"| {name} | {KINDS[target]} | {median} |{' - |' * 8} {prof[0]['reason']} |"
    adds = [p["adds_up"] for p in prof]
    verdict = "yes" if all(adds) else "no" if not any(adds) else f"{sum(map(bool, adds))} of {len(adds)}"
    slow = float(np.median([p["profiler_slowdown"] or 0 for p in prof]))
    fell = ", ".join(sorted(set().union(*[set(p["fell_back"]) for p in prof]))) or "none"
    unit = "" if prof[0].get("granularity") == "op" else f"; timed per {prof[0].get('granularity')}"
    against = "runtime's own" if prof[0]["runtime_unprofiled_ms"] else "end-to-end"
    return (f"| {name} | {KINDS[target]} | {median} | {_ms([p['runtime_unprofiled_ms'] for p in prof])} "
            f"| {_ms([p['total_ms'] for p in prof])} | {_ratio([p['coverage_checked'] for p in prof])} ({against}) "
            f"| {verdict} | {_ms([p['runtime_ms'] for p in prof])} | {_ratio([p['coverage_runtime'] for p in prof])} "
            f"| {_ratio([p['coverage'] for p in prof])} | {slow:.1f}x | ops in a float precision: {fell}{unit} |")


def cpu_flags() -> list[str]:
    """The host's int8- and bf16-relevant x86 flags, as /proc/cpuinfo names them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted(set(re.findall(r"\b(avx2|avx512_vnni|avx512_bf16|avx_vnni|amx_int8|amx_bf16)\b", text)))


HEAD = ("| model | runtime | end-to-end median ms | runtime's own ms, profiler off | per-op sum ms "
        "| ops / whole-model latency (the check) | within 20% | runtime's own ms, profiler on "
        "| ops / runtime's profiled inference | ops / end-to-end | profiler slowdown | notes |")


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
        f"{cpu['model']} ({cpu['arch']}; /proc/cpuinfo flags: {', '.join(cpu_flags()) or 'none of note'}), one thread, "
        "a shared host. What it measures: the docstring of `bench/profile_coverage.py`. Times are medians of the "
        "repeats' medians; ratios the median of the repeats, with their range. The check (`profile.adds_up`, \"within "
        "20%\") reads the per-op sum against the whole-model latency measured without the profiler: the runtime's own "
        "where it reports one (OpenVINO's `InferRequest.latency` with `PERF_COUNT` off, without the Python binding's "
        "per-call cost), else the end-to-end latency (ONNX Runtime and LiteRT time a run only in their profilers). The "
        "runtime's own time with the profiler on is OpenVINO's `InferRequest.latency`, ONNX Runtime's `model_run` "
        "events and LiteRT's `Invoke` events for the profiled inferences; the profiler slowdown is the median call "
        "with the profiler on over the end-to-end latency.", "",
        HEAD, "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""])
    a.out.write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
