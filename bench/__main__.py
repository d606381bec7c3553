"""edgepipe benchmarks: float vs edgepipe int8 vs each toolkit's default int8, roofline, pipeline cost.

    python -m bench            # full run, writes BENCHMARKS.md (10-20 minutes on a busy 2-core host)
    python -m bench --quick    # MobileNetV2 0.35 @96 and DS-CNN, fewer rounds; prints, writes only with --out
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.cache import Cache
from pipeline.ui import UI
from targets.runner import cpu_info

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pipeline_cost, as bench/pipeline_floor.py imports it
from pipeline_cost import EXAMPLE, measure_build  # noqa: E402

from . import op_mix, tables
from .artifacts import TARGETS, Prepared, prepare
from .measure import Timing, median_ms, ratio, run_child
from .models import selected
from .pipeline_floor import HEADING as FLOOR_HEADING
from .pipeline_floor import host_kind
from .system import machine, versions

ROOT = Path(__file__).resolve().parents[1]
FULL = Timing(rounds=60, round_s=0.05, warmup_s=0.5)
QUICK = Timing(rounds=20, round_s=0.03, warmup_s=0.2)
_RUNTIMES: dict[str, str] = {}  # target -> the runtime that timed its int8 artifact
_RAW: list[dict] = []  # every timing child's result, for --json


class _Log(UI):
    """Progress on stderr, each line prefixed with the time since the start."""

    def __init__(self) -> None:
        super().__init__()
        self.t0 = time.perf_counter()

    def info(self, msg: str) -> None:
        s = int(time.perf_counter() - self.t0)
        super().info(f"[{s // 60:2d}:{s % 60:02d}] {msg}")


def _measure(prep: Prepared, target: str, threads: int, timing: Timing, ui: UI) -> tables.Row:
    bm = prep.model
    row = tables.Row(bm.key, bm.title, bm.headline, target, threads)
    if target in prep.errors:
        row.error = prep.errors[target]
        return row
    ui.info(f"  {bm.key}: timing {target}, {threads} thread(s)")
    try:
        res = run_child(prep.artifacts[target], bm.input_shape, threads, timing,
                        runner_copy="int8" if target == "tflite" else None)
    except Exception as err:
        row.error = str(err)
        ui.warn(f"{bm.key}: {target}: {err}")
        return row
    row.float_ms, row.int8_ms, row.default_ms = (median_ms(res, k) for k in ("float", "int8", "default"))
    row.speedup = ratio(res, "float", "int8")
    row.vs_default = ratio(res, "int8", "default")
    fastest = {k: min(v) for k, v in res["round_medians_ms"].items()}
    row.fastest = (fastest["float"] / fastest["int8"], fastest["int8"] / fastest["default"])
    if "int8_runner" in res["round_medians_ms"]:
        row.runner_ms = median_ms(res, "int8_runner")
        row.runner_ratio = ratio(res, "int8_runner", "int8")[0]
    _RUNTIMES.setdefault(target, res["runtimes"]["int8"])
    _RAW.append({"model": bm.key, "target": target, **res})
    return row


def _export_table(preps: list[Prepared]) -> list[str]:
    body = []
    for p in preps:
        cells = [p.model.title]
        for t in TARGETS:
            s = p.export_s.get(t)
            cells += ["error", "error"] if s is None else [
                "cached" if s[k] == 0 else f"{s[k]:.1f}" for k in ("edgepipe", "default")]
        body.append(cells)
    header = ["Model"] + [f"{tables.SHORT[t]} {k}" for t in TARGETS for k in ("edgepipe", "default")]
    return tables._table(header, body) + [""]


def _header(quick: bool, timing: Timing, threads: list[int], elapsed_s: float, load: list[float]) -> list[str]:
    m, v = machine(), versions()
    return [
        "# edgepipe benchmarks",
        "",
        "Written by " + ("`python -m bench --quick`" if quick else "`./scripts/bench` (`python -m bench`)") + " on "
        + f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; total run time {elapsed_s / 60:.1f} min.",
        "",
        f"- Host kind: {host_kind()} (CPU features: {', '.join(cpu_info()['features'])}); every table in this file "
        "above the pipeline-floor section was measured on it: int8 speed-ups are a property of the host kind.",
        f"- CPU: {m.cpu}, {m.cores} cores visible, {m.mhz:.0f} MHz, AVX-512 VNNI: {'yes' if m.vnni else 'no'}; "
        "the cores are shared with other work (1-minute load average "
        + " -> ".join(f"{v:.1f}" for v in load) + " from start to end of this run), so absolute numbers are noisy "
        "and the side-by-side ratios are the point.",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Timing: each (model, target, threads) in its own process, float / edgepipe int8 / default int8 "
        f"interleaved in {timing.rounds} rounds (rotated order, ~{timing.round_s * 1e3:.0f} ms per artifact per "
        "round, batch 1, random input) through edgepipe's runner sessions as its latency measurement calls them "
        "(`targets/runner.py`: the input made once in the artifact's own format, int8 for an int8-input .tflite, "
        "bound once for OpenVINO; see the LiteRT table). Latency = median "
        "of per-round medians; a ratio = median over rounds of the same-round quotient (so it can differ a little "
        "from the quotient of the two latency columns), with the interquartile range of those quotients in "
        "brackets. Threads: " + ", ".join(map(str, threads)) + " (all = every visible core).",
        "- Models: architectures built in code (bench/models.py), seeded random weights, calibrated on "
        "32 random samples; edgepipe's artifacts come from its own target exports (`pipeline.export.export_target`).",
        "- Default int8 = the toolkit's plain default conversion of the same float model: LiteRT "
        "`Optimize.DEFAULT` + representative dataset; OpenVINO `nncf.quantize` defaults; ONNX Runtime "
        "`quantize_static` defaults (QDQ, u8 activations, per-tensor s8 weights).",
        "",
    ]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="two small models, fewer rounds")
    p.add_argument("--out", type=Path, default=None, help="markdown file (default: BENCHMARKS.md, full runs)")
    p.add_argument("--no-cache", action="store_true", help="convert again instead of reusing cached exports")
    p.add_argument("--json", type=Path, default=None, help="also write every per-round median here")
    p.add_argument("--no-op-mix", action="store_true", help="skip the per-op-type float/int8 probes")
    p.add_argument("--no-pipeline-cost", action="store_true", help=f"skip the `edgepipe build {EXAMPLE}` timing")
    return p


def _run(a: argparse.Namespace, timing: Timing, threads: list[int], cache: Cache,
         ui: _Log) -> tuple[list[tables.Row], list[Prepared], list[str] | None]:
    """Every selected model prepared and timed on every target and thread count, then the op-mix probes."""
    rows: list[tables.Row] = []
    preps: list[Prepared] = []
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-") as tmp:
        for bm in selected(a.quick):
            ui.info(f"{bm.title}: building, exporting")
            prep = prepare(bm, Path(tmp), cache, ui)
            preps.append(prep)
            rows += [_measure(prep, t, n, timing, ui) for t in TARGETS for n in threads]
        mix = None if a.no_op_mix else op_mix.measure(Path(tmp), cache, ui, timing)
    return rows, preps, mix


def _sections(rows: list[tables.Row], preps: list[Prepared], mix: list[str] | None, threads: list[int],
              cost: Any) -> list[str]:
    """The markdown after the summary: latency per target, op mix, roofline, conversion time, pipeline cost."""
    md = ["## Latency: float vs edgepipe int8 vs the toolkit's default int8", "",
          "Goals: MobileNetV2 1.0 @224, one thread: int8 at least 1.9x faster than float on LiteRT and 1.3x on "
          "OpenVINO; every LiteRT and OpenVINO row: edgepipe's int8 never more than 5% slower than the toolkit's "
          "default int8 (edgepipe / default <= 1.05).", ""]
    for t in TARGETS:
        md += tables.target_table(t, [r for r in rows if r.target == t], _RUNTIMES.get(t, "runtime unknown"))
    md += ["The TensorRT rows are informational: edgepipe's tensorrt artifact is symmetric s8 Q/DQ (zero points 0, "
           "per-channel weights) because that is what TensorRT requires, and ONNX Runtime's CPU provider runs s8 "
           "activations slower than the u8 activations of its own default (see docs/how-it-works/stack.md); its latency "
           "belongs to the Jetson, so no goal is applied here.", ""]
    if mix is not None:
        md += ["## Where the int8 speed-up comes from: one op type at a time (1 thread)", "",
               op_mix.INTRO, ""] + mix
    md += ["## Roofline (int8)", ""]
    md += tables.roofline_table([{"key": p.model.key, "title": p.model.title, "macs": p.macs, "params": p.params}
                                 for p in preps], rows, machine(), threads, list(TARGETS))
    md += ["## Conversion wall time (s)", "", "One child process per conversion, 32 calibration samples; `cached` = "
           "reused from the edgepipe cache (timed on an earlier run). The ONNX Runtime default starts from the fp32 "
           "ONNX edgepipe's tensorrt export wrote, so its time leaves out the Keras -> ONNX export.", ""] + _export_table(preps)
    if cost is not None:
        md += [f"## Pipeline cost: `edgepipe build {EXAMPLE}` (fresh cache)", ""] + tables.pipeline_table(cost)
    return md


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    out = a.out if a.out is not None else (None if a.quick else ROOT / "BENCHMARKS.md")
    timing = QUICK if a.quick else FULL
    ui = _Log()
    t0, load = ui.t0, [os.getloadavg()[0]]
    threads = sorted({1, os.cpu_count() or 1})
    cache = Cache(enabled=not a.no_cache)
    cost = None
    if not a.no_pipeline_cost:
        ui.info(f"pipeline cost: edgepipe build {EXAMPLE} with a fresh cache")
        cost = measure_build()
    rows, preps, mix = _run(a, timing, threads, cache, ui)
    if not cache.enabled:
        shutil.rmtree(cache.root, ignore_errors=True)
    elapsed = time.perf_counter() - t0
    load.append(os.getloadavg()[0])
    md = _header(a.quick, timing, threads, elapsed, load) + ["## Summary", ""] + tables.summary(rows)
    text = "\n".join(md + _sections(rows, preps, mix, threads, cost)).rstrip() + "\n"
    sys.stdout.write(text)
    if a.json is not None:
        a.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "timings": _RAW}, indent=1))
    if out is not None:
        kept = out.read_text().partition(FLOOR_HEADING)[2] if out.exists() else ""  # its own command writes it
        out.write_text(text + (f"\n{FLOOR_HEADING}{kept}" if kept else ""))
        ui.info(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
