"""`edgepipe bench compare BASELINE CANDIDATE`: two stored measurements (ids from `bench history`), or two
artifacts measured now on one device, interleaved in one process (targets.runner_bench.against, the loop the
build's int8-versus-float speed-up uses). Exit 1 on a regression (latency or metric), so CI can gate on it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from pipeline.benchrun.cells import artifact_digest, new_cell
from pipeline.benchrun.compare import BLOCKS, ROUNDS, latency_verdict, metric_verdict
from pipeline.benchrun.devices import BenchDevice, resolve_one
from pipeline.benchrun.store import Store, cpu_key, redact
from pipeline.benchrun.table import median_text
from pipeline.cache import file_digest
from pipeline.errors import TargetError, UsageError
from pipeline.measure.verify import Bench
from pipeline.ui import UI, print_json
from targets import runner

COMPARE_ITERATIONS = 300  # per artifact
COMPARE_ROUNDS = 20  # ABBA rounds: each round's ratio is one paired observation (bench/compare_rates.py)


def stored_pair(store: Store, baseline: int, candidate: int) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The two stored cells; they must be measurements of one device, CPU and thread count."""
    rows = [store.get(baseline), store.get(candidate)]
    for r in rows:
        if r["status"] != "ok":
            raise UsageError(f"stored measurement {r['id']} failed ({r['error']}): nothing to compare")
    a, b = rows
    for key in ("device", "cpu", "threads"):
        if a[key] != b[key]:
            raise UsageError(f"measurements {baseline} and {candidate} differ in {key} ({a[key]} vs {b[key]}): "
                             "compare measurements of one device")
    return a["cell"], b["cell"], False


def interleaved_now(paths: list[Path], device: BenchDevice,
                    settings: Bench, eval_path: Path | None) -> dict[str, Any]:
    """The runner's --against result: on this host in this process, on a device over SSH."""
    from targets import runner_bench

    for p in paths:
        if not device.can_run(p):
            raise UsageError(device.why_not(p))
    if device.ssh is None:
        try:
            return runner_bench.against(paths[0], paths[1], eval_path, settings, COMPARE_ROUNDS)
        except Exception as err:
            raise TargetError(f"the comparison failed in the runtime: {type(err).__name__}: {err}") from err
    from targets.ssh import InRemoteDir, check_settings, files_to_copy, run_runner

    check_settings(settings)
    files, names = files_to_copy(paths, eval_path)
    argv = [InRemoteDir(names[0]), "--against", InRemoteDir(names[1]), "--warmup", str(settings.warmup),
            "--iterations", str(settings.iterations), "--threads", str(settings.threads), "--rounds", str(COMPARE_ROUNDS)]
    argv += ["--eval", InRemoteDir("eval.npz")] if eval_path is not None else []
    return run_runner(device.ssh, "runner_bench.py", files, argv)


