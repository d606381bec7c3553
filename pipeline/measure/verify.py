"""Verification: run an artifact in its own runtime on the verifying device; accuracy, latency, size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import BudgetSection
from pipeline.errors import EdgepipeError, TargetError
from pipeline.measure.budget import Measured, check
from pipeline.measure.device_checks import mark_emulated, record_agreement
from pipeline.measure.metric import ACCURACY, Metric
from pipeline.measure.scores import LEVEL, Scores, metric_entry
from pipeline.measure.speedup import Speedup, Verdict, interleaved_samples, noisy_note, ratio_interval
from pipeline.report.schema import LatencyStats, OutputCheck, TargetEntry, unset
from pipeline.ui import UI
from targets import artifact_files, runner
from targets.base import TargetName
from targets.runner_settings import Bench  # the runner's settings, imported from here by the pipeline

HOST = "host"


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

    return {**runner.run(artifact, eval_path, bench, progress=progress, metric=metric.spec), "device": HOST}


@dataclass(frozen=True)
class Measuring:
    """How and where an artifact of `target` is measured: the runner's settings, the progress UI, the device
    (None: this host; else a targets.ssh.SshDevice) and the task's metric."""

    bench: Bench
    ui: UI
    target: TargetName
    device: Any = None
    metric: Metric = ACCURACY


def run_measurement(artifact: Path, eval_path: Path | None, how: Measuring, label: str) -> dict[str, Any]:
    """On the host, or on an SSH device, as `how` says; `label` only names the measurement in progress lines
    and errors."""
    device = how.device
    if device is None:
        try:
            return run_on_host(artifact, eval_path, how.bench, how.ui, label, how.metric)
        except EdgepipeError:
            raise
        except Exception as err:  # the runtime failed on this artifact: that target fails, the others go on
            raise TargetError(f"{label}: {artifact.name} failed in its runtime: {type(err).__name__}: {err}") from err
    from targets.ssh import run_remote

    with how.ui.task(f"{label}: measuring on {device.url}"):
        return run_remote(device, artifact, eval_path, how.bench, tensorrt=uses_tensorrt(device, how.target),
                          metric=how.metric.spec)


@dataclass(frozen=True)
class Verifier:
    """What every measurement of one target in a run shares: where, how, against which budget."""

    run_dir: Path
    budget: BudgetSection
    bench: Bench
    ui: UI
    target: TargetName
    device: Any = None  # None: this host; else a targets.ssh.SshDevice
    metric: Metric = ACCURACY
    deploy_on_host: bool = False  # [targets.X] deploy_on_host: this host's latency counts (device_kind)

    @property
    def measuring(self) -> Measuring:
        return Measuring(self.bench, self.ui, self.target, self.device, self.metric)


def target_entry(v: Verifier, rel_artifact: str, rel_float: str | None, eval_rel: str,
                 reference: Scores | float, float_accuracy: float | None,
                 precision: str = "int8") -> TargetEntry:
    """Measure the artifact (int8, or the target's `precision`) on `eval_rel` and its float twin's latency; the
    report's target entry. "accuracy" keys hold the metric's value for accuracy only: `metric` names it, with
    the drop against `reference` (Scores: with its paired interval) on the same samples."""
    eval_path, label, device = v.run_dir / eval_rel, v.target.value, v.device
    m = run_measurement(v.run_dir / rel_artifact, eval_path, v.measuring, label)
    ref_value = reference.value if isinstance(reference, Scores) else reference
    entry = TargetEntry(
        artifact=rel_artifact, precision=precision, runtime=m["runtime"], device=m["device"],
        size_bytes=artifact_size(v.run_dir / rel_artifact), float_accuracy=float_accuracy,
        accuracy=m["accuracy"], accuracy_drop=None, float_layers=[],
        latency_ms=m["latency_ms"], latency_samples_ms=m.get("latency_samples_ms", []),
        peak_memory_kb=m.get("peak_memory_kb"), notes=[],
    )
    entry = record_where(entry, m, device, v.ui, label)
    entry = mark_emulated(entry, device)
    entry = mark_informational(entry, v, m.get("cpu"))
    entry = record_agreement(entry, m, v.run_dir / rel_artifact, eval_path, device, v.ui, label)
    drop = None if m["accuracy"] is None else v.metric.drop(ref_value, m["accuracy"])
    metric, _ = metric_entry(v.metric, reference if isinstance(reference, Scores) else None,
                             m["accuracy"], m.get("per_sample"), level(v.budget))
    if metric.drop is None and drop is not None:
        metric = metric.model_copy(update={"drop": drop})
    entry = entry.model_copy(update={"accuracy_drop": drop, "metric": metric})
    emulated = device is not None and device.emulated is not None
    if rel_float is not None and not (device is not None and device.tensorrt) and not emulated:
        entry = _with_speedup(entry, v, rel_float, m)
    noisy = noisy_note(entry.latency_ms.as_dict()) if entry.latency_ms is not None else None
    if noisy:
        entry = entry.noted(noisy)
    if rel_float is not None:
        entry = check_outputs(entry, v.run_dir / rel_artifact, v.run_dir / rel_float, eval_path, v.bench, v.ui,
                              label)
    return judge(entry, v.budget)


