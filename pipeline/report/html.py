"""Render a run's report.json as one self-contained report.html: inline CSS, figures as base64 PNG.

Every string taken from the report is HTML-escaped; optional parts that are missing are left out.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError
from pipeline.report.metric_keys import from_document
from pipeline.report.schema import LatencyStats, Report, parse_report

Obj = dict[str, Any]

_CSS = """
body{font-family:sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}.pass{color:#1a7f37;font-weight:bold}.fail{color:#c62828;font-weight:bold}
.uncertain{color:#9a6700;font-weight:bold}
img{max-width:100%}ul{margin:0;padding-left:1.2em}.muted{color:#666}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_run(run_dir: Path) -> Path:
    """Read `run_dir/report.json` and write `run_dir/report.html`; return the HTML path."""
    path = Path(run_dir) / "report.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no report.json in {run_dir}: not a run directory, or the run did not finish") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(report, dict):
        raise UsageError(f"{path} does not hold a JSON object")
    return render_html(from_document(report), Path(run_dir))


def render_html(report: Obj, run_dir: Path) -> Path:
    """Write `run_dir/report.html` for a report.json dict and return its path."""
    typed = parse_report(report, "report.json")
    sections = [
        _summary(typed),
        _stage_plot(typed),
        _latency_plot(typed),
        _candidates(typed),
        _sensitivity(typed),
        _pareto(report),
        _versions(typed),
    ]
    title = f"edgepipe report {_e(typed.edgepipe_version)}".strip()
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{title}</title><style>{_CSS}</style></head>\n<body>\n<h1>{title}</h1>\n"
        + "\n".join(s for s in sections if s)
        + "\n</body></html>\n"
    )
    out = Path(run_dir) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


# ---------- small helpers ----------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any, spec: str = ".4g") -> str:
    num = _num(value)
    return "—" if num is None else format(num, spec)


def _kb(value: Any) -> float | None:
    num = _num(value)
    return None if num is None else num / 1024


def _short(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _dicts(items: Any) -> list[Obj]:
    return [x for x in items if isinstance(x, dict)] if isinstance(items, list) else []


def _sub(obj: Obj, key: str) -> Obj:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _ul(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in items) + "</ul>" if items else ""


def _table(head: list[str], rows: list[list[str]]) -> str:
    """Head cells are escaped here; row cells must already be HTML."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _mpl(label: Any) -> str:
    """A report string made safe for matplotlib text (no mathtext)."""
    return str(label).replace("$", r"\$")


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _img(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


# ---------- sections ----------


def _verdict(passed: Any) -> str:
    if passed is True:
        return '<span class="pass">PASS</span>'
    return '<span class="fail">FAIL</span>' if passed is False else '<span class="muted">—</span>'


def _interval(metric: Obj) -> tuple[float, float] | None:
    bounds = metric.get("interval")
    if isinstance(bounds, list) and len(bounds) == 2:
        lo, hi = _num(bounds[0]), _num(bounds[1])
        if lo is not None and hi is not None:
            return lo, hi
    return None


def _level(metric: Obj) -> str:
    level = _num(metric.get("level"))
    return f"{level * 100:g}%" if level is not None else ""


def _drop_cell(drop: Any, metric: Obj) -> str:
    """The drop on the test split, its paired interval under it where the report has one."""
    bounds = _interval(metric)
    shown = _fmt(drop if drop is not None else metric.get("drop"))
    if bounds is None:
        return shown
    return f'{shown}<br><span class="muted">{_level(metric)} [{_fmt(bounds[0], ".3g")}, {_fmt(bounds[1], ".3g")}]</span>'


def _value_cell(value: Any, selection: Obj) -> str:
    """The test value, the validation value the precision was chosen on beside it."""
    validation = _num(selection.get("validation_value"))
    return _fmt(value) + ("" if validation is None else f' <span class="muted">(validation {_fmt(validation)})</span>')


def _selection_note(selection: Obj, metric_name: str) -> list[str]:
    if not selection:
        return []
    split, samples, candidates = (selection.get(k) for k in ("split", "samples", "candidates"))
    parts = [f"chosen on the {split or 'validation'} split"
             + (f" of {samples} samples" if _num(samples) is not None else "")
             + (f" among {candidates} candidates" if _num(candidates) is not None else "")]
    if _num(selection.get("validation_value")) is not None:
        parts.append(f"validation {metric_name} {_fmt(selection.get('validation_value'))}")
    if _num(selection.get("validation_drop")) is not None:
        parts.append(f"validation drop {_fmt(selection.get('validation_drop'))}")
    return [", ".join(parts)]


def _typed(entry: Any) -> Obj:
    """A typed sub-entry (DropMetric, Selection) as the plain dict the cells read; {} when absent."""
    return entry.model_dump(exclude_unset=True) if entry is not None else {}


def _interval_legend(report: Report) -> str:
    """What the summary's intervals and marks mean (only when some target has an interval)."""
    for t in report.targets.values():
        metric = _typed(t.metric)
        if metric and _interval(metric) is not None:
            method, samples = metric.get("method", ""), metric.get("samples", "?")
            return (f'<p class="muted">Drop: on the {_e(metric.get("split", "test"))} split of {_e(samples)} samples, '
                    f"in the metric's worse direction, with its {_e(_level(metric))} paired interval ({_e(method)}). "
                    '<span class="uncertain">uncertain</span>: the budget lies inside the interval, so another test '
                    "split of this size could judge the other way.</p>\n")
    return ""


def _summary(report: Report) -> str:
    limits = [f"{k} = {'none' if v is None else v}" for k, v in report.budget.items()]
    rows = []
    for name, t in report.targets.items():
        metric, selection = _typed(t.metric), _typed(t.selection)
        informational = t.latency_informational  # a latency measured but not judged, and why
        problems = t.violations + ([f"error: {t.error}"] if t.error else [])
        emulated = t.emulated  # an emulated device: its latency is not the board's
        cpu = emulated.get("cpu_model", "") if isinstance(emulated, dict) else ""
        named = t.device_name if t.device_name and t.device_name != t.device else None
        where = (f"{named} ({t.device})" if named else t.device) + (f" (emulated aarch64 {cpu})" if emulated else "")
        median = _fmt(t.latency_ms.median if t.latency_ms else None) + (" (emulated)" if emulated else "")
        if informational:
            median += f' <span class="muted" title="{_e(informational)}">(informational)</span>'
        result = _verdict(t.passed) + (' <span class="uncertain">uncertain</span>' if metric.get("uncertain") is True
                                       else "")
        notes = ([f"latency not judged: {informational}"] if informational else []) + _selection_note(
            selection, report.metric_name()) + t.notes
        rows.append([_e(name), _e(where), _e(t.precision), result, _fmt(_kb(t.size_bytes), ".1f"),
                     _value_cell(t.accuracy, selection), _drop_cell(t.accuracy_drop, metric), median, _ul(problems),
                     _ul(notes)])
    head = ["target", "device", "precision", "result", "size KB", report.metric_name(), "drop", "median ms",
            "violations", "notes"]
    table = _table(head, rows) if rows else '<p class="muted">No targets.</p>'
    return (f"<h2>Summary: {_verdict(report.passed)}</h2>\n<p>Budget: {_e(', '.join(limits) or 'none')}</p>\n"
            + table + _interval_legend(report))


def _stage_points(report: Report) -> list[tuple[str, Any]]:
    points: list[tuple[str, Any]] = [("reference", report.reference)]
    points += [(s.name, s) for s in report.stages]
    points += [(f"{name} ({t.precision})", t) for name, t in report.targets.items()]
    return points


def _stage_plot(report: Report) -> str:
    points = _stage_points(report)
    metric = report.metric_name()
    metrics = [("parameters", lambda p: _num(getattr(p, "params", None))),
               ("size (KB)", lambda p: _kb(p.size_bytes)), (metric, lambda p: _num(p.accuracy))]
    if not any(get(p) is not None for _, p in points for _, get in metrics):
        return ""
    labels = [_mpl(n) for n, _ in points]
    fig = _new_figure(11, 8)
    axes = fig.subplots(3, 1, sharex=True)
    for ax, (title, get) in zip(axes, metrics, strict=True):
        values = [get(p) for _, p in points]
        bars = ax.bar(range(len(points)), [math.nan if v is None else v for v in values], color="#4878d0")
        ax.bar_label(bars, ["" if v is None else _short(v) for v in values], fontsize=8, padding=2)
        for i in (i for i, v in enumerate(values) if v is None):
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8, color="#888")
        ax.set_ylabel(_mpl(title))
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
    axes[-1].set_xticks(range(len(points)), labels, rotation=20, ha="right")
    accs = [a for a in (_num(p.accuracy) for _, p in points) if a is not None]
    if accs and metric == "accuracy":
        axes[2].set_ylim(max(0.0, min(accs) - 0.05), max(accs) + 0.02)
    return "<h2>Stages</h2>\n" + _img(fig, f"parameters, size and {metric} per stage and target")


def _box_stats(lat: LatencyStats | None) -> Obj | None:
    """Box-like stats from summary numbers: whiskers min..p99, box mean-std..p90, line at the median."""
    if lat is None:
        return None
    med, p90, p99, lo = (_num(v) for v in (lat.median, lat.p90, lat.p99, lat.min))
    if med is None:
        return None
    mean, std = _num(lat.mean), _num(lat.std)
    lo = med if lo is None else lo
    q1 = max(lo, mean - std) if mean is not None and std is not None else lo
    q3 = p90 if p90 is not None else med
    return {"med": med, "q1": min(q1, med), "q3": max(q3, med), "whislo": lo,
            "whishi": max(p99 if p99 is not None else q3, q3, med), "mean": mean if mean is not None else med, "fliers": []}


def _sample_stats(samples: list[float]) -> Obj:
    from matplotlib import cbook

    return dict(cbook.boxplot_stats(samples)[0])


def _latency_plot(report: Report) -> str:
    stats, labels = [], []
    for name, t in report.targets.items():
        samples = [v for v in map(_num, t.latency_samples_ms) if v is not None]
        stat = _sample_stats(samples) if samples else _box_stats(t.latency_ms)
        if stat is not None:
            stats.append(stat)
            labels.append(_mpl(f"{name}\n{t.device}"))
    if not stats:
        return ""
    fig = _new_figure(max(6.0, 1.6 * len(stats) + 2), 4.5)
    ax = fig.subplots()
    ax.bxp(stats, showmeans=True, showfliers=True, patch_artist=True,
           boxprops={"facecolor": "#a1c9f4"}, medianprops={"color": "#c62828"})
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_ylabel("latency (ms)")
    ax.grid(axis="y", alpha=0.3)
    return ("<h2>Latency per target and device</h2>\n<p class=\"muted\">From raw samples where the report has them; "
            "otherwise whiskers min..p99, box mean−std..p90, red line the median, triangle the mean.</p>\n"
            + _img(fig, "latency distribution per target"))


def _candidates(report: Report) -> str:
    """precision = "auto": every candidate side by side, the shipped one marked, and why."""
    parts, metric = [], report.metric_name()
    for name, t in report.targets.items():
        if not t.precision_candidates:
            continue
        rows = [[("<b>" if c.chosen else "") + _e(c.candidate) + (" (shipped)</b>" if c.chosen else ""),
                 _e(c.precision), _e(c.detail), _fmt(c.accuracy), _fmt(c.accuracy_drop), _fmt(c.latency_ms),
                 _fmt(_kb(c.size_bytes), ".1f"), _verdict(c.passed if c.measured else None), _e(c.why)]
                for c in t.precision_candidates]
        head = ["candidate", "precision", "how", metric, "drop", "median ms", "size KB", "budget", "why"]
        parts.append(f"<h3>{_e(name)} on {_e(t.device)}</h3>\n<p>{_e(t.precision_choice or '')}</p>\n"
                     + _table(head, rows))
    return "<h2>Precision candidates (precision = \"auto\")</h2>\n" + "\n".join(parts) if parts else ""


def _attempt_how(a: Any) -> str:
    """An attempt's calibration, with the Keras equalization (smoothquant | cle), backend passes and QAT."""
    return " + ".join([*([a.equalization] if a.equalization else []), a.calibration,
                       *(["backend equalization"] if a.equalize else []), *(["QAT"] if a.qat else [])])


def _sensitivity(report: Report) -> str:
    parts, metric = [], report.metric_name()
    for name, t in report.targets.items():
        rows = [[_e(r.layer), _fmt(r.sqnr_db, ".2f"), _fmt(r.accuracy)] for r in t.sensitivity or []]
        tries = [[_e(_attempt_how(a)), _e(", ".join(a.float_layers) or "-"),
                  _e(", ".join(a.int16_layers) or "-"), _fmt(a.accuracy), _fmt(a.accuracy_drop), _verdict(a.passed)] for a in t.attempts]
        if rows or tries:
            parts.append(f"<h3>{_e(name)}</h3>\n" + (_table(["layer", "SQNR (dB)", metric], rows) if rows else "")
                         + (_table(["calibration", "kept in float", "kept 16x8", metric, "drop", "result"], tries)
                            if tries else ""))
    return "<h2>Per-layer sensitivity and accuracy-aware attempts</h2>\n" + "\n".join(parts) if parts else ""


def _pareto(report: Obj) -> str:
    search = _sub(report, "search")
    trials = [t for t in _dicts(search.get("trials"))
              if _num(t.get("latency_ms")) is not None and _num(t.get("accuracy")) is not None]
    if not trials:
        return ""
    biggest = max(max(_kb(t.get("size_bytes")) or 0.0 for t in trials), 1.0)
    fig = _new_figure(8, 5)
    ax = fig.subplots()
    for on_front in (False, True):
        group = [t for t in trials if bool(t.get("pareto")) is on_front]
        sizes = [20 + 80 * (_kb(t.get("size_bytes")) or 0.0) / biggest for t in group]
        ax.scatter([t["latency_ms"] for t in group], [t["accuracy"] for t in group], s=sizes,
                   c="#c62828" if on_front else "#9e9e9e", label="Pareto front" if on_front else "other trials",
                   alpha=0.85, edgecolors="black" if on_front else "none")
    front = sorted((t for t in trials if t.get("pareto")), key=lambda t: float(t["latency_ms"]))
    ax.plot([t["latency_ms"] for t in front], [t["accuracy"] for t in front], color="#c62828", lw=1)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    rows = [[_e(t.get("number", "")), _fmt(t.get("accuracy")), _fmt(t.get("latency_ms")),
             _fmt(_kb(t.get("size_bytes")), ".1f"),
             _e(", ".join(f"{k}={v}" for k, v in t["params"].items()) if isinstance(t.get("params"), dict) else "")]
            for t in front]
    table = _table(["trial", "accuracy", "latency ms", "size KB", "params"], rows) if rows else ""
    return ("<h2>Search: Pareto front</h2>\n<p class=\"muted\">Marker area grows with model size.</p>\n"
            + _img(fig, "search trials, accuracy against latency") + table)


def _versions(report: Report) -> str:
    rows = [[_e(k), _e(v)] for k, v in report.versions.items()]
    rows += [[_e(f"runtime of {name}"), _e(t.runtime)] for name, t in report.targets.items() if t.runtime]
    if report.edgepipe_version:
        rows.insert(0, ["edgepipe", _e(report.edgepipe_version)])
    return "<h2>Versions</h2>\n" + _table(["component", "version"], rows) if rows else ""