def measured_pair(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Two artifacts measured now, interleaved; each side as a cell (stored like a bench run's)."""
    from pipeline.commands import bench_flags

    paths = [Path(args.baseline).resolve(), Path(args.candidate).resolve()]
    eval_path = None if args.eval is None else args.eval.resolve()
    if eval_path is not None and not eval_path.is_file():
        raise UsageError(f"--eval {args.eval}: file not found")
    device = resolve_one(args.device, args.remote_python)
    flags = {"iterations": COMPARE_ITERATIONS, **bench_flags(args)}
    settings = (device.bench or Bench()).overridden(flags)
    digests = {p: artifact_digest(p) for p in paths}
    out = interleaved_now(paths, device, settings, eval_path)
    sides = []
    for i, p in enumerate(paths):
        cell = new_cell(p, device, settings, digests)
        samples = out["latency_samples_ms"][i]
        cell.update(status="ok", runtime=out.get("runtimes", [out["runtime"]] * 2)[i], cpu=out.get("cpu"),
                    latency_ms=runner.latency_stats(samples, settings.warmup, settings.threads),
                    latency_samples_ms=samples, interleaved_with=paths[1 - i].name, rounds=out.get("rounds"))
        cell["runtime_name"], _, cell["runtime_version"] = str(cell["runtime"]).partition(" ")
        if out.get("scores"):
            cell.update(out["scores"][i], eval_sha256=file_digest(eval_path) if eval_path else None)
        sides.append(cell)
    return sides[0], sides[1], True


def cmd_compare(args: argparse.Namespace, ui: UI) -> int:
    if args.threshold < 0 or args.metric_threshold < 0:
        raise UsageError("--threshold and --metric-threshold must not be negative")
    ids = [s.isdigit() for s in (args.baseline, args.candidate)]
    files = [Path(s).is_file() for s in (args.baseline, args.candidate)]
    store: Store | None
    if all(ids):
        store = Store.open(args.store)
        base, cand, interleaved = stored_pair(store, int(args.baseline), int(args.candidate))
    elif all(files):
        store = None if args.no_store else Store.open(args.store)
        base, cand, interleaved = measured_pair(args)
        if store is not None:
            store.append([base, cand], "compare")
    else:
        raise UsageError("BASELINE and CANDIDATE must both be stored measurement ids (see `edgepipe bench history`) "
                         f"or both artifact files: got {args.baseline!r} and {args.candidate!r}")
    same = base["artifact_sha256"] == cand["artifact_sha256"]
    # interleaved: each round's ratio, paired; measured apart: medians of consecutive blocks (bench/compare_rates.py)
    method, rounds = (ROUNDS, int(base.get("rounds") or COMPARE_ROUNDS)) if interleaved else (BLOCKS, 0)
    lat = latency_verdict(base["latency_samples_ms"], cand["latency_samples_ms"], args.threshold, interleaved, same,
                          method, rounds)
    met = metric_verdict(base, cand, args.metric_threshold, same)
    doc = {"baseline": side(base), "candidate": side(cand), "latency": lat.to_dict(),
           "metric": None if met is None else met.to_dict(), "store": None if store is None else redact(store.url),
           "regression": lat.regression or bool(met and met.regression)}
    show(doc, ui)
    if args.json:
        print_json(doc)
    return 1 if doc["regression"] else 0


def side(cell: dict[str, Any]) -> dict[str, Any]:
    return {"artifact": cell["artifact"], "artifact_sha256": cell["artifact_sha256"], "device": cell["device"],
            "cpu": cpu_key(cell.get("cpu")), "runtime": cell.get("runtime"), "threads": cell["threads"],
            "latency_ms": cell.get("latency_ms"), "accuracy": cell.get("accuracy"), "result_id": cell.get("result_id")}


def show(doc: dict[str, Any], ui: UI) -> None:
    lat, met = doc["latency"], doc["metric"]
    how = "interleaved in one process" if lat["interleaved"] else "stored runs, measured apart"
    table = Table(title=f"compare on {escape(doc['baseline']['device'])} ({how})", title_justify="left")
    for h in ("", "artifact", "sha256", "median ms [95% interval]", "accuracy"):
        table.add_column(h)
    for name in ("baseline", "candidate"):
        s = doc[name]
        acc = "-" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
        table.add_row(name, escape(s["artifact"]), s["artifact_sha256"][:12], median_text(s["latency_ms"] or {}), acc)
    ui.console.print(table)
    ui.info(f"latency ratio candidate/baseline {lat['ratio']:.3f}x (95% interval {lat['interval'][0]:.3f}-"
            f"{lat['interval'][1]:.3f}x from {lat['method']}, threshold {1 + lat['threshold']:.2f}x): {lat['verdict']}")
    if met is not None:
        iv = met["interval"]
        shown = "" if iv is None else f" (95% interval {iv[0]:+.4f} to {iv[1]:+.4f}, {met['method']})"
        ui.info(f"accuracy drop {met['drop']:+.4f}{shown}: {met['verdict']}")
