"""report.json (schema 1): written atomically, read back for verify/report, shown as a table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.markup import escape
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


def _metric(t: dict[str, Any]) -> dict[str, Any]:
    """The target's `metric` entry (its drop's interval on the test split); {} in reports without one."""
    m = t.get("metric")
    return m if isinstance(m, dict) else {}


def _interval(m: dict[str, Any]) -> tuple[float, float] | None:
    iv = m.get("interval")
    if isinstance(iv, (list, tuple)) and len(iv) == 2 and all(isinstance(v, (int, float)) for v in iv):
        return float(iv[0]), float(iv[1])
    return None


def _drop(t: dict[str, Any]) -> str:
    """The drop, and its paired interval where the report has one: `+0.0056 [-0.004, 0.015]`."""
    m = _metric(t)
    drop = t.get("accuracy_drop") if t.get("accuracy_drop") is not None else m.get("drop")
    iv = _interval(m)
    return _fmt(drop, "+.4f") + ("" if iv is None else escape(f" [{iv[0]:.3g}, {iv[1]:.3g}]"))  # not markup


def _caption(report: dict[str, Any]) -> str | None:
    """What the drop's brackets and the marks mean, for the marks the table shows."""
    targets = [t for t in report.get("targets", {}).values() if isinstance(t, dict)]
    parts = []
    shown = next((m for m in map(_metric, targets) if _interval(m) is not None), None)
    if shown is not None:
        level = shown.get("level", 0.95)
        level = f"{level * 100:g}%" if isinstance(level, (int, float)) else "the"
        parts.append(f"drop [{level} paired interval] on the {shown.get('split', 'test')} split of "
                     f"{shown.get('samples', '?')} samples")
    if any(_metric(t).get("uncertain") is True for t in targets):
        parts.append("(uncertain): the budget lies inside the interval")
    if any(t.get("latency_informational") for t in targets):
        parts.append("(info): latency measured, not judged")
    return "; ".join(parts) or None


def _device(t: dict[str, Any]) -> str:
    """The device as the user named it, with how it was reached when that differs."""
    device, name = str(t.get("device", "-")), t.get("device_name")
    return device if not name or name == device else f"{name} ({device})"


def summary_table(report: dict[str, Any]) -> Table:
    ref = report.get("reference", {})
    name = label(report)
    short = "acc" if name == "accuracy" else name
    table = Table(title=f"edgepipe: reference {name} {_fmt(ref.get('accuracy'), '.4f')}", caption=_caption(report))
    # the shipped artifact's value on the validation split (what chose it) beside the test split's (what reports)
    for col in ("target", "device", "precision", "size KB", f"val {short}", f"test {short}", "drop", "median ms",
                "p90 ms", "result"):
        table.add_column(col, justify="left" if col in ("target", "device", "result") else "right")
    for name, t in report.get("targets", {}).items():
        lat = t.get("latency_ms") or {}
        size = t.get("size_bytes")
        uncertain = " [yellow](uncertain)[/yellow]" if _metric(t).get("uncertain") is True else ""
        if t.get("error"):
            result = f"[red]ERROR[/red] {t['error']}"
        elif t.get("passed"):
            result = "[green]PASS[/green]" + uncertain
        else:
            result = "[red]FAIL[/red]" + uncertain + " " + "; ".join(t.get("violations", []))
        emulated = t.get("emulated") or {}
        where = _device(t) + (f" (emulated {emulated.get('cpu_model')})" if emulated else "")
        median = (_fmt(lat.get("median"), ".3f") + (" emul." if emulated else "")
                  + (" (info)" if t.get("latency_informational") else ""))  # not judged against the budget
        chosen_on = (t.get("selection") or {}).get("validation_value")
        table.add_row(name, where, str(t.get("precision", "-")), _fmt(None if size is None else size / 1024, ".1f"),
                      _fmt(chosen_on, ".4f"), _fmt(t.get("accuracy"), ".4f"), _drop(t), median,
                      _fmt(lat.get("p90"), ".3f"), result)
    return table
