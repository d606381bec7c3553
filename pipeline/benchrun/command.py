"""`edgepipe bench ARTIFACT... [--device D]...`: every artifact on every device that runs its kind, devices'
machines concurrently, one table (terminal, --json, HTML), the run appended to the results store. One artifact
on one device without --profile or --html prints what `edgepipe bench` always printed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.benchrun import cells as cellmod
from pipeline.benchrun.devices import BenchDevice, plan, resolve_devices
from pipeline.benchrun.fanout import Job, run_jobs
from pipeline.benchrun.store import Store, data_dir, redact
from pipeline.benchrun.table import print_run, run_document
from pipeline.errors import EdgepipeError, UsageError
from pipeline.measure.verify import Bench
from pipeline.ui import UI, print_json
from targets import target_of_artifact


def check_artifacts(paths: list[Path]) -> list[Path]:
    """Each artifact once, each an existing file of a kind some runtime runs."""
    out = []
    for path in dict.fromkeys(paths):
        if not path.is_file():
            raise UsageError(f"{path}: artifact not found")
        if target_of_artifact(path) is None:
            raise UsageError(f"{path}: expected a .tflite, .onnx or OpenVINO .xml file")
        out.append(path.resolve())
    return out


def check_eval(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise UsageError(f"--eval {path}: file not found")
    return None if path is None else path.resolve()


def measure_cells(pairs: list[tuple[Path, BenchDevice]], flags: dict[str, int], eval_path: Path | None,
                  profile: bool, jobs: int, ui: UI, metric: str = "accuracy") -> list[dict[str, Any]]:
    """Every cell measured (lanes concurrently, see fanout); failed cells carry their error."""
    from pipeline.cache import file_digest

    digests = {a: cellmod.artifact_digest(a) for a in dict.fromkeys(a for a, _ in pairs)}
    eval_digest = None if eval_path is None else file_digest(eval_path)
    cells, work = [], []
    for artifact, device in pairs:
        settings = (device.bench or Bench()).overridden(flags)
        cell = cellmod.new_cell(artifact, device, settings, digests)
        if eval_digest is not None:
            cell["eval_sha256"] = eval_digest
        cells.append(cell)

        def one(a: Path = artifact, d: BenchDevice = device, s: Bench = settings) -> dict[str, Any]:
            return cellmod.measure(a, d, s, eval_path, profile, metric)

        work.append(Job(device.lane, device.name, one))
    devices = {d.name: d for _, d in pairs}
    with ui.task(f"measuring {len(pairs)} artifact/device pair(s) on {len(devices)} device(s)",
                 total=len(pairs)) as advance:
        run_jobs(work, jobs, on_done=lambda job: advance())
    for cell, job in zip(cells, work, strict=True):
        if job.error is not None:
            cellmod.fail(cell, job.error, job.skipped)
            cell["usage_error"] = isinstance(job.error, UsageError)
        else:
            cellmod.fill(cell, job.result, devices[cell["device"]])
    return cells


def open_store(args: argparse.Namespace, ui: UI) -> Store | None:
    """The store the run goes to: --store (one that cannot be opened is exit 2), else the default SQLite file;
    when that cannot be opened (no SQLAlchemy, a read-only home), the run goes on unstored, with a warning."""
    if getattr(args, "no_store", False):
        return None
    if args.store is not None:
        return Store.open(args.store)
    try:
        return Store.open(None)
    except UsageError as err:
        ui.warn(f"{err}; this run is not stored (pass --store PATH_OR_URL, or --no-store)")
        return None


def store_run(store: Store | None, cells: list[dict[str, Any]], command: str, ui: UI) -> int | None:
    """Append the run (one transaction); a store that fails now is warned about, the run's output still comes."""
    if store is None:
        return None
    try:
        return store.append(cells, command)
    except Exception as err:
        ui.warn(f"the run was not stored in {redact(store.url)}: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
        for cell in cells:
            cell["notes"].append("not stored")
        return None


def exit_code(cells: list[dict[str, Any]], stored: bool) -> int:
    """2 (one line) when a device could not be reached or refused the run; 1 when a measurement failed or the run
    could not be stored; else 0."""
    unreachable = [c for c in cells if c.get("usage_error")]
    if unreachable:
        c = unreachable[0]
        raise UsageError(f"device {c['device']}: {c['error']}" if len({x['device'] for x in cells}) > 1 else c["error"])
    failed = [c for c in cells if c["status"] != "ok"]
    if failed:
        raise EdgepipeError(f"{failed[0]['artifact']} on {failed[0]['device']}: {failed[0]['error']}")
    return 0 if stored else 1


def cmd_bench(args: argparse.Namespace, ui: UI) -> int:
    from pipeline.commands import bench_flags

    artifacts = check_artifacts(args.artifact)
    eval_path = check_eval(args.eval)
    flags = bench_flags(args)
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    devices = resolve_devices(args.device, args.remote_python)
    pairs = plan(artifacts, devices)
    store = open_store(args, ui)
    cells = measure_cells(pairs, flags, eval_path, args.profile, args.jobs, ui)
    run_id = store_run(store, cells, "bench", ui)
    legacy = len(cells) == 1 and not args.profile and args.html is None
    if legacy:
        show_legacy(cells[0], args, ui)
    else:
        show_run(cells, run_id, store, args, ui, "edgepipe bench")
    return exit_code(cells, store is None or run_id is not None)


def show_run(cells: list[dict[str, Any]], run_id: int | None, store: Store | None, args: argparse.Namespace, ui: UI,
             command: str) -> None:
    """The table on the terminal, the JSON on stdout with --json, the HTML page (--html, else in the data folder
    when the run was stored)."""
    from pipeline.benchrun.html import run_page

    doc = run_document(cells, run_id, None if store is None else redact(store.url), command)
    print_run(ui, cells, f"{command}: {len(cells)} measurement(s)" + (f", run {run_id}" if run_id else ""))
    page = args.html or (data_dir() / "html" / f"bench-run-{run_id}.html" if run_id is not None else None)
    if page is not None:
        ui.info(f"wrote {run_page(doc, Path(page))}")
    if args.json:
        print_json(doc)


def show_legacy(cell: dict[str, Any], args: argparse.Namespace, ui: UI) -> None:
    """One artifact on one device: the table and JSON `edgepipe bench` always printed (new keys added)."""
    from rich.table import Table

    if cell["status"] != "ok":
        return  # exit_code says why, in one line
    doc = cellmod.legacy_document(cell)
    if args.json:
        print_json(doc)
        return
    lat = doc["latency_ms"]
    where = doc["device"] if "emulated" not in doc else f"{cell['device']} (emulated {doc['emulated']['cpu_model']})"
    table = Table(title=f"{cell['artifact']} on {where} ({doc['runtime']})")
    for k in ("median", "median 95% interval", "p90", "p99", "mean", "std", "min"):
        table.add_column(f"{k} ms", justify="right")
    ci = lat.get("median_ci")
    shown = f"{ci[0]:.4f}-{ci[1]:.4f}" if ci else "-"  # trtexec's summary has no samples
    table.add_row(f"{lat['median']:.4f}", shown, *(f"{lat[k]:.4f}" if lat.get(k) is not None else "-"
                                                  for k in ("p90", "p99", "mean", "std", "min")))
    ui.console.print(table)
    cold, rss = doc.get("cold_start") or {}, doc.get("peak_memory_kb")
    if cold:
        ui.info(f"cold start: load {cold['load_ms']:.2f} ms, first inference {cold['first_inference_ms']:.3f} ms; "
                f"peak RSS of the runner {'-' if rss is None else f'{rss / 1024:.1f} MB'}")
    if doc.get("accuracy") is not None:
        ui.info(f"accuracy {doc['accuracy']:.4f} on {doc['samples']} samples")
    for note in doc["notes"]:
        ui.info(note)
