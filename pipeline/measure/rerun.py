"""`edgepipe verify`: re-measure a finished run's artifacts (on this host or a device), rewrite its report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import BudgetSection
from pipeline.errors import TargetError, UsageError
from pipeline.measure.device_checks import mark_emulated, record_agreement
from pipeline.measure.metric import Metric
from pipeline.measure.scores import REFERENCE_SCORES_REL, load_scores, metric_entry
from pipeline.measure.verify import (
    Bench,
    Measuring,
    Verifier,
    judge,
    level,
    mark_informational,
    record_where,
    run_measurement,
)
from pipeline.report.document import finalize, read_report, summary_table, write_report
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
        try:
            m = run_measurement(artifact, eval_path, Measuring(bench, ui, TargetName(name), device, metric), name)
        except TargetError as err:  # one target failing on the device does not stop the others
            ui.warn(str(err))
            t.update(error=str(err), passed=False)
            continue
        t.pop("error", None)
        t.update(runtime=m["runtime"], device=m["device"], accuracy=m["accuracy"], latency_ms=m["latency_ms"],
                 latency_samples_ms=m.get("latency_samples_ms", []), peak_memory_kb=m.get("peak_memory_kb"))
        record_where(t, m, device, ui, name)
        mark_emulated(t, device)
        record_agreement(t, m, artifact, eval_path, device, ui, name)
        if m["accuracy"] is not None:
            t["accuracy_drop"] = metric.drop(ref_acc, m["accuracy"])
        v = Verifier(run_dir, budget, bench, ui, TargetName(name), device, metric, bool(t.get("deploy_on_host")))
        mark_informational(t, v, m.get("cpu"))
        t["metric"], _ = metric_entry(metric, reference, m["accuracy"], m.get("per_sample"), level(budget))
        judge(t, budget)
    finalize(report)
    write_report(run_dir, report)
    from pipeline.report.html import render_html

    render_html(report, run_dir)
    ui.console.print(summary_table(report))
    return report
