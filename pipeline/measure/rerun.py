"""`edgepipe verify`: re-measure a finished run's artifacts (on this host or a device), rewrite its report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import BudgetSection
from pipeline.errors import TargetError, UsageError
from pipeline.measure.device_checks import mark_emulated, record_agreement
from pipeline.measure.metric import Metric
from pipeline.measure.scores import REFERENCE_SCORES_REL, Scores, load_scores, metric_entry
from pipeline.measure.verify import (
    Bench,
    Measuring,
    Verifier,
    judge,
    latency_stats,
    level,
    mark_informational,
    record_where,
    run_measurement,
)
from pipeline.report.document import finalize, read_report, summary_table, write_report
from pipeline.report.schema import TargetEntry, unset
from pipeline.ui import UI
from targets import TargetName


def verify_run(run_dir: Path, device: Any, ui: UI, profile: Bench | None = None,
               device_targets: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Measure each built target again, with the device profile's settings when one was named, else with
    the settings the report recorded. A device that runs only some targets (`device_targets`, e.g. an
    emulated one: tflite) measures those; the others keep their entries."""
    report = read_report(run_dir)
    budget = BudgetSection(**(report.get("budget") or {}))
    ref_acc = report["reference"]["accuracy"]
    metric = Metric.from_report(report.get("metric"))
    eval_path = run_dir / report["eval_set"]["path"]
    reference = load_scores(run_dir / REFERENCE_SCORES_REL)
    for name, t in report["targets"].items():
        if not t.get("artifact"):  # never built; a target whose last measurement failed is measured again
            continue
        if device_targets is not None and name not in device_targets:
            ui.info(f"{name}: not measured again (the device runs {', '.join(device_targets)})")
            continue
        artifact = (run_dir / t["artifact"]).resolve()
        if not artifact.is_relative_to(run_dir.resolve()):
            raise UsageError(f"{run_dir}: report.json names an artifact outside the run directory")
        if not artifact.is_file():
            raise UsageError(f"{artifact}: artifact listed in report.json is missing")
        lat = t.get("latency_ms") or {}
        bench = profile or Bench(int(lat.get("warmup", 10)), int(lat.get("iterations", 100)),
                                 int(lat.get("threads", 1)))
        entry = TargetEntry.model_validate(t)  # typed while measured again; the report's dict form once done
        try:
            m = run_measurement(artifact, eval_path, Measuring(bench, ui, TargetName(name), device, metric), name)
        except TargetError as err:  # one target failing on the device does not stop the others
            ui.warn(str(err))
            report["targets"][name] = entry.model_copy(update={"error": str(err), "passed": False}).as_dict()
            continue
        v = Verifier(run_dir, budget, bench, ui, TargetName(name), device, metric, bool(entry.deploy_on_host))
        report["targets"][name] = _measured_again(entry, m, v, ref_acc, artifact, eval_path, reference).as_dict()
    finalize(report)
    write_report(run_dir, report)
    from pipeline.report.html import render_html

    render_html(report, run_dir)
    ui.console.print(summary_table(report))
    return report


def _measured_again(entry: TargetEntry, m: dict[str, Any], v: Verifier, ref_acc: float, artifact: Path,
                    eval_path: Path, reference: Scores | None) -> TargetEntry:
    """The entry with measurement `m` of `artifact` on `eval_path` in place of its last one, judged again (the
    drop's paired interval against `reference`, the reference's scores, where the run saved them)."""
    entry = unset(entry, "error").model_copy(update={
        "runtime": m["runtime"], "device": m["device"], "accuracy": m["accuracy"],
        "latency_ms": latency_stats(m["latency_ms"]), "latency_samples_ms": m.get("latency_samples_ms", []),
        "peak_memory_kb": m.get("peak_memory_kb")})
    entry = record_where(entry, m, v.device, v.ui, v.target.value)
    entry = mark_emulated(entry, v.device)
    entry = record_agreement(entry, m, artifact, eval_path, v.device, v.ui, v.target.value)
    if m["accuracy"] is not None:
        entry = entry.model_copy(update={"accuracy_drop": v.metric.drop(ref_acc, m["accuracy"])})
    entry = mark_informational(entry, v, m.get("cpu"))
    metric, _ = metric_entry(v.metric, reference, m["accuracy"], m.get("per_sample"), level(v.budget))
    return judge(entry.model_copy(update={"metric": metric}), v.budget)