def _with_speedup(entry: TargetEntry, v: Verifier, rel_float: str, m: dict[str, Any]) -> TargetEntry:
    """The float twin's latency, the speed-up against it, and a note when the artifact is measurably slower."""
    assert entry.artifact is not None
    sp, float_latency = speedup_of(v, v.run_dir / entry.artifact, v.run_dir / rel_float, m)
    key = "int8_speedup" if entry.precision == "int8" else "speedup_vs_float"
    entry = entry.model_copy(update={"float_artifact": rel_float, "float_latency_ms": latency_stats(float_latency),
                                     key: round(sp.ratio, 3), "speedup": sp.to_report()})
    if sp.verdict is Verdict.SLOWER and not entry.latency_informational:
        entry = entry.noted(f"{entry.precision} is slower than float on {m['device']} ({sp.ratio:.2f}x, 95% "
                            f"interval {sp.lo:.2f}-{sp.hi:.2f}x)")
    return entry


def latency_stats(latency: dict[str, Any] | LatencyStats | None) -> LatencyStats | None:
    """A measurement's `latency_ms` as the report's type."""
    return latency if latency is None or isinstance(latency, LatencyStats) else LatencyStats.model_validate(latency)


def speedup_of(v: Verifier, artifact: Path, float_artifact: Path, m: dict[str, Any]) -> tuple[Speedup, Any]:
    """int8 against its float twin: on this host both timed in interleaved rounds in one process; on a device,
    the float twin timed after the artifact (not interleaved). The speed-up and the float twin's latency."""
    if v.device is None:
        q, f = interleaved_samples(artifact, float_artifact, v.bench.warmup, v.bench.iterations, v.bench.threads)
        return ratio_interval(f, q, interleaved=True), runner.latency_stats(f, v.bench.warmup, v.bench.threads)
    fm = run_measurement(float_artifact, None, v.measuring, f"{v.target.value} float")  # latency only
    sp = ratio_interval(fm.get("latency_samples_ms") or [fm["latency_ms"]["median"]],
                        m.get("latency_samples_ms") or [m["latency_ms"]["median"]], interleaved=False)
    return sp, fm["latency_ms"]


def level(budget: BudgetSection) -> float:
    """The level the drop's interval is reported at: [budget] confidence, else 95%."""
    return budget.confidence if budget.confidence is not None else LEVEL


def mark_informational(entry: TargetEntry, v: Verifier, cpu: dict[str, Any] | None) -> TargetEntry:
    """`latency_informational` (why) when the latency was not measured on the target's kind of device: it is
    then never judged (pipeline.measure.device_kind)."""
    from pipeline.measure.device_kind import informational_reason

    entry = unset(entry, "latency_informational")
    why = informational_reason(v.target, v.device, cpu, v.deploy_on_host)
    update: dict[str, Any] = {"deploy_on_host": True} if v.deploy_on_host else {}
    lat = entry.latency_ms
    if why is not None:
        update["latency_informational"] = why
        if lat is not None:
            update["latency_ms"] = lat.model_copy(update={"informational": True})
    elif lat is not None:
        update["latency_ms"] = unset(lat, "informational")
    return entry.model_copy(update=update)


def check_outputs(entry: TargetEntry, artifact: Path, float_artifact: Path, eval_path: Path, bench: Bench,
                  ui: UI, label: str) -> TargetEntry:
    """Models with several outputs: the entry's `outputs`, each output against the float twin (outputs_check)."""
    from pipeline.measure import outputs_check

    try:
        with ui.task(f"{label}: every output against the float twin"):
            checks = outputs_check.output_checks(artifact, float_artifact, eval_path, bench.threads)
    except Exception as err:  # the runtime failed on this artifact: that target fails, the others go on
        raise TargetError(f"{label}: checking every output failed: {type(err).__name__}: {err}") from err
    if checks is None:
        return entry
    outputs = {name: OutputCheck.model_validate(c) for name, c in checks.items()}
    return entry.model_copy(update={"outputs": outputs}).noted(outputs_check.note(checks))


