"""`edgepipe search`: a seeded multi-objective Optuna study over the compression knobs of a config.

Objectives: the int8 artifact's task metric (accuracy unless [metric] says otherwise; max, or min for errors), median latency on the verifying target (min), artifact size (min), each
measured by a normal build in the target's runtime; [budget] limits are constraints. The study lives in an
Optuna RDB storage (SQLite in the run directory, or a shared PostgreSQL URL for many workers) and resumes:
trials left RUNNING by a dead worker are failed (heartbeat grace period, or at once for a dead process on
this host). Coarse-to-fine: each trial is first built on a training subset with fewer epochs, and built in
full only when promising (non-dominated among the coarse results so far, or in the top `promote_top` by
accuracy).
"""

from __future__ import annotations

import gc
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import BudgetSection, Config
from pipeline.errors import TargetError, UsageError
from pipeline.search.objectives import Metrics, SearchRequest, dominates, metric_higher_is_better
from pipeline.search.space import Space, coarse, plan, sample, trial_budget, write_training_subset
from pipeline.ui import UI

if TYPE_CHECKING:
    import optuna

SEARCH_MARKERS = ("study.db", "search.json", "trials")

Measure = Callable[[Config, Path], Metrics]


def promote(current: Metrics, others: Sequence[Metrics], top: float) -> bool:
    """A coarse result earns the full build when no other coarse result dominates it, or when its accuracy
    ranks in the top `top` fraction of the coarse results so far (itself included)."""
    if not any(dominates(o, current) for o in others):
        return True
    better = sum(o.metric_better(current) for o in others)
    return better < math.ceil(top * (len(others) + 1))


def constraints(m: Metrics, budget: BudgetSection) -> dict[str, float]:
    """Optuna constraint values (<= 0 is feasible), one per limit the budget sets."""
    out = {}
    max_drop = budget.max_accuracy_drop if budget.max_accuracy_drop is not None else budget.max_metric_drop
    if max_drop is not None:
        drop = m.accuracy_drop if m.accuracy_drop is not None else max_drop + 1.0  # not measured: infeasible
        out["accuracy_drop"] = drop - max_drop
    if budget.max_latency_ms is not None:
        out["latency_ms"] = m.latency_ms - budget.max_latency_ms
    if budget.max_size_kb is not None:
        out["size_kb"] = m.size_bytes / 1024 - budget.max_size_kb
    return out


def measure_build(target: str, higher_is_better: bool = True) -> Measure:
    """A trial's measurement: a normal build for one target, quiet, into `out`."""
    def run(cfg: Config, out: Path) -> Metrics:
        import keras
        import tensorflow as tf

        from pipeline.build import BuildRequest, build

        tf.get_logger().setLevel("ERROR")  # retracing notices: every trial builds new models

        try:
            report = build(BuildRequest(trial_budget(cfg), (target,), out, validation_only=True), UI(quiet=True))
        finally:
            keras.backend.clear_session()
            gc.collect()
        entry = report["targets"][target]
        if entry.get("error"):
            raise TargetError(entry["error"])
        if entry.get("accuracy") is None:
            raise TargetError(f"{target}: the artifact's accuracy was not measured")
        return Metrics(float(entry["accuracy"]), float(entry["latency_ms"]["median"]),
                       int(entry["size_bytes"]),
                       entry.get("accuracy_drop"), higher_is_better)
    return run


