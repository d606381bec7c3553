"""A benchmark run as one table on the terminal (cold start, warm latency, memory per cell; emulated and failed
cells marked), its per-op profiles grouped by op type, and the run as one JSON document."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from pipeline import __version__

# the cell's bulky parts: in the store, not on stdout
BULKY = ("latency_samples_ms", "per_sample", "predictions")


def ms(value: Any, digits: int = 4) -> str:
    """Milliseconds with `digits` significant digits (0.002831, 197.0, 1791)."""
    return "-" if value is None else f"{float(value):.{digits}g}"


# the int8-relevant CPU features the table names (the full list is in the JSON and the store)
_SHOWN_FEATURES = {"avx512_vnni": "vnni", "avx_vnni": "avx-vnni", "amx": "amx", "dotprod": "dotprod", "i8mm": "i8mm"}


def cpu_text(cpu: dict[str, Any] | None) -> str:
    if not cpu:
        return "-"
    feats = [short for f, short in _SHOWN_FEATURES.items() if f in cpu.get("features", [])]
    model = " ".join(str(cpu.get("model") or "").split())[:32]
    return f"{cpu.get('arch', '?')} {model}".strip() + (f" +{'+'.join(feats)}" if feats else "")


def median_text(lat: dict[str, Any]) -> str:
    ci = lat.get("median_ci")
    shown = ms(lat.get("median"))
    return shown + (f" [{ms(ci[0], 3)}-{ms(ci[1], 3)}]" if ci else "")


def where_text(cell: dict[str, Any]) -> str:
    if cell.get("measured_on") == "emulated":
        emu = cell.get("emulated") or {}
        return f"[yellow]EMULATED[/yellow] {escape(str(emu.get('cpu_model', '')))}"
    if "loopback" in str(cell.get("where", "")):
        return "device (loopback)"
    return escape(str(cell.get("measured_on", "")))


def run_table(cells: list[dict[str, Any]], title: str) -> Table:
    """One row per (artifact, device): where it was measured, CPU and runtime, threads, cold start (load, first
    inference), warm latency (median with its 95% interval, p90, p99), the runner's peak RSS, accuracy. Two
    lines per row keep it within a terminal's width."""
    table = Table(title=title, title_justify="left")
    for head, right in (("artifact", False), ("device\nmeasured on", False), ("CPU\nruntime", False), ("thr", True),
                        ("load ms\n1st inf. ms", True), ("median ms\n[95% interval]", True), ("p90 ms\np99 ms", True),
                        ("peak RSS\nMB", True), ("accuracy", True)):
        table.add_column(head, justify="right" if right else "left", overflow="fold", no_wrap=not head.startswith("CPU"))
    for c in cells:
        first = [escape(c["artifact"]), f"{escape(c['device'])}\n" + ("[red]FAILED[/red]" if c["status"] != "ok"
                                                                      else where_text(c))]
        if c["status"] != "ok":
            table.add_row(*first, f"[red]{escape(str(c['error']))}[/red]", str(c["threads"]), *([""] * 5))
            continue
        lat, cold = c.get("latency_ms") or {}, c.get("cold_start") or {}
        rss, acc, ci = c.get("peak_memory_kb"), c.get("accuracy"), lat.get("median_ci")
        table.add_row(*first, f"{escape(cpu_text(c.get('cpu')))}\n{escape(str(c.get('runtime', '')))}", str(c["threads"]),
                      f"{ms(cold.get('load_ms'))}\n{ms(cold.get('first_inference_ms'))}",
                      ms(lat.get("median")) + (f"\n[{ms(ci[0], 3)}-{ms(ci[1], 3)}]" if ci else ""),
                      f"{ms(lat.get('p90'))}\n{ms(lat.get('p99'))}", "-" if rss is None else f"{rss / 1024:.1f}",
                      "-" if acc is None else f"{acc:.4f}")
    return table


def profile_table(cell: dict[str, Any]) -> Table | None:
    """The cell's ops grouped by (type, precision): count, ms per inference, share; None without a profile."""
    prof = cell.get("profile")
    if not prof:
        return None
    title = f"{cell['artifact']} on {cell['device']}: ops by type ({prof.get('tool')})"
    table = Table(title=escape(title), title_justify="left", caption=escape(str(prof.get("reading") or "")),
                  caption_justify="left")
    for head in ("op type", "ran in", "ops", "ms / inference", "share"):
        table.add_column(head, justify="right" if head in ("ops", "ms / inference", "share") else "left")
    for g in prof.get("by_type", []):
        precision = str(g["precision"])
        shown = f"[yellow]{escape(precision)}[/yellow]" if precision in ("float32", "bfloat16", "float16") else \
            escape(precision)
        share = "-" if g.get("share") is None else f"{g['share']:.1%}"
        table.add_row(escape(str(g["type"])), shown, str(g["count"]), ms(g.get("ms")), share)
    return table


def print_run(ui: Any, cells: list[dict[str, Any]], title: str) -> None:
    ui.console.print(run_table(cells, title))
    for c in cells:
        table = profile_table(c) if c["status"] == "ok" else None
        if table is not None:
            ui.console.print(table)
    for c in cells:
        for note in c.get("notes", []):
            ui.info(f"{c['artifact']} on {c['device']}: {note}")


def run_document(cells: list[dict[str, Any]], run_id: int | None, store: str | None, command: str) -> dict[str, Any]:
    """The run as one JSON object: every cell (profiles in full), without the raw samples the store keeps."""
    return {"command": command, "edgepipe_version": __version__, "run_id": run_id, "store": store,
            "passed": all(c["status"] == "ok" for c in cells),
            "cells": [{k: v for k, v in c.items() if k not in BULKY} for c in cells]}
