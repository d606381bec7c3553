"""report.json (schema 1): written atomically, read back for verify/report, shown as a table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.table import Table

from pipeline import __version__
from pipeline.errors import UsageError
from pipeline.report.metric_keys import from_document, label, to_document
from pipeline.report.schema import SCHEMA, Report, parse_report


def new_report() -> dict[str, Any]:
    return {"schema": SCHEMA, "edgepipe_version": __version__, "passed": False, "budget": {},
            "reference": {}, "stages": [], "eval_set": {}, "versions": {}, "targets": {}}


def finalize(report: dict[str, Any]) -> dict[str, Any]:
    targets = report["targets"].values()
    report["passed"] = bool(targets) and all(t.get("passed") for t in targets)
    return report


def write_report(run_dir: Path, report: dict[str, Any]) -> Path:
    path = run_dir / "report.json"
    tmp = path.with_suffix(".json.tmp")
    doc = Report.model_validate(to_document(report)).to_json()  # typed: a malformed report is a bug, not a file
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_report(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "report.json"
    if not path.is_file():
        raise UsageError(f"{run_dir}: not an edgepipe run directory (no report.json)")
    try:
        report = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not valid JSON ({err})") from None
    parse_report(report, str(path))  # one line naming the first problem of a damaged report
    return from_document(report)


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summary_table(report: dict[str, Any]) -> Table:
    ref = report.get("reference", {})
    name = label(report)
    short = "acc" if name == "accuracy" else name
    table = Table(title=f"edgepipe: reference {name} {_fmt(ref.get('accuracy'), '.4f')}")
    for col in ("target", "device", "precision", "size KB", f"float {short}", f"int8 {short}", "drop", "median ms",
                "p90 ms", "result"):
        table.add_column(col, justify="left" if col in ("target", "device", "result") else "right")
    for name, t in report.get("targets", {}).items():
        lat = t.get("latency_ms") or {}
        size = t.get("size_bytes")
        if t.get("error"):
            result = f"[red]ERROR[/red] {t['error']}"
        elif t.get("passed"):
            result = "[green]PASS[/green]"
        else:
            result = "[red]FAIL[/red] " + "; ".join(t.get("violations", []))
        emulated = t.get("emulated") or {}
        where = str(t.get("device", "-")) + (f" (emulated {emulated.get('cpu_model')})" if emulated else "")
        table.add_row(name, where, str(t.get("precision", "-")),
                      _fmt(None if size is None else size / 1024, ".1f"), _fmt(t.get("float_accuracy"), ".4f"),
                      _fmt(t.get("accuracy"), ".4f"), _fmt(t.get("accuracy_drop"), "+.4f"),
                      _fmt(lat.get("median"), ".3f") + (" emul." if emulated else ""), _fmt(lat.get("p90"), ".3f"),
                      result)
    return table
