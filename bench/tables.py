"""Markdown for BENCHMARKS.md: goals, per-target latency tables, roofline, pipeline cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline_cost import PipelineCost

from .system import VNNI_MACS_PER_CYCLE, Machine

TITLES = {
    "tflite": "LiteRT",
    "openvino": "OpenVINO",
    "tensorrt": "TensorRT artifact on ONNX Runtime CPU",
}
SHORT = {"tflite": "LiteRT", "openvino": "OpenVINO", "tensorrt": "ORT (s8 Q/DQ)"}
SPEEDUP_GOAL = {"tflite": 1.9, "openvino": 1.3}  # headline model, one thread
MAX_VS_DEFAULT = 1.05  # edgepipe int8 / toolkit default int8
INFORMATIONAL = {"tensorrt"}


@dataclass
class Row:
    model: str
    title: str
    headline: bool
    target: str
    threads: int
    float_ms: float | None = None
    int8_ms: float | None = None
    default_ms: float | None = None
    speedup: tuple[float, float, float] | None = None  # float / int8: median, 25th, 75th percentile over rounds
    vs_default: tuple[float, float, float] | None = None  # int8 / default, likewise
    runner_ms: float | None = None  # the int8 artifact timed through targets/runner.py's session.run
    runner_ratio: float | None = None  # runner / int8, paired
    fastest: tuple[float, float] | None = None  # float / int8 and int8 / default from each one's fastest round
    error: str | None = None

    def goals(self) -> list[tuple[str, bool]]:
        """(goal text, met) for every goal this row is held to."""
        if self.error or self.target in INFORMATIONAL:
            return []
        out = []
        goal = SPEEDUP_GOAL.get(self.target)
        if goal and self.headline and self.threads == 1:
            out.append((f"speed-up >= {goal}x", self.speedup is not None and self.speedup[0] >= goal))
        out.append((f"<= {MAX_VS_DEFAULT:.2f}x default", self.vs_default is not None and self.vs_default[0] <= MAX_VS_DEFAULT))
        return out

    def result(self) -> str:
        if self.error:
            return "FAIL (error)"
        if self.target in INFORMATIONAL:
            return "INFO (no goal)"
        missed = [g for g, ok in self.goals() if not ok]
        return "PASS" if not missed else "FAIL: " + "; ".join(missed)


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.2f}")


def _x(v: tuple[float, float, float] | None, spread: bool = True) -> str:
    if v is None:
        return "-"
    return f"{v[0]:.2f}x [{v[1]:.2f}-{v[2]:.2f}]" if spread else f"{v[0]:.2f}x"


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{(ratio - 1) * 100:+.0f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def target_table(target: str, rows: list[Row], runtime: str) -> list[str]:
    lines = [f"### {TITLES[target]} ({runtime})", ""]
    header = ["Model", "Threads", "Float ms", "edgepipe int8 ms", "Float / int8", "Default int8 ms",
              "edgepipe / default", "Goals", "Result"]
    body = []
    for r in rows:
        if r.error:
            body.append([r.title, str(r.threads), "-", "-", "-", "-", "-", "-", f"FAIL: {r.error}"])
            continue
        goals = ", ".join(g for g, _ in r.goals()) or "informational"
        body.append([r.title, str(r.threads), _ms(r.float_ms), _ms(r.int8_ms), _x(r.speedup), _ms(r.default_ms),
                     _x(r.vs_default), goals, r.result()])
    lines += _table(header, body) + [""]
    timed = [r for r in rows if r.runner_ms is not None and r.int8_ms]
    if timed:
        lines += ["The int8 .tflite has int8 input and output; it is timed on an input quantized once, outside the "
                  "timed call, as the runner's latency measurement does (`targets/runner.py`, `measure`). Timed "
                  "the way the runner's accuracy pass calls it (`LiteRTSession.run`), quantizing the float input "
                  "(and dequantizing the output) with numpy inside every call, it measures:", ""]
        lines += [f"- {r.title}, {r.threads} thread(s): {_ms(r.runner_ms)} ms via `run` vs {_ms(r.int8_ms)} ms "
                  f"({_pct(r.runner_ratio)} paired)" for r in timed]
        lines.append("")
    return lines


def roofline_table(models: list[dict[str, Any]], rows: list[Row], machine: Machine, thread_counts: list[int],
                   targets: list[str]) -> list[str]:
    """models: key, title, macs, params. A cell: int8 median latency and the share of peak it reaches."""
    by = {(r.model, r.target, r.threads): r for r in rows}
    header = ["Model", "MACs", "Params", "Peak-bound ms (1 core)"]
    header += [f"{SHORT[t]} {n}T" for n in thread_counts for t in targets]
    body = []
    for m in models:
        peak1 = machine.peak_macs_per_s(1)
        cells = [m["title"], f"{m['macs'] / 1e6:.1f} M", f"{m['params'] / 1e6:.2f} M",
                 f"{m['macs'] / peak1 * 1e3:.3f}"]
        for n in thread_counts:
            for t in targets:
                r = by.get((m["key"], t, n))
                if r is None or r.int8_ms is None:
                    cells.append("-")
                    continue
                frac = m["macs"] / (r.int8_ms / 1e3) / machine.peak_macs_per_s(n)
                cells.append(f"{frac * 100:.1f}%")
        body.append(cells)
    note = (f"Peak = {VNNI_MACS_PER_CYCLE} int8 MACs/cycle/core (AVX-512 VNNI, two 512-bit VPDPBUSD per cycle) x "
            f"{machine.mhz:.0f} MHz (`cpu MHz` in /proc/cpuinfo; under a hypervisor this is the nominal/TSC clock, "
            f"turbo is not visible) x threads = {machine.peak_macs_per_s(1) / 1e9:.0f} GMAC/s per core. "
            "A cell is MACs / edgepipe int8 median latency as a share of that peak for the thread count "
            "(ONNX Runtime column: the symmetric s8 TensorRT artifact). MACs: pipeline.metrics.count_macs "
            "(conv, depthwise, dense).")
    return _table(header, body) + ["", note, ""]


def pipeline_table(cost: PipelineCost) -> list[str]:
    if cost.error:
        return [f"Build failed (exit {cost.exit_code}): {cost.error}", ""]
    body = [[f"stage `{s['name']}` (report.json)", f"{s['seconds']:.1f}", "yes" if s["cached"] else "no"]
            for s in cost.stages]
    body += [[label, f"{sec:.1f}", ""] for label, sec in cost.steps]
    accounted = sum(s["seconds"] for s in cost.stages) + sum(sec for _, sec in cost.steps)
    body.append(["other (start-up, imports, loading, saving, report)", f"{max(0.0, cost.wall_s - accounted):.1f}", ""])
    body.append(["**total wall time**", f"**{cost.wall_s:.1f}**", ""])
    lines = _table(["Step", "Seconds", "Cached"], body)
    lines += ["", f"Peak memory (largest resident set of the build or any conversion worker): "
              f"**{cost.peak_rss_mb:.0f} MiB**; exit code {cost.exit_code}.", ""]
    return lines


def _fastest(r: Row) -> str:
    if r.fastest is None:
        return ""
    return (f" (informative, not judged: from each artifact's fastest round, the least disturbed by other work, "
            f"{r.fastest[0]:.2f}x and {r.fastest[1]:.2f}x)")


def summary(rows: list[Row]) -> list[str]:
    judged = [r for r in rows if r.error or r.target not in INFORMATIONAL]
    failed = [r for r in judged if r.result() != "PASS"]
    head = [r for r in rows if r.headline and r.threads == 1 and r.target in SPEEDUP_GOAL]
    lines = [f"**Overall: {'PASS' if not failed else 'FAIL'}** ({len(judged) - len(failed)} of {len(judged)} "
             "judged rows pass; TensorRT rows are informational)."]
    for r in head:
        lines.append(f"- {r.title}, 1 thread, {TITLES[r.target]}: int8 {_x(r.speedup, False)} faster than float "
                     f"(goal {SPEEDUP_GOAL[r.target]}x), {_x(r.vs_default, False)} the default int8's latency "
                     f"-> {r.result()}" + _fastest(r))
    for r in failed:
        if r not in head:
            lines.append(f"- {TITLES[r.target]}, {r.title}, {r.threads} thread(s): {r.result()}")
    return lines + [""]