def record_where(entry: TargetEntry, m: dict[str, Any], device: Any, ui: UI, label: str) -> TargetEntry:
    """How accuracy was computed and which CPU measured; a note and a warning when that CPU is not the
    one the device profile declares (the numbers are then that CPU's, not the device's)."""
    update: dict[str, Any] = {}
    if m.get("evaluation"):
        update["evaluation"] = m["evaluation"]
    if m.get("evaluation_batch"):  # samples per runtime call the metric was computed with (1: as deployed)
        update["evaluation_batch"] = m["evaluation_batch"]
    update["cpu"] = m.get("cpu")
    update["device_name"] = HOST if device is None else (getattr(device, "name", None) or device.url)  # the user's
    expected = None if device is None else getattr(device, "expected_cpu", None)
    other_cpu = None if expected is None else expected.mismatch(m.get("cpu"))
    notes = [n for n in entry.notes if not n.startswith("accuracy and latency were measured on ")]
    if other_cpu:
        notes.append(other_cpu)
        ui.warn(f"{label}: {other_cpu}")
    return entry.model_copy(update={**update, "notes": notes})


def judge(entry: TargetEntry, budget: BudgetSection) -> TargetEntry:
    """Violations of the budget. A latency not measured on the target's kind of device (emulated, or
    `latency_informational`) is never checked against max_latency_ms. The drop passes on its point estimate,
    marked `uncertain` when its interval holds the budget; with [budget] confidence, its interval's upper
    bound must be within the budget."""
    informational = entry.emulated or entry.latency_informational
    lat = None if informational or entry.latency_ms is None else entry.latency_ms.median
    m = entry.metric if entry.metric is not None and entry.metric.model_fields_set else None  # {}: none
    iv, limit = None if m is None else m.interval, _drop_budget(budget)
    bound = iv is not None and budget.confidence is not None
    drop = None if bound else entry.accuracy_drop
    violations = check(budget, Measured(drop, lat, entry.size_bytes))
    if bound and iv is not None and limit is not None and iv[1] > limit + 1e-9:
        violations.insert(0, f"the drop's {budget.confidence:.0%} interval reaches {iv[1]:.4f} > "
                             f"{limit} (point estimate {entry.accuracy_drop}; [budget] confidence)")
    update: dict[str, Any] = {"violations": violations}
    if m is not None:
        uncertain = bool(iv is not None and limit is not None and iv[0] <= limit <= iv[1])
        update.update(metric=m.model_copy(update={"uncertain": uncertain}), uncertain=uncertain)
    update["passed"] = not violations and not entry.error
    return entry.model_copy(update=update)


def _drop_budget(budget: BudgetSection) -> float | None:
    return budget.max_accuracy_drop if budget.max_accuracy_drop is not None else budget.max_metric_drop


def _interval(entry: TargetEntry) -> str:
    iv = entry.speedup.interval if entry.speedup is not None else None
    return f", 95% interval {iv[0]:.2f}-{iv[1]:.2f}x" if iv else ""


def warn_if_int8_slower(entry: TargetEntry, label: str, ui: UI) -> None:
    """The latency gate's warning, on by default: the verifying device measured the int8 artifact no faster
    than its float twin. Both medians are named and `ship_faster_float = true` is offered."""
    speedup, float_ms = entry.int8_speedup, entry.float_latency_ms.median if entry.float_latency_ms else None
    if speedup is None or speedup > 1.0 or float_ms is None or entry.precision != "int8":
        return
    sp = entry.speedup
    if sp is not None and (sp.verdict or Verdict.SLOWER.value) != Verdict.SLOWER.value:
        # the interval holds 1.0: no measurable difference, nothing to warn of
        iv = sp.interval or [float("nan"), float("nan")]
        ui.info(f"{label}: int8 and float: no measurable difference in latency ({sp.ratio:.2f}x, "
                f"95% interval {iv[0]:.2f}-{iv[1]:.2f}x)")
        return
    int8_ms = float(entry.latency_ms.median if entry.latency_ms is not None else float("nan"))
    if entry.latency_informational or entry.emulated:  # not the target's kind of device: no advice
        ui.info(f"{label}: int8 ran no faster than float here ({int8_ms:.3f} vs {float_ms:.3f} ms), a latency that "
                f"does not decide: {entry.latency_informational or 'emulated'}")
        return
    ui.warn(f"{label}: int8 is not faster than float on {entry.device}: int8 median {int8_ms:.3f} ms vs float "
            f"median {float_ms:.3f} ms ({speedup:.2f}x{_interval(entry)}); set ship_faster_float = true under [targets.{label}] to "
            "ship the float artifact when it measures faster")
