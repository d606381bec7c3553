"""Verification: run an artifact in its own runtime on the verifying device; accuracy, latency, size."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from pipeline.config import BudgetSection
from pipeline.errors import EdgepipeError, TargetError
from pipeline.measure.budget import Measured, check
from pipeline.measure.device_checks import mark_emulated, record_agreement
from pipeline.measure.metric import ACCURACY, Metric
from pipeline.ui import UI
from targets import artifact_files, runner
from targets.base import TargetName

HOST = "host"


@dataclass(frozen=True)
class Bench:
    warmup: int = 10
    iterations: int = 100
    threads: int = 1

    def overridden(self, explicit: dict[str, int]) -> Bench:
        """These settings with those given explicitly (a CLI flag, a config key) in their place."""
        names = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in explicit.items() if k in names})


def uses_tensorrt(device: Any, target: TargetName) -> bool:
    """An artifact of the tensorrt target on a TensorRT device (a Jetson) is built into an engine and
    measured with TensorRT there; anything else runs in its own runtime."""
    return device is not None and bool(device.tensorrt) and target is TargetName.TENSORRT


def artifact_size(path: Path) -> int:
    """Bytes on disk of every file of the artifact (an OpenVINO .xml with its .bin)."""
    return sum(f.stat().st_size for f in artifact_files(path))


def run_on_host(artifact: Path, eval_path: Path | None, bench: Bench, ui: UI, label: str,
                metric: Metric = ACCURACY) -> dict[str, Any]:
    """The device runner's measurement (runner.run), in this process, with progress bars."""
    def progress(what: str, total: int | None = None) -> Any:
        return ui.task(f"{label}: {what}", total=total)

    out = runner.run(artifact, eval_path, bench.warmup, bench.iterations, bench.threads, progress=progress,
                     metric=metric.spec)
    return {**out, "device": HOST}


def run_measurement(artifact: Path, eval_path: Path | None, bench: Bench, ui: UI, label: str,
                    device: Any = None, *, target: TargetName, metric: Metric = ACCURACY) -> dict[str, Any]:
    """On the host, or on an SSH device (`device` is a targets.ssh.SshDevice). `target` is the target the
    artifact belongs to; `label` only names the measurement in progress lines and errors."""
    if device is None:
        try:
            return run_on_host(artifact, eval_path, bench, ui, label, metric)
        except EdgepipeError:
            raise
        except Exception as err:  # the runtime failed on this artifact: that target fails, the others go on
            raise TargetError(f"{label}: {artifact.name} failed in its runtime: {type(err).__name__}: {err}") from err
    from targets.ssh import run_remote

    with ui.task(f"{label}: measuring on {device.url}"):
        return run_remote(device, artifact, eval_path, warmup=bench.warmup, iterations=bench.iterations,
                          threads=bench.threads, tensorrt=uses_tensorrt(device, target), metric=metric.spec)


def target_entry(run_dir: Path, rel_artifact: str, rel_float: str | None, eval_rel: str,
                 reference_accuracy: float, float_accuracy: float | None, budget: BudgetSection,
                 bench: Bench, ui: UI, target: TargetName, device: Any = None,
                 metric: Metric = ACCURACY, precision: str = "int8") -> dict[str, Any]:
    """Measure the artifact (int8, or the target's `precision`) and its float twin for the latency gate; the
    report's target entry. Its "accuracy" keys hold the task's metric (report.document names them)."""
    eval_path, label = run_dir / eval_rel, target.value
    m = run_measurement(run_dir / rel_artifact, eval_path, bench, ui, label, device, target=target, metric=metric)
    entry: dict[str, Any] = {
        "artifact": rel_artifact, "precision": precision, "runtime": m["runtime"], "device": m["device"],
        "size_bytes": artifact_size(run_dir / rel_artifact), "float_accuracy": float_accuracy,
        "accuracy": m["accuracy"], "accuracy_drop": None, "float_layers": [],
        "latency_ms": m["latency_ms"], "latency_samples_ms": m.get("latency_samples_ms", []),
        "peak_memory_kb": m.get("peak_memory_kb"), "notes": [],
    }
    record_where(entry, m, device, ui, label)
    mark_emulated(entry, device)
    record_agreement(entry, m, run_dir / rel_artifact, eval_path, device, ui, label)
    if m["accuracy"] is not None:
        entry["accuracy_drop"] = metric.drop(reference_accuracy, m["accuracy"])
    emulated = device is not None and device.emulated is not None  # no latency gate on emulated latency
    if rel_float is not None and not (device is not None and device.tensorrt) and not emulated:
        fm = run_measurement(run_dir / rel_float, None, bench, ui, f"{label} float", device, target=target)
        entry["float_artifact"] = rel_float
        entry["float_latency_ms"] = fm["latency_ms"]
        speedup = fm["latency_ms"]["median"] / max(m["latency_ms"]["median"], 1e-9)
        entry["int8_speedup" if precision == "int8" else "speedup_vs_float"] = round(speedup, 3)
        if speedup <= 1.0:
            entry["notes"].append(f"{precision} is not faster than float on {m['device']} "
                                  f"({m['latency_ms']['median']:.3f} vs {fm['latency_ms']['median']:.3f} ms)")
    if rel_float is not None:
        check_outputs(entry, run_dir / rel_artifact, run_dir / rel_float, eval_path, bench, ui, label)
    judge(entry, budget)
    return entry


