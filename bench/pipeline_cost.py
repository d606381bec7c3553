"""What one `edgepipe build` of the default example costs: wall time per stage and peak memory.

Runs `edgepipe build digits-cnn --out TMP --json` in a child process with a fresh EDGEPIPE_CACHE_DIR (so
nothing is reused). Stage seconds come from report.json (`stages[*].seconds`); the other steps (teacher
training, conversions, verification in the runtimes) from the start/done lines of the run's build.log, nested
tasks left out so that nothing counts twice.
Peak memory is the build's ru_maxrss as wait4 returns it: the largest resident set of the build process or of
any of its waited-for children (the conversion workers); getrusage(RUSAGE_CHILDREN) would report the same
number if the build were the only child this process ever waited for.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "digits-cnn"
_LINE = re.compile(r"^(\S+ \S+) INFO (.+)$")
_TARGETS = ("tflite", "openvino", "tensorrt")


@dataclass
class PipelineCost:
    wall_s: float
    peak_rss_mb: float
    exit_code: int
    stages: list[dict] = field(default_factory=list)  # name, seconds, cached (report.json)
    steps: list[tuple[str, float]] = field(default_factory=list)  # build.log tasks outside stages, grouped
    error: str | None = None


def _events(log: Path) -> list[tuple[float, str]]:
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        m = _LINE.match(line)
        if m:
            out.append((datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), m.group(2)))
    return out


def _group(label: str) -> str:
    """Tasks of one target folded into conversion / variants / verification."""
    head = label.split(":")[0].split()
    if not head or head[0] not in _TARGETS:
        return label
    if "converting" in label:
        return f"{head[0]}: convert + calibrate"
    if "variant" in label:
        return f"{head[0]}: accuracy-aware int8 variants"
    return f"{head[0]}: verify (accuracy, latency)"


def log_steps(log: Path, stages: list[dict]) -> list[tuple[str, float]]:
    """Top-level start/done tasks of build.log outside the stages, grouped, in order of first appearance.

    A stage's window starts at its "stage NAME: running" line and lasts its report.json seconds; tasks inside a
    stage window or inside another task are already counted and are left out."""
    events = _events(log)
    windows = []
    for st in stages:
        t = next((at for at, msg in events if msg.startswith(f"stage {st['name']}: ")), None)
        if t is not None:
            windows.append((t, t + st["seconds"]))
    started: dict[str, float] = {}
    tasks: list[tuple[str, float, float]] = []
    for at, msg in events:
        if msg.startswith("start: "):
            started[msg[7:]] = at
        elif msg.startswith("done: ") and msg[6:] in started:
            tasks.append((msg[6:], started.pop(msg[6:]), at))
    spans = windows + [(a, b) for _, a, b in tasks]
    grouped: dict[str, float] = {}
    for label, a, b in tasks:
        if any(lo <= a and b <= hi and (lo, hi) != (a, b) for lo, hi in spans):
            continue
        key = _group(label)
        grouped[key] = grouped.get(key, 0.0) + (b - a)
    return list(grouped.items())


def _edgepipe() -> list[str]:
    exe = Path(sys.executable).with_name("edgepipe")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]


def measure_build(timeout_s: float = 1800, config: str = EXAMPLE, extra: tuple[str, ...] = ()) -> PipelineCost:
    """`edgepipe build CONFIG` (default: the digits-cnn example) in a child with a fresh cache; `extra` args."""
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-build-") as tmp:
        out, cache = Path(tmp) / "run", Path(tmp) / "cache"
        env = {**os.environ, "EDGEPIPE_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
        log = Path(tmp) / "stderr.txt"
        with log.open("w") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen([*_edgepipe(), "build", config, "--out", str(out), "--json", *extra], cwd=ROOT,
                                    env=env, stdout=subprocess.DEVNULL, stderr=err)
            timer = threading.Timer(timeout_s, proc.kill)
            timer.start()
            _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage, its own children included
            timer.cancel()
            wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        cost = PipelineCost(wall, usage.ru_maxrss / 1024.0, proc.returncode)
        report = out / "report.json"
        if report.exists():
            data = json.loads(report.read_text())
            cost.stages = [{"name": s["name"], "seconds": float(s["seconds"]), "cached": bool(s["cached"])}
                           for s in data.get("stages", [])]
            cost.steps = log_steps(out / "build.log", cost.stages)
        else:
            cost.error = (log.read_text().strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return cost
