"""`Run`: a typed, frozen view of a finished run's report.json (schema 1), with a one-line repr and a table
for notebooks (`_repr_html_` for Jupyter, `__rich__` for rich consoles)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgepipe.errors import InputError
from pipeline.errors import UsageError
from pipeline.report.schema import LatencyStats, parse_report


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class TargetResult:
    """One target of a run: its artifact, the task's metric measured in the target's own runtime, the drop
    from the reference (in the metric's worse direction), latency and the budget's verdict."""

    name: str
    passed: bool
    artifact: Path | None  # absolute; None when the target failed before writing one
    precision: str
    runtime: str | None
    device: str | None
    metric_value: float | None
    float_metric_value: float | None
    drop: float | None
    latency: LatencyStats | None
    size_bytes: int | None
    violations: tuple[str, ...] = ()
    error: str | None = None

    @classmethod
    def from_entry(cls, name: str, t: Mapping[str, Any], run_dir: Path) -> TargetResult:
        value = t["metric_value"] if "metric_value" in t else t.get("accuracy")
        float_value = t["float_metric_value"] if "float_metric_value" in t else t.get("float_accuracy")
        drop = t["metric_drop"] if "metric_drop" in t else t.get("accuracy_drop")
        size = t.get("size_bytes")
        return cls(name, bool(t.get("passed")), run_dir / t["artifact"] if t.get("artifact") else None,
                   str(t.get("precision", "int8")), t.get("runtime"), t.get("device"), _float(value),
                   _float(float_value), _float(drop),
                   LatencyStats.model_validate(t["latency_ms"]) if t.get("latency_ms") else None,
                   None if size is None else int(size), tuple(str(v) for v in t.get("violations") or ()),
                   t.get("error"))

    def summary(self, metric: str) -> str:
        """`tflite: accuracy 0.9611 (drop +0.0028), 0.041 ms, PASS` (one line)."""
        if self.error:
            return f"{self.name}: ERROR {self.error}"
        parts = [f"{metric} {_num(self.metric_value)} (drop {_num(self.drop, '+.4f')})"]
        if self.latency is not None:
            parts.append(f"{self.latency.median:.3f} ms")
        return f"{self.name}: {', '.join(parts)}, {'PASS' if self.passed else 'FAIL'}"


def _num(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


@dataclass(frozen=True)
class Run:
    """A finished run: `path` (the run directory), `passed` (every target built and met its budget), the
    task's `metric` and its direction, the reference model's value, and one `TargetResult` per target.
    `report` is report.json as written (read-only)."""

    path: Path
    passed: bool
    metric: str
    higher_is_better: bool
    reference_value: float | None
    targets: Mapping[str, TargetResult]
    report: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_report(cls, report: Mapping[str, Any], run_dir: Path) -> Run:
        """From report.json's document form (what `to_document` writes)."""
        metric = report.get("metric") or {"name": "accuracy", "higher_is_better": True}
        ref = report.get("reference") or {}
        ref_value = ref["metric_value"] if "metric_value" in ref else ref.get("accuracy")
        targets = {n: TargetResult.from_entry(n, t, run_dir) for n, t in (report.get("targets") or {}).items()}
        return cls(run_dir, bool(report.get("passed")), str(metric["name"]), bool(metric["higher_is_better"]),
                   _float(ref_value), MappingProxyType(targets), MappingProxyType(dict(report)))

    def __getitem__(self, target: str) -> TargetResult:
        return self.targets[target]

    def __repr__(self) -> str:
        verdict = "passed" if self.passed else "failed"
        shown = "; ".join(t.summary(self.metric) for t in self.targets.values()) or "no targets"
        return f"<Run {self.path} {verdict}: reference {self.metric} {_num(self.reference_value)}; {shown}>"

    def __rich__(self) -> Any:
        from pipeline.report.document import summary_table
        from pipeline.report.metric_keys import from_document

        return summary_table(from_document(json.loads(json.dumps(dict(self.report)))))

    def _repr_html_(self) -> str:
        head = ("target", "device", "precision", "size KB", f"float {self.metric}", f"int8 {self.metric}", "drop",
                "median ms", "p90 ms", "result")
        rows = [_html_row(t) for t in self.targets.values()]
        title = (f"edgepipe run <code>{html.escape(str(self.path))}</code>: reference {self.metric} "
                 f"{_num(self.reference_value)}, <b>{'passed' if self.passed else 'failed'}</b>")
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        return f"<div><p>{title}</p><table><tr>{cells}</tr>{''.join(rows)}</table></div>"


def _html_row(t: TargetResult) -> str:
    lat = t.latency
    result = f"ERROR {t.error}" if t.error else ("PASS" if t.passed else "FAIL " + "; ".join(t.violations))
    values = (t.name, t.device or "-", t.precision, _num(None if t.size_bytes is None else t.size_bytes / 1024, ".1f"),
              _num(t.float_metric_value), _num(t.metric_value), _num(t.drop, "+.4f"),
              _num(None if lat is None else lat.median, ".3f"), _num(None if lat is None else lat.p90, ".3f"), result)
    return "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in values) + "</tr>"


def load_run(path: str | Path) -> Run:
    """Read a run directory written by `edgepipe build` (or `edgepipe.build`)."""
    run_dir = Path(path).expanduser().resolve()
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        raise InputError(f"{run_dir}: not an edgepipe run directory (no report.json)")
    try:
        report = json.loads(report_path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise InputError(f"{report_path}: not a readable report ({' '.join(str(err).split())})") from None
    try:
        parse_report(report, str(report_path))  # the typed schema: one line naming a damaged field
    except UsageError as err:
        raise InputError(str(err)) from None
    return Run.from_report(report, run_dir)
