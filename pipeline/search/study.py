"""The study behind `edgepipe search`: Optuna RDB storage with heartbeats (SQLite or PostgreSQL), the
seeded sampler with the budget as constraints, and recovery of trials that dead workers left RUNNING."""

from __future__ import annotations

import os
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import SearchSection
from pipeline.errors import UsageError
from pipeline.search.objectives import METRICS, SearchRequest, directions, metric_higher_is_better
from pipeline.ui import UI

if TYPE_CHECKING:
    import optuna


def worker_id() -> dict[str, Any]:
    host, pid = socket.gethostname(), os.getpid()
    return {"worker": f"{host}:{pid}", "hostname": host, "pid": pid}


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable storage URL>"


def driver_url(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; with only psycopg2 installed (the `search`
    extra installs psycopg2-binary), name that driver."""
    import importlib.util

    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception as err:
        raise UsageError(f"--storage: not a database URL ({' '.join(str(err).split())[:200]})") from None
    if u.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return u.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def open_storage(url: str, section: SearchSection) -> optuna.storages.RDBStorage:
    """The RDB storage with heartbeats; retried a few times (workers racing to create the tables)."""
    import optuna
    import sqlalchemy.exc

    sqlite = url.startswith("sqlite")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    last: Exception | None = None
    url = driver_url(url)
    for attempt in range(4):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
                warnings.simplefilter("ignore")
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                                  heartbeat_interval=section.heartbeat_interval,
                                                  grace_period=section.grace_period)
        except (sqlalchemy.exc.ArgumentError, ImportError, ValueError) as err:
            raise UsageError(f"--storage {redact(url)}: {' '.join(str(err).split())[:200]}") from None
        except Exception as err:  # connection refused, a table-creation race, ...
            last = err
            time.sleep(0.5 * 2**attempt)
    msg = " ".join(str(last).split())[:200]
    raise UsageError(f"cannot open the study storage {redact(url)}: {type(last).__name__}: {msg}")


def open_study(storage: Any, req: SearchRequest) -> optuna.Study:
    import optuna

    try:
        study = optuna.create_study(study_name=req.study, storage=storage, directions=list(directions(metric_higher_is_better(req.config))),
                                    load_if_exists=True)
    except ValueError as err:  # e.g. an existing study with other directions
        raise UsageError(f"study '{req.study}': {err}") from None
    if not study.metric_names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study.set_metric_names(list(METRICS))
        except Exception:  # another worker set them at the same moment
            pass
    study.sampler = trial_seeded_sampler(req.config.search, req.trials)
    return study


def trial_seeded_sampler(section: SearchSection, trials: int) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded per trial from ([search] seed, trial number): workers sharing a study
    draw different points, and a study with the same seed draws the same ones."""
    import optuna

    from pipeline.search.sampler import TrialSeededSampler

    def make(seed: int) -> optuna.samplers.BaseSampler:
        if section.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=max(4, min(50, trials // 2)), seed=seed)
        return optuna.samplers.TPESampler(n_startup_trials=max(2, min(10, trials // 3)), seed=seed)

    return TrialSeededSampler(make, section.seed)


def recover(study: optuna.Study, out: Path, ui: UI) -> None:
    """Fail the RUNNING trials of dead workers: stale heartbeats (any host), or a dead process on this host;
    then remove their half-written trial directories."""
    import optuna
    import psutil

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    me = worker_id()
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("hostname") != me["hostname"] or not isinstance(pid, int) or pid == me["pid"]:
            continue
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        if not alive:
            try:
                reason = f"worker {t.user_attrs['worker']} died"
                storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
                storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                ui.warn(f"trial {t.number}: its worker (pid {pid}) is gone; marked FAIL")
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    for t in failed:
        for partial in (out / "trials").glob(f".{t.number}.*partial-*"):
            shutil.rmtree(partial, ignore_errors=True)
