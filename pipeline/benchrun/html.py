"""Self-contained HTML pages (inline CSS, figures as base64 PNG, no script): a benchmark run's table with its
per-op profiles in full, and the store's history with a plot of each series' median latency over time."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.benchrun.table import cpu_text, median_text, ms

_CSS = """
body{font-family:sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.n{text-align:right}.fail{color:#c62828;font-weight:bold}
.emulated{color:#9a6700;font-weight:bold}.float{color:#9a6700}img{max-width:100%}.muted{color:#666}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(head: list[str], rows: list[list[str]]) -> str:
    """Head cells are escaped here; row cells must already be HTML."""
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: list[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}"><title>{e(title)}</title>'
            f"<style>{_CSS}</style></head>\n<body>\n<h1>{e(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def cell_row(c: dict[str, Any]) -> list[str]:
    head = [e(c["artifact"]), e(c["device"])]
    if c["status"] != "ok":
        return [*head, '<span class="fail">FAILED</span>', f'<span class="fail">{e(c.get("error"))}</span>',
                *([""] * 9)]
    lat, cold, rss = c.get("latency_ms") or {}, c.get("cold_start") or {}, c.get("peak_memory_kb")
    where = e(c.get("where", ""))
    if c.get("measured_on") == "emulated":
        where = f'<span class="emulated">EMULATED</span> {where}'
    numbers = [ms(cold.get("load_ms"), 3), ms(cold.get("first_inference_ms"), 3), median_text(lat), ms(lat.get("p90")),
               ms(lat.get("p99")), "-" if rss is None else f"{rss / 1024:.1f}",
               "-" if c.get("accuracy") is None else f"{c['accuracy']:.4f}"]
    return [*head, where, e(cpu_text(c.get("cpu"))), e(c.get("runtime", "")), str(c["threads"]),
            *(f'<span class="n">{e(n)}</span>' for n in numbers)]


RUN_HEAD = ["artifact", "device", "measured on", "CPU", "runtime", "threads", "load ms", "1st inference ms",
            "median ms [95% interval]", "p90 ms", "p99 ms", "peak RSS MB", "accuracy"]


def profile_section(c: dict[str, Any]) -> str:
    prof = c.get("profile")
    if not prof or c["status"] != "ok":
        return ""

    def precision(p: Any) -> str:
        return f'<span class="float">{e(p)}</span>' if p in ("float32", "bfloat16", "float16") else e(p)

    def share(v: Any) -> str:
        return "-" if v is None else f"{v:.1%}"

    groups = [[e(g["type"]), precision(g["precision"]), str(g["count"]), ms(g.get("ms")), share(g.get("share"))]
              for g in prof.get("by_type", [])]
    ops = [[e(o.get("name")), e(o.get("type")), precision(o.get("precision")), e(o.get("kernel", "")),
            ms(o.get("ms")), share(o.get("share"))] for o in prof.get("ops", [])]
    return (f"<h3>{e(c['artifact'])} on {e(c['device'])}: {e(prof.get('tool'))}</h3>"
            f'<p class="muted">{e(prof.get("reading") or "")}</p>'
            + table(["op type", "ran in", "ops", "ms / inference", "share"], groups)
            + "<details><summary>every op</summary>"
            + table(["op", "type", "ran in", "kernel", "ms / inference", "share"], ops) + "</details>")


def run_page(doc: dict[str, Any], path: Path) -> Path:
    """The benchmark run's page: the table, every note, each profile by type and in full."""
    cells = doc["cells"]
    notes = [f"<li>{e(c['artifact'])} on {e(c['device'])}: {e(n)}</li>" for c in cells for n in c.get("notes", [])]
    body = [f'<p class="muted">edgepipe {e(__version__)}, {e(doc["command"])}; run {e(doc.get("run_id"))} in '
            f'{e(doc.get("store") or "no store")}</p>', table(RUN_HEAD, [cell_row(c) for c in cells])]
    body += [f"<h2>Notes</h2><ul>{''.join(notes)}</ul>"] if notes else []
    profiles = [profile_section(c) for c in cells]
    body += ["<h2>Where the time goes</h2>", *profiles] if any(profiles) else []
    return write(path, page("edgepipe benchmark run", body))


def series_key(row: dict[str, Any]) -> str:
    return (f"{row['artifact']} {row['artifact_sha256'][:8]} on {row['device']}, {row['runtime']} "
            f"{row['runtime_version']}, {row['threads']} thread(s)")


def history_plot(rows: list[dict[str, Any]]) -> str:
    """Median latency (with its 95% interval) of each series over time, as an <img>."""
    import json
    from datetime import datetime

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series: dict[str, list[tuple[Any, float, float, float]]] = {}
    for r in rows:
        if r["status"] != "ok" or r["median_ms"] is None:
            continue
        ci = (json.loads(r["data"]).get("latency_ms") or {}).get("median_ci") or [r["median_ms"]] * 2
        when = datetime.fromisoformat(r["created_at"])
        series.setdefault(series_key(r), []).append((when, r["median_ms"], ci[0], ci[1]))
    if not series:
        return '<p class="muted">no measurement to plot</p>'
    fig = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (name, points) in enumerate(sorted(series.items())):
        x, y = [p[0] for p in points], [p[1] for p in points]
        err = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=_COLORS[i % len(_COLORS)],
                    label=name.replace("$", r"\$"))
    ax.set_ylabel("median latency, ms (95% interval)")
    medians = [p[1] for points in series.values() for p in points]
    if min(medians) > 0 and max(medians) / min(medians) > 20:  # an emulated device beside a host: a log axis
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=1, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="latency history">'


def history_page(rows: list[dict[str, Any]], head: list[str], cells: list[list[str]], store: str, path: Path) -> Path:
    """The history: the plot, then the table (`head`, `cells`: plain text, escaped here)."""
    body = [f'<p class="muted">{len(rows)} measurement(s) in {e(store)}</p>', history_plot(rows),
            table(head, [[e(v) for v in row] for row in cells])]
    return write(path, page("edgepipe benchmark history", body))
