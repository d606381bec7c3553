"""One cell of a benchmark run: an artifact measured on a device by targets/runner_bench.py in a fresh process
(on this host a child process, on a board over SSH), and what the run's table, JSON and store keep of it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.benchrun.devices import BenchDevice
from pipeline.errors import TargetError
from pipeline.measure.speedup import noisy_note
from pipeline.measure.verify import Bench, uses_tensorrt
from targets import artifact_files, runner_bench, target_of_artifact

RUNNER_BENCH = Path(runner_bench.__file__).resolve()  # run as a script: what a device runs, in a fresh process
EMULATED_MEMORY = "peak memory under emulation includes QEMU's own (the process is qemu-aarch64 running Python)"
# runner output -> cell, as measured
_KEPT = ("runtime", "cpu", "cold_start", "latency_ms", "latency_samples_ms", "peak_memory_kb", "accuracy", "samples",
         "per_sample", "evaluation", "evaluation_batch", "profile")


def artifact_digest(path: Path) -> str:
    """SHA-256 of the artifact's content: every file of it (an OpenVINO .xml and its .bin), in order."""
    h = hashlib.sha256()
    for f in artifact_files(path):
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def new_cell(artifact: Path, device: BenchDevice, settings: Bench, digests: dict[Path, str]) -> dict[str, Any]:
    target = target_of_artifact(artifact)
    return {"artifact": artifact.name, "path": str(artifact), "artifact_sha256": digests[artifact],
            "target": target.value if target else None, "device": device.name, "device_url": device.url,
            "measured_on": device.measured_on, "where": device.where(), "threads": settings.threads,
            "warmup": settings.warmup, "iterations": settings.iterations, "status": "pending", "error": None,
            "notes": []}


def runner_args(settings: Bench, eval_arg: Any, profile: bool, tensorrt: bool, metric: str) -> list[str]:
    args = ["--warmup", str(settings.warmup), "--iterations", str(settings.iterations),
            "--threads", str(settings.threads)]
    args += ["--eval", eval_arg] if eval_arg is not None else []
    args += ["--metric", metric] if metric != "accuracy" else []
    return args + (["--profile"] if profile else []) + (["--tensorrt"] if tensorrt else [])


def run_here(args: list[str], label: str) -> dict[str, Any]:
    """runner_bench.py in a child process of this host's Python: a cold start of its own, its own peak memory."""
    done = subprocess.run([sys.executable, str(RUNNER_BENCH), *args], capture_output=True, text=True)
    line = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")), None)
    try:
        out = json.loads(line) if line else None
    except json.JSONDecodeError:
        out = None
    if isinstance(out, dict) and "error" in out:
        raise TargetError(f"{label} failed in its runtime: {' '.join(str(out['error']).split())}")
    if done.returncode != 0 or not isinstance(out, dict):
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise TargetError(f"{label}: the runner exited with {done.returncode}: {tail}")
    out["device"] = "host"
    return out


def measure(artifact: Path, device: BenchDevice, settings: Bench, eval_path: Path | None,
            profile: bool, metric: str = "accuracy") -> dict[str, Any]:
    """The runner's JSON object for one cell: on this host or on the device."""
    target = target_of_artifact(artifact)
    assert target is not None
    tensorrt = uses_tensorrt(device.ssh, target)
    if device.ssh is None:
        eval_arg = None if eval_path is None else str(eval_path)
        args = [str(artifact), *runner_args(settings, eval_arg, profile, False, metric)]
        return run_here(args, artifact.name)
    from targets.ssh import InRemoteDir, check_settings, files_to_copy, run_runner

    check_settings(settings)
    files, names = files_to_copy([artifact], eval_path, tensorrt)
    eval_arg = None if eval_path is None else InRemoteDir("eval.npz")
    return run_runner(device.ssh, "runner_bench.py", files,
                      [InRemoteDir(names[0]), *runner_args(settings, eval_arg, profile, tensorrt, metric)])


def fill(cell: dict[str, Any], out: dict[str, Any], device: BenchDevice) -> None:
    """The measured cell: the runner's numbers, and notes on where they come from."""
    from pipeline.benchrun.profile import summarize

    cell.update({k: out[k] for k in _KEPT if k in out}, status="ok")
    cell["runtime_name"], _, cell["runtime_version"] = str(out.get("runtime", "")).partition(" ")
    if device.emulated:
        cell["emulated"] = device.ssh.emulated.report()
        cell["latency_ms"] = {**cell["latency_ms"], "emulated": True}
        cell["notes"].append(f"latency measured under emulation ({device.ssh.emulated.describe()}): not a board's")
        cell["notes"].append(EMULATED_MEMORY)
    expected = None if device.ssh is None else getattr(device.ssh, "expected_cpu", None)
    other = None if expected is None else expected.mismatch(out.get("cpu"))
    if other:
        cell["notes"].append(other)
    noisy = noisy_note(cell["latency_ms"])
    if noisy:
        cell["notes"].append(noisy)
    if cell.get("profile"):
        summarize(cell)


def fail(cell: dict[str, Any], err: BaseException, skipped: bool) -> None:
    line = " ".join(str(err).split()) or type(err).__name__
    cell.update(status="failed", error=line + (" (not tried: the device failed before)" if skipped else ""))


def legacy_document(cell: dict[str, Any]) -> dict[str, Any]:
    """`edgepipe bench ARTIFACT --json` as it always was (runtime, accuracy, samples, latency_ms, peak_memory_kb,
    cpu, device, evaluation, emulated), plus cold_start, the artifact's hash, where it was measured and notes."""
    doc: dict[str, Any] = {k: cell[k] for k in ("runtime", "accuracy", "samples", "latency_ms", "peak_memory_kb", "cpu",
                                "evaluation", "evaluation_batch", "emulated", "cold_start", "profile") if k in cell}
    doc.update(device=cell["device_url"], device_name=cell["device"], measured_on=cell["measured_on"],
               artifact_sha256=cell["artifact_sha256"], threads=cell["threads"], notes=cell["notes"])
    for k in ("run_id", "result_id"):
        if k in cell:
            doc[k] = cell[k]
    return doc
