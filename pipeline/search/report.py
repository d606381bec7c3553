"""The outputs of `edgepipe search`: search.json, report.json/report.html with the trials and their
Pareto flags, the Pareto front on the terminal, and the best feasible trial as a run directory
`<out>/best`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from pipeline.report.document import finalize, new_report, read_report, write_report
from pipeline.search.objectives import (
    Metrics,
    SearchRequest,
    directions,
    metric_higher_is_better,
    metric_label,
    pareto_flags,
)
from pipeline.search.space import Space, derive
from pipeline.ui import UI

if TYPE_CHECKING:
    import optuna


def trial_rows(study: optuna.Study, higher_is_better: bool = True) -> list[dict[str, Any]]:
    """One row per trial; `pareto` marks the non-dominated COMPLETE full-fidelity trials."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        m = a.get("metrics") or {}
        complete = t.state.name == "COMPLETE"
        rows.append({
            "number": t.number, "state": t.state.name, "fidelity": a.get("fidelity"),
            "accuracy": m.get("accuracy") if complete else None,
            "latency_ms": m.get("latency_ms") if complete else None,
            "size_bytes": m.get("size_bytes") if complete else None,
            "accuracy_drop": m.get("accuracy_drop") if complete else None,
            "feasible": bool(a.get("feasible")) and complete, "pareto": False, "params": dict(t.params),
            "coarse": a.get("coarse"), "worker": a.get("worker"), "hostname": a.get("hostname"),
            "pid": a.get("pid"), "run_dir": a.get("run_dir"), "seconds": a.get("seconds"),
            "fail_reason": (a.get("fail_reason") or "worker stopped (no heartbeat)")
            if t.state.name == "FAIL" else None,
        })
    full = [r for r in rows if r["state"] == "COMPLETE" and r["fidelity"] == "full"]
    for r, on_front in zip(full, pareto_flags([_metrics(r, higher_is_better) for r in full]), strict=True):
        r["pareto"] = on_front
    return rows


def _metrics(row: dict[str, Any], higher_is_better: bool) -> Metrics:
    return Metrics(float(row["accuracy"]), float(row["latency_ms"]), int(row["size_bytes"]),
                   row["accuracy_drop"], higher_is_better)


def pick_best(rows: list[dict[str, Any]], higher_is_better: bool = True) -> dict[str, Any] | None:
    """The feasible full-fidelity trial with the best metric (in its direction); ties go to the lower
    latency, then the smaller one."""
    ok = [r for r in rows if r["state"] == "COMPLETE" and r["fidelity"] == "full" and r["feasible"]]
    sign = 1.0 if higher_is_better else -1.0
    return max(ok, key=lambda r: (sign * r["accuracy"], -r["latency_ms"], -r["size_bytes"]), default=None)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def finish(study: optuna.Study, space: Space, target: str, req: SearchRequest, out: Path, storage: str,
           ui: UI) -> int:
    """Write every output of this worker; 0 when a trial meets the budget, else 1."""
    higher, label = metric_higher_is_better(req.config), metric_label(req.config)
    rows = trial_rows(study, higher)
    best = pick_best(rows, higher)
    states = [r["state"] for r in rows]
    summary = {"study": req.study, "storage": storage, "target": target,
               "metric": {"name": label, "higher_is_better": higher},
               "objectives": dict(zip(("accuracy", "latency_ms", "size_bytes"), directions(higher), strict=True)),
               "knobs": list(space.knobs), "requested": req.trials, "complete": states.count("COMPLETE"),
               "failed": states.count("FAIL"), "running": states.count("RUNNING"),
               "best": None if best is None else best["number"], "best_dir": None, "trials": rows}
    if best is not None:
        summary["best_dir"] = str(_place_best(best, space, target, out / "best", ui))
    _write_json(out / "search.json", summary)
    report = new_report()
    report.update(config=req.config.name, budget=req.config.budget.model_dump(), search=summary)
    report["passed"] = best is not None
    write_report(out, report)
    from pipeline.report.html import render_html

    render_html(report, out)
    ui.console.print(pareto_table(rows, target, label))
    if best is None:
        ui.warn(f"no full-fidelity trial meets the budget ({summary['complete']} complete, "
                f"{summary['failed']} failed)")
    else:
        ui.info(f"best: trial {best['number']} {label} {best['accuracy']:.4f}, {best['latency_ms']:.3f} ms, "
                f"{best['size_bytes'] / 1024:.1f} KB -> {summary['best_dir']}")
    ui.info(f"search: {out / 'search.json'}  {out / 'report.json'}  {out / 'report.html'}")
    return 0 if best is not None else 1


def pareto_table(rows: list[dict[str, Any]], target: str, metric: str = "accuracy") -> Table:
    table = Table(title=f"edgepipe search: Pareto front on {target} (full fidelity)")
    for col in ("trial", metric, "drop", "median ms", "size KB", "budget", "params"):
        table.add_column(col, justify="left" if col in ("budget", "params") else "right")
    for r in sorted((r for r in rows if r["pareto"]), key=lambda r: r["latency_ms"]):
        drop = r["accuracy_drop"]
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r["params"].items())
        table.add_row(str(r["number"]), f"{r['accuracy']:.4f}", "-" if drop is None else f"{drop:+.4f}",
                      f"{r['latency_ms']:.3f}", f"{r['size_bytes'] / 1024:.1f}",
                      "[green]met[/green]" if r["feasible"] else "[red]missed[/red]", params)
    return table


def _place_best(best: dict[str, Any], space: Space, target: str, dest: Path, ui: UI) -> Path:
    """A trial judged on the validation split only (a real trial build: eval_set.split "validation") is built
    again from its params into `dest`, a normal build that reads the test split once, for the artifact that
    ships (stages and exports come from the cache). Otherwise: the best trial's run directory (built on this host) to `dest`, judged against the full budget;
    a trial built by another worker is rebuilt from its params."""
    src = Path(best["run_dir"]) if best.get("run_dir") else None
    validation_only = src is not None and (src / "report.json").is_file() and \
        (read_report(src).get("eval_set") or {}).get("split") == "validation"
    if src is None or best.get("hostname") != socket.gethostname() or not (src / "report.json").is_file() \
            or validation_only:
        from pipeline.build import BuildRequest, build

        ui.info(f"best: building trial {best['number']} again (chosen on the validation split) and measuring it "
                "on the test split")
        report = build(BuildRequest(derive(space, best["params"]), (target,), dest), ui)
        report["search_trial"] = best["number"]
        write_report(dest, finalize(report))
        return dest
    from pipeline.build import replace_dir
    from pipeline.measure.verify import judge
    from pipeline.report.html import render_html
    from pipeline.report.schema import TargetEntry

    tmp = Path(tempfile.mkdtemp(prefix=".best.partial-", dir=dest.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        report = read_report(tmp)
        budget = space.base.budget
        report["budget"] = budget.model_dump()
        for name, entry in report["targets"].items():
            if not entry.get("error"):
                report["targets"][name] = judge(TargetEntry.model_validate(entry), budget).as_dict()
        report["search_trial"] = best["number"]
        write_report(tmp, finalize(report))
        render_html(report, tmp)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
