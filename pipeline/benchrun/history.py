"""`edgepipe bench history [--device D] [--artifact A]`: the store's measurements over time, as a table on the
terminal (or JSON) and as an HTML page with a plot of each series' median latency and its interval."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from pipeline.benchrun.store import Store, data_dir, redact
from pipeline.benchrun.table import cpu_text, median_text, ms
from pipeline.errors import UsageError
from pipeline.ui import UI, print_json

HEAD = ["id", "when (UTC)", "artifact", "sha256", "device", "measured on", "CPU", "runtime", "thr",
        "median ms [95%]", "p99 ms", "load ms", "RSS MB", "acc.", "status"]


def history_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Each stored measurement as the history table's text cells."""
    out = []
    for r in rows:
        cell = json.loads(r["data"])
        median = median_text(cell.get("latency_ms") or {}) if r["status"] == "ok" else "-"
        out.append([str(r["id"]), r["created_at"].replace("T", " ")[:16], r["artifact"], r["artifact_sha256"][:8],
                    r["device"], r["measured_on"], cpu_text(cell.get("cpu")), f"{r['runtime']} {r['runtime_version']}".strip(),
                    str(r["threads"]), median, ms(r["p99_ms"]), ms(r["load_ms"]),
                    "-" if r["peak_memory_kb"] is None else f"{r['peak_memory_kb'] / 1024:.1f}",
                    "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}",
                    r["status"] if r["status"] == "ok" else f"failed: {r['error']}"])
    return out


def artifact_filter(spec: str | None) -> str | None:
    """--artifact as the store matches it: an existing file is hashed (its content is its key)."""
    if spec is None:
        return None
    path = Path(spec)
    if path.is_file():
        from pipeline.benchrun.cells import artifact_digest

        return artifact_digest(path)
    return spec


def cmd_history(args: argparse.Namespace, ui: UI) -> int:
    from pipeline.benchrun.html import history_page

    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    store = Store.open(args.store)
    rows = store.rows(args.device, artifact_filter(args.artifact), args.limit)
    cells = history_cells(rows)
    if args.json:
        print_json({"store": redact(store.url), "measurements": [
            {k: v for k, v in r.items() if k != "data"} | {"median_ci": (json.loads(r["data"]).get("latency_ms") or {})
                                                           .get("median_ci")} for r in rows]})
    table = Table(title=f"{len(rows)} stored measurement(s) in {escape(redact(store.url))}", title_justify="left")
    for h in HEAD:
        table.add_column(h, overflow="fold", no_wrap=h not in ("CPU", "runtime", "median ms [95%]", "status"))
    for row in cells:
        table.add_row(*(escape(c) for c in row))
    ui.console.print(table)
    page = args.html or data_dir() / "html" / "bench-history.html"
    ui.info(f"wrote {history_page(rows, HEAD, cells, redact(store.url), Path(page))}")
    return 0
