"""`edgepipe verify RUN --device D --device D2`: a run's artifacts measured on several devices at once (bench's
fan-out, table, HTML and store), each cell judged against the run's budget. With one device (or none) it is
`edgepipe verify` as always: the report is re-measured and rewritten."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.config import BudgetSection
from pipeline.errors import UsageError
from pipeline.ui import UI


def run_artifacts(run_dir: Path, report: dict[str, Any]) -> list[Path]:
    """The built targets' artifacts, each inside the run directory."""
    out = []
    for t in report["targets"].values():
        if not t.get("artifact"):
            continue
        artifact = (run_dir / t["artifact"]).resolve()
        if not artifact.is_relative_to(run_dir.resolve()):
            raise UsageError(f"{run_dir}: report.json names an artifact outside the run directory")
        if not artifact.is_file():
            raise UsageError(f"{artifact}: artifact listed in report.json is missing")
        out.append(artifact)
    if not out:
        raise UsageError(f"{run_dir}: the run has no built artifact to measure")
    return out


def judge_cells(cells: list[dict[str, Any]], report: dict[str, Any], devices: dict[str, Any]) -> None:
    """Each measured cell against the run's budget: the metric's drop against the reference, the latency only
    where it decides (measured on the target's kind of device, never emulated: device_kind)."""
    from pipeline.measure.budget import Measured, check
    from pipeline.measure.device_kind import informational_reason
    from pipeline.measure.metric import Metric

    budget = BudgetSection(**(report.get("budget") or {}))
    metric = Metric.from_report(report.get("metric"))
    reference = (report.get("reference") or {}).get("accuracy")
    by_artifact = {Path(t["artifact"]).name: (name, t) for name, t in report["targets"].items() if t.get("artifact")}
    for c in cells:
        if c["status"] != "ok":
            continue
        name, entry = by_artifact[c["artifact"]]
        device = devices[c["device"]]
        why = informational_reason(name, device.ssh, c.get("cpu"), bool(entry.get("deploy_on_host")))
        if why:
            c["latency_informational"] = why
        drop = None if reference is None or c.get("accuracy") is None else metric.drop(reference, c["accuracy"])
        c["accuracy_drop"] = drop
        lat = None if why or device.emulated else (c.get("latency_ms") or {}).get("median")
        c["violations"] = check(budget, Measured(drop, lat, None))
        c["passed"] = not c["violations"]
        c["notes"] += c["violations"]


def cmd_verify(args: argparse.Namespace, ui: UI) -> int:
    from pipeline.benchrun.command import exit_code, measure_cells, open_store, show_run, store_run
    from pipeline.benchrun.devices import plan, resolve_devices
    from pipeline.commands import cmd_verify as verify_one
    from pipeline.measure.metric import Metric
    from pipeline.report.document import read_report

    specs = list(dict.fromkeys(args.device or []))
    if len(specs) <= 1:
        args.device = specs[0] if specs else None
        return int(verify_one(args, ui))
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    report = read_report(args.run_dir)
    artifacts = run_artifacts(args.run_dir, report)
    eval_path = (args.run_dir / report["eval_set"]["path"]).resolve()
    devices = resolve_devices(specs, args.remote_python)
    pairs = plan(artifacts, devices)
    store = open_store(args, ui)
    flags: dict[str, int] = {}
    cells = measure_cells(pairs, flags, eval_path, False, args.jobs, ui, Metric.from_report(report.get("metric")).spec)
    judge_cells(cells, report, {d.name: d for d in devices})
    run_id = store_run(store, cells, "verify", ui)
    if args.html is None:
        args.html = args.run_dir / "bench.html"
    show_run(cells, run_id, store, args, ui, f"edgepipe verify {args.run_dir.name}")
    code = exit_code(cells, store is None or run_id is not None)
    return code if all(c.get("passed", True) for c in cells) else 1