class Objective:
    """One trial: sample a config, build it coarse, then in full if promising; record it in user attrs."""

    def __init__(self, space: Space, out: Path, coarse_data: Path | None, measure: Measure, ui: UI) -> None:
        self.space, self.out, self.coarse_data, self.measure, self.ui = space, out, coarse_data, measure, ui
        self.fatal: UsageError | None = None
        self.failed = 0

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        from pipeline.search.study import worker_id

        for k, v in worker_id().items():
            trial.set_user_attr(k, v)
        t0 = time.monotonic()
        try:
            m = self._run(trial)
        except Exception as err:
            reason = f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"
            trial.set_user_attr("fail_reason", reason)
            self.failed += 1
            self.ui.warn(f"trial {trial.number} failed: {reason}")
            if isinstance(err, UsageError):
                self.fatal = err
            raise
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: Optuna records the trial FAIL and the search stops
            trial.set_user_attr("fail_reason", "interrupted")
            raise
        trial.set_user_attr("seconds", round(time.monotonic() - t0, 2))
        return m.values()

    def _run(self, trial: optuna.Trial) -> Metrics:
        s = self.space.section
        cfg = sample(trial, self.space)
        trials = self.out / "trials"
        if s.coarse_fraction < 1:
            cheap = coarse(cfg, s.coarse_fraction, self.coarse_data)
            m = self.measure(cheap, trials / f"{trial.number}.coarse")
            trial.set_user_attr("coarse", asdict(m))
            self.ui.info(f"trial {trial.number} (coarse): accuracy {m.accuracy:.4f}, {m.latency_ms:.3f} ms, "
                         f"{m.size_bytes / 1024:.1f} KB")
            others = [Metrics(**t.user_attrs["coarse"]) for t in trial.study.get_trials(deepcopy=False)
                      if t.number != trial.number and "coarse" in t.user_attrs and t.state.name != "FAIL"]
            if not promote(m, others, s.promote_top):
                self._record(trial, m, "coarse", trials / f"{trial.number}.coarse")
                return m
        m = self.measure(cfg, trials / str(trial.number))
        self._record(trial, m, "full", trials / str(trial.number))
        return m

    def _record(self, trial: optuna.Trial, m: Metrics, fidelity: str, run_dir: Path) -> None:
        limits = constraints(m, self.space.base.budget)
        for key, value in limits.items():
            trial.set_constraint(key, value)
        feasible = all(c <= 0 for c in limits.values())
        for k, v in {"fidelity": fidelity, "metrics": asdict(m), "feasible": feasible,
                     "run_dir": str(run_dir.resolve())}.items():
            trial.set_user_attr(k, v)
        self.ui.info(f"trial {trial.number} ({fidelity}): accuracy {m.accuracy:.4f}, {m.latency_ms:.3f} ms, "
                     f"{m.size_bytes / 1024:.1f} KB{'' if feasible else ', misses the budget'}")


def check_search_out(out: Path) -> Path:
    """A new or empty directory, or an earlier search's (resumed): never someone else's files."""
    try:
        resolved = out.resolve()
        if resolved.exists():
            if not resolved.is_dir():
                raise UsageError(f"--out {out}: exists and is not a directory")
            if any(resolved.iterdir()) and not any((resolved / m).exists() for m in SEARCH_MARKERS):
                raise UsageError(f"--out {out}: a directory with files that is not an edgepipe search; "
                                 "refusing to write into it")
    except OSError as err:
        raise UsageError(f"--out {out}: {err.strerror or err}") from None
    return resolved


def _counts(study: optuna.Study) -> tuple[int, int]:
    """COMPLETE and RUNNING trials of the study."""
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    return states.count("COMPLETE"), states.count("RUNNING")


def target_of(config: Config) -> str:
    chosen = config.search.target.value if config.search.target is not None else None
    return chosen or next(iter(config.targets.enabled()), "tflite")


def run_search(req: SearchRequest, ui: UI, measure: Measure | None = None) -> int:
    """Run this worker's share of the study, then write the outputs; the exit code (0: a feasible trial)."""
    import optuna

    from pipeline.search.report import finish
    from pipeline.search.study import open_storage, open_study, recover, redact

    higher = metric_higher_is_better(req.config)
    space = plan(req.config)
    out = check_search_out(req.out)
    target = target_of(req.config)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        storage = open_storage(req.storage or f"sqlite:///{out / 'study.db'}", req.config.search)
        study = open_study(storage, req)
    except UsageError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    recover(study, out, ui)
    s = req.config.search
    subset = write_training_subset(space.base, s.coarse_fraction, out / "coarse" / "train_subset.npz", s.seed)
    objective = Objective(space, out, subset, measure or measure_build(target, higher), ui)
    complete, running = _counts(study)
    ui.info(f"study '{req.study}' ({redact(storage.url)}): {complete} of {req.trials} trials complete; "
            f"knobs {', '.join(space.knobs)}; target {target}")
    while complete < req.trials:
        if objective.failed >= max(3, req.trials):
            ui.warn(f"stopping: {objective.failed} trials of this worker failed")
            break
        if complete + running < req.trials:
            study.optimize(objective, n_trials=1, catch=(Exception,))
            if objective.fatal is not None:
                raise objective.fatal
        else:  # the rest are running in other workers: wait for them (or for their heartbeats to go stale)
            time.sleep(min(5, s.heartbeat_interval))
            recover(study, out, ui)
        complete, running = _counts(study)
    recover(study, out, ui)
    return finish(study, space, target, req, out, redact(storage.url), ui)