def check_outputs(entry: dict[str, Any], artifact: Path, float_artifact: Path, eval_path: Path, bench: Bench,
                   ui: UI, label: str) -> None:
    """Models with several outputs: entry["outputs"], each output against the float twin (outputs_check)."""
    from pipeline.measure import outputs_check

    try:
        with ui.task(f"{label}: every output against the float twin"):
            checks = outputs_check.output_checks(artifact, float_artifact, eval_path, bench.threads)
    except Exception as err:  # the runtime failed on this artifact: that target fails, the others go on
        raise TargetError(f"{label}: checking every output failed: {type(err).__name__}: {err}") from err
    if checks is not None:
        entry["outputs"] = checks
        entry["notes"].append(outputs_check.note(checks))


def record_where(entry: dict[str, Any], m: dict[str, Any], device: Any, ui: UI, label: str) -> None:
    """How accuracy was computed and which CPU measured; a note and a warning when that CPU is not the
    one the device profile declares (the numbers are then that CPU's, not the device's)."""
    if m.get("evaluation"):
        entry["evaluation"] = m["evaluation"]
    if m.get("evaluation_batch"):  # samples per runtime call the metric was computed with (1: as deployed)
        entry["evaluation_batch"] = m["evaluation_batch"]
    entry["cpu"] = m.get("cpu")
    expected = None if device is None else getattr(device, "expected_cpu", None)
    other_cpu = None if expected is None else expected.mismatch(m.get("cpu"))
    notes = [n for n in entry.get("notes", []) if not n.startswith("accuracy and latency were measured on ")]
    if other_cpu:
        notes.append(other_cpu)
        ui.warn(f"{label}: {other_cpu}")
    entry["notes"] = notes


def judge(entry: dict[str, Any], budget: BudgetSection) -> None:
    """Violations of the budget; emulated latency (not the board's) is never checked against max_latency_ms."""
    lat = None if entry.get("emulated") else (entry.get("latency_ms") or {}).get("median")
    entry["violations"] = check(budget, Measured(entry.get("accuracy_drop"), lat, entry.get("size_bytes")))
    entry["passed"] = not entry["violations"] and not entry.get("error")


def warn_if_int8_slower(entry: dict[str, Any], label: str, ui: UI) -> None:
    """The latency gate's warning, on by default: the verifying device measured the int8 artifact no faster
    than its float twin. Both medians are named and `ship_faster_float = true` is offered."""
    speedup, float_ms = entry.get("int8_speedup"), (entry.get("float_latency_ms") or {}).get("median")
    if speedup is None or speedup > 1.0 or float_ms is None or entry.get("precision") != "int8":
        return
    int8_ms = float((entry.get("latency_ms") or {}).get("median", float("nan")))
    ui.warn(f"{label}: int8 is not faster than float on {entry.get('device')}: int8 median {int8_ms:.3f} ms vs float "
            f"median {float_ms:.3f} ms ({speedup:.2f}x); set ship_faster_float = true under [targets.{label}] to "
            "ship the float artifact when it measures faster")


def ship_float_if_faster(entry: dict[str, Any], run_dir: Path, eval_rel: str, reference_accuracy: float,
                         budget: BudgetSection, bench: Bench, ui: UI, target: TargetName, device: Any = None,
                         metric: Metric = ACCURACY) -> None:
    """The latency gate (`ship_faster_float = true`): when the float twin ran faster than the int8 artifact,
    the entry ships the float artifact instead, re-measured (accuracy too) and judged again."""
    rel_float = entry.get("float_artifact")
    if entry.get("emulated") or rel_float is None or entry.get("int8_speedup") is None or entry["int8_speedup"] > 1.0:
        return
    int8: dict[str, Any] = {k: entry.get(k) for k in ("artifact", "accuracy", "accuracy_drop", "latency_ms",
                                                       "size_bytes")}
    int8_ms, label = float((entry.get("latency_ms") or {}).get("median", float("nan"))), target.value
    m = run_measurement(run_dir / rel_float, run_dir / eval_rel, bench, ui, f"{label} float", device, target=target,
                        metric=metric)
    entry.update(artifact=rel_float, precision="float32", runtime=m["runtime"], device=m["device"],
                 size_bytes=artifact_size(run_dir / rel_float), accuracy=m["accuracy"],
                 latency_ms=m["latency_ms"], latency_samples_ms=m.get("latency_samples_ms", []),
                 peak_memory_kb=m.get("peak_memory_kb"), int8=int8)
    if m["accuracy"] is not None:
        entry["accuracy_drop"] = metric.drop(reference_accuracy, m["accuracy"])
    msg = (f"{label}: shipping the float artifact {rel_float}: int8 ({int8_ms:.3f} ms) is not "
           f"faster than float ({m['latency_ms']['median']:.3f} ms) on {m['device']} (ship_faster_float = true)")
    entry["notes"].append(msg)
    ui.warn(msg)
    judge(entry, budget)
