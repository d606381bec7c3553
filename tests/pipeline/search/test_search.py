"""`edgepipe search`: Pareto and promotion rules, the [search] space, the search loop (failed trials,
coarse to fine, outputs, exit codes), a real PostgreSQL study shared by two workers, and a killed search
that resumes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from conftest import write_config

from pipeline.config import Config, ConfigError, config_from_dict
from pipeline.errors import DataError, UsageError
from pipeline.report.document import new_report, write_report
from pipeline.search.objectives import Metrics, SearchRequest, pareto_flags
from pipeline.search.runner import promote, run_search
from pipeline.search.space import coarse, derive, plan
from pipeline.search.study import driver_url
from pipeline.ui import UI

# ---------- Pareto front and promotion ----------


def test_pareto_flags() -> None:
    pts = [Metrics(0.9, 2.0, 100), Metrics(0.8, 1.0, 100), Metrics(0.8, 2.0, 100),  # 2 dominated by 0 and 1
           Metrics(0.7, 1.0, 50), Metrics(0.9, 2.0, 100), Metrics(0.6, 3.0, 200)]  # 4 equals 0; 5 dominated
    assert pareto_flags(pts) == [True, True, False, True, True, False]
    assert pareto_flags([]) == []
    assert pareto_flags([Metrics(0.5, 1.0, 1)]) == [True]


def test_promotion_rule() -> None:
    good = [Metrics(0.9, 1.0, 100), Metrics(0.8, 1.0, 100), Metrics(0.7, 1.0, 100)]
    assert promote(Metrics(0.1, 9.0, 999), [], 0.0)  # the first coarse result always earns a full build
    assert promote(Metrics(0.5, 0.5, 100), good, 0.0)  # faster than all: non-dominated
    assert not promote(Metrics(0.6, 1.0, 100), good, 0.3)  # dominated, 4th of 4 by accuracy
    assert promote(Metrics(0.85, 1.5, 100), good, 0.5)  # dominated, but 2nd of 4: in the top half
    assert not promote(Metrics(0.85, 1.5, 100), good, 0.25)


# ---------- the [search] section and the space ----------


def _cfg(search: dict | None = None, **sections: dict) -> Config:
    data = {"model": {"path": "m.keras"}, "data": {"path": "d.npz"}, **sections}
    if search is not None:
        data["search"] = search
    return config_from_dict(data, name="t", base_dir=Path("/tmp"), source="t.toml")


@pytest.mark.parametrize(("search", "message"), [
    ({"widht": [0.2, 1.0]}, "search.widht: unknown key"),
    ({"width": [0.8, 0.2]}, "width: expected [low, high] with low <= high"),
    ({"width": [0.2, 1.5]}, "search.width.1"),
    ({"sparsity": [0.0, 1.0]}, "search.sparsity.1"),
    ({"epochs": [1]}, "search.epochs"),
    ({"calibration": ["minmax", "kl"]}, "search.calibration.1"),
    ({"calibration": []}, "search.calibration"),
    ({"calibration": ["mse", "mse"]}, "listed twice"),
    ({"coarse_fraction": 0}, "search.coarse_fraction"),
    ({"trials": 0}, "search.trials"),
    ({"target": "tpu"}, "search.target"),
    ({"heartbeat_interval": 30, "grace_period": 20}, "grace_period must be longer"),
])
def test_search_section_is_validated(search: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        _cfg(search)
    assert message in str(err.value), str(err.value)


def test_defaults_and_knobs_follow_the_stages() -> None:
    s = _cfg().search
    assert (s.trials, s.width, s.sparsity, s.epochs) == (20, (0.25, 1.0), (0.0, 0.7), (1, 10))
    assert (s.coarse_fraction, s.promote_top, len(s.calibration)) == (0.3, 0.3, 4)
    assert plan(_cfg()).knobs == ("calibration",)
    assert plan(_cfg(prune={})).knobs == ("sparsity", "calibration", "learning_rate", "epochs")
    assert plan(_cfg(distill={}, decompose={})).knobs == ("width", "rank_ratio", "calibration",
                                                           "learning_rate", "epochs")
    assert plan(_cfg(distill={"student": "s.keras"})).knobs == ("calibration", "learning_rate", "epochs")
    declared = plan(_cfg({"width": [0.5, 0.5]}))  # declared in [search]: the stage is added with defaults
    assert declared.knobs[0] == "width" and declared.base.distill is not None
    with pytest.raises(UsageError, match="needs distill.student"):
        plan(_cfg({"width": [0.5, 1.0]}, distill={"student": "s.keras"}))
    with pytest.raises(UsageError, match="no .* stage to fine-tune"):
        plan(_cfg({"learning_rate": [1e-3, 1e-2]}))


def test_sampled_params_derive_a_validated_config() -> None:
    space = plan(_cfg(prune={"epochs": 5}, distill={}, decompose={}))
    params = {"width": 0.5, "sparsity": 0.3, "rank_ratio": 0.4, "calibration": "mse", "learning_rate": 3e-3,
              "epochs": 2}
    cfg = derive(space, params)
    assert cfg.distill is not None and cfg.prune is not None and cfg.decompose is not None
    assert (cfg.distill.student, cfg.prune.sparsity, cfg.decompose.rank_ratio) == ("width:0.5", 0.3, 0.4)
    assert cfg.quantize.calibration.value == "mse"
    assert {cfg.distill.epochs, cfg.prune.epochs, cfg.decompose.epochs} == {2}
    assert cfg.prune.learning_rate == 3e-3
    assert derive(space, {**params, "sparsity": 0.0}).prune is None  # sparsity 0: no pruning
    cheap = coarse(cfg.model_copy(update={"distill": cfg.distill.model_copy(update={"epochs": 10})}), 0.3,
                   Path("/x/sub.npz"))
    assert cheap.distill is not None and cheap.distill.epochs == 3 and cheap.data is not None
    assert cheap.data.path == "/x/sub.npz"


# ---------- the search loop, with a stand-in for the build (fast) ----------


class FakeBuild:
    """Metrics from the derived config (more sparsity: smaller, faster, less accurate; coarse: less accurate);
    trial numbers in `fail` raise; writes a report.json like a build's."""

    def __init__(self, fail: tuple[str, ...] = (), error: Exception | None = None) -> None:
        self.fail, self.error, self.calls = fail, error, []  # type: ignore[var-annotated]

    def __call__(self, cfg: Config, out: Path) -> Metrics:
        self.calls.append(out.name)
        if out.name.split(".")[0] in self.fail:
            raise self.error or RuntimeError("converter exploded")
        sparsity = cfg.prune.sparsity if cfg.prune else 0.0
        acc = 0.95 - 0.5 * sparsity - (0.1 if out.name.endswith(".coarse") else 0.0)
        m = Metrics(acc, 1.0 - sparsity, int(10_000 * (1 - sparsity)), round(0.95 - acc, 6))
        report = new_report()
        report["targets"] = {"tflite": {"accuracy": m.accuracy, "accuracy_drop": m.accuracy_drop,
                                        "size_bytes": m.size_bytes, "latency_ms": {"median": m.latency_ms}}}
        out.mkdir(parents=True, exist_ok=True)
        write_report(out, report)
        return m


def test_search_loop_records_failures_coarse_to_fine_and_outputs(digits_npz: Path, tmp_path: Path) -> None:
    cfg = config_from_dict({"model": {"path": "m.keras"}, "data": {"path": str(digits_npz)}, "prune": {},
                            "budget": {"max_size_kb": 9.0},
                            "search": {"coarse_fraction": 0.5, "promote_top": 0.0, "seed": 3}},
                           name="fake", base_dir=tmp_path, source="fake.toml")
    out = tmp_path / "search"
    fake = FakeBuild(fail=("1",))
    assert run_search(SearchRequest(cfg, out, 5, None, "fake"), UI(quiet=True), measure=fake) == 0
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 5 and states[1] == "FAIL"
    assert study.trials[1].user_attrs["fail_reason"] == "RuntimeError: converter exploded"
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(t.user_attrs["fidelity"] in ("coarse", "full") and "coarse" in t.user_attrs for t in done)
    assert done[0].user_attrs["fidelity"] == "full"  # the first coarse result is always promoted
    for t in done:  # a full build happened exactly for the promoted trials
        assert (str(t.number) in fake.calls) == (t.user_attrs["fidelity"] == "full")
    assert (out / "coarse" / "train_subset.npz").is_file()
    summary = json.loads((out / "search.json").read_text())
    assert summary["complete"] == 5 and summary["failed"] == 1
    rows = {r["number"]: r for r in summary["trials"]}
    assert all(not r["pareto"] for r in rows.values() if r["fidelity"] != "full")
    feasible = [r for r in rows.values() if r["feasible"] and r["fidelity"] == "full"]
    best = max(feasible, key=lambda r: (r["accuracy"], -r["latency_ms"]))
    assert summary["best"] == best["number"] and best["size_bytes"] / 1024 <= 9.0
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["search"]["trials"] and (out / "report.html").is_file()
    best_report = json.loads((out / "best" / "report.json").read_text())
    assert best_report["search_trial"] == best["number"] and best_report["passed"]
    # a second run of a finished study adds nothing; one that asks for more trials resumes it
    n_calls = len(fake.calls)
    assert run_search(SearchRequest(cfg, out, 5, None, "fake"), UI(quiet=True), measure=fake) == 0
    assert len(fake.calls) == n_calls
    assert run_search(SearchRequest(cfg, out, 6, None, "fake"), UI(quiet=True), measure=fake) == 0
    assert json.loads((out / "search.json").read_text())["complete"] == 6


def test_no_feasible_trial_exits_1_and_bad_input_is_fatal(digits_npz: Path, tmp_path: Path) -> None:
    base = {"model": {"path": "m.keras"}, "data": {"path": str(digits_npz)}, "prune": {},
            "search": {"coarse_fraction": 1.0, "sampler": "nsga2"}}
    tight = config_from_dict({**base, "budget": {"max_size_kb": 0.5}}, name="t", base_dir=tmp_path,
                             source="t")
    out = tmp_path / "tight"
    assert run_search(SearchRequest(tight, out, 2, None, "t"), UI(quiet=True), measure=FakeBuild()) == 1
    summary = json.loads((out / "search.json").read_text())
    assert summary["best"] is None and not (out / "best").exists()
    assert {r["fidelity"] for r in summary["trials"]} == {"full"}
    cfg = config_from_dict(base, name="b", base_dir=tmp_path, source="b")
    with pytest.raises(DataError):  # bad input stops the search (the trial is still recorded FAIL)
        run_search(SearchRequest(cfg, tmp_path / "bad", 3, None, "b"), UI(quiet=True),
                   measure=FakeBuild(fail=("0",), error=DataError("x.npz: unreadable")))
    study = optuna.load_study(study_name="b", storage=f"sqlite:///{tmp_path / 'bad' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL"]


def test_cli_bad_input_exits_2_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text('[model]\npath = "m.keras"\n[data]\npath = "d.npz"\n[search]\nsparsity = [0.5, 0.1]\n')
    assert main(["--quiet", "search", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "sparsity: expected [low, high]" in capsys.readouterr().err
    cfg.write_text('[model]\npath = "m.keras"\n[data]\npath = "d.npz"\n')
    assert main(["--quiet", "search", str(cfg), "--trials", "0", "--out", str(tmp_path / "o")]) == 2
    assert main(["--quiet", "search", str(cfg), "--out", str(tmp_path / "o")]) == 2  # model not found
    assert not (tmp_path / "o").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(["--quiet", "search", str(cfg), "--out", str(tmp_path / "mine")]) == 2
    assert "not an edgepipe search" in capsys.readouterr().err


GRACE = 6  # seconds


def _age_heartbeats(db: Path, seconds: float) -> None:
    """Move every heartbeat stored in the study's SQLite file `seconds` into the past: what that much time
    without a beat leaves in the storage, which Optuna compares with the database's own clock."""
    with sqlite3.connect(db, timeout=30) as con:
        rows = con.execute("SELECT trial_heartbeat_id, heartbeat FROM trial_heartbeats").fetchall()
        assert rows, "no heartbeat stored"
        for row_id, beat in rows:
            then = datetime.fromisoformat(beat) - timedelta(seconds=seconds)
            con.execute("UPDATE trial_heartbeats SET heartbeat = ? WHERE trial_heartbeat_id = ?",
                        (then.isoformat(" "), row_id))
    con.close()


def test_recover_fails_trials_of_dead_workers(tmp_path: Path) -> None:
    from pipeline.search.study import open_storage, recover

    # grace 6 s: a heartbeat is fresh for that long, also when a loaded host (a parallel test run) stalls the
    # steps between it and recover() by a few seconds (2 s failed so, at a load of 8 on 2 cores)
    section = _cfg({"heartbeat_interval": 1, "grace_period": GRACE}).search
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}", section),
                                directions=["maximize", "minimize", "minimize"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    workers = {"elsewhere": ("other-host", 1), "dead": (host, gone.pid), "alive": (host, os.getppid())}
    trials = {}
    for name, (hostname, pid) in workers.items():
        trial = study.ask()
        trial.set_user_attr("hostname", hostname)
        trial.set_user_attr("pid", pid)
        trial.set_user_attr("worker", f"{hostname}:{pid}")
        study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
        trials[name] = trial.number
    (tmp_path / "trials" / f".{trials['dead']}.partial-x").mkdir(parents=True)

    def state(name: str) -> str:
        return study.trials[trials[name]].state.name

    recover(study, tmp_path, UI(quiet=True))  # at once: the dead process on this host
    assert (state("elsewhere"), state("dead"), state("alive")) == ("RUNNING", "FAIL", "RUNNING")
    assert "died" in study.trials[trials["dead"]].user_attrs["fail_reason"]
    assert not (tmp_path / "trials" / f".{trials['dead']}.partial-x").exists()
    study._storage.record_heartbeat(study.trials[trials["alive"]]._trial_id)  # type: ignore[attr-defined]
    _age_heartbeats(tmp_path / "s.db", GRACE + 2)  # as if GRACE + 2 s passed without a beat (no sleep)
    study._storage.record_heartbeat(study.trials[trials["alive"]]._trial_id)  # type: ignore[attr-defined]
    recover(study, tmp_path, UI(quiet=True))  # the other host's worker stopped beating: stale after GRACE
    assert (state("elsewhere"), state("alive")) == ("FAIL", "RUNNING")


# ---------- real builds in worker processes ----------


def _config(folder: Path, model: Path, npz: Path, stages: str = "", search: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = write_config(folder / "tiny.toml", model, npz, f"{stages}\n[search]\n{search}",
                        targets=("tflite",))
    text = path.read_text().replace("calibration_samples = 200", "calibration_samples = 50")
    path.write_text(text.replace("iterations = 20", "iterations = 10"))
    return path


def _start(cfg: Path, out: Path, *args: str) -> subprocess.Popen[bytes]:
    (out.parent / "tmp").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(out.parent / "tmp")}
    log = (out.parent / f"{out.name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--quiet", "search", str(cfg),
                             "--out", str(out), *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out.parent)


def _log(out: Path) -> str:
    path = out.parent / f"{out.name}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _search_in_process(cfg: Path, out: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`edgepipe search` in this process (its trials' pid: os.getpid()), with the TMPDIR and working folder
    that _start gives a worker process; the exit code and stderr."""
    from pipeline.cli import main

    (out.parent / "tmp").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("TMPDIR", str(out.parent / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # found again from TMPDIR, as in a fresh process
    monkeypatch.chdir(out.parent)
    capsys.readouterr()
    rc = main(["--quiet", "search", str(cfg), "--out", str(out), *args])
    return rc, capsys.readouterr().err[-3000:]


def _pg_trials_with_a_pid(url: str) -> int:
    """Trials of the shared study that a worker has started (set its pid on); 0 before the tables exist."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(driver_url(url), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as con:
            return int(con.execute(sqlalchemy.text(
                "SELECT count(*) FROM trial_user_attributes WHERE key = 'pid'")).scalar_one())
    except sqlalchemy.exc.SQLAlchemyError:  # the first worker has not created the tables yet
        return 0
    finally:
        engine.dispose()


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study(postgres: str, trained_cnn: Path, digits_npz: Path,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Two workers on one PostgreSQL study: a worker process, and this process once that one runs a trial
    (so that each runs one of the two trials whatever the load: this one would otherwise be first)."""
    # heartbeat 1 s: a worker waiting for the other's trial looks again each second, not each 5 s
    cfg = _config(tmp_path, trained_cnn, digits_npz, search="coarse_fraction = 1.0\nheartbeat_interval = 1\n")
    outs = [tmp_path / f"worker{i}" for i in range(2)]
    args = ("--trials", "2", "--storage", postgres, "--study", "shared")
    proc = _start(cfg, outs[0], *args)
    deadline = time.monotonic() + 300
    while not _pg_trials_with_a_pid(postgres):
        assert proc.poll() is None, _log(outs[0])
        assert time.monotonic() < deadline, "the worker process started no trial"
        time.sleep(0.2)
    rc, err = _search_in_process(cfg, outs[1], monkeypatch, capsys, *args)
    assert [proc.wait(timeout=600), rc] == [0, 0], _log(outs[0]) + "\n" + err
    study = optuna.load_study(study_name="shared", storage=driver_url(postgres))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 2
    assert {t.user_attrs["pid"] for t in study.trials} == {proc.pid, os.getpid()}  # both workers ran trials
    host = socket.gethostname()
    assert all(t.user_attrs["worker"] == f"{host}:{t.user_attrs['pid']}" for t in study.trials)
    for t in done:
        assert t.user_attrs["fidelity"] == "full"
        assert 0 < t.values[0] <= 1 and t.values[1] > 0 and t.values[2] > 0
    for out in outs:  # each worker's outputs cover the whole study
        summary = json.loads((out / "search.json").read_text())
        assert len(summary["trials"]) == len(study.trials) and summary["storage"].startswith("postgresql")
        assert (out / "best" / "tflite" / "model_int8.tflite").is_file()


def _query(db: Path, sql: str) -> list[str]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return [r[0] for r in con.execute(sql)]
    except sqlite3.Error:  # not created yet
        return []


def _states(db: Path) -> list[str]:
    return _query(db, "SELECT state FROM trials ORDER BY number")


@pytest.mark.slow
def test_killed_search_resumes(trained_cnn: Path, digits_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """A worker process killed in its first trial; the search run again (in this process) fails that trial
    and completes the study."""
    cfg = _config(tmp_path, trained_cnn, digits_npz, stages="[prune]\nepochs = 1\n",
                  search="epochs = [1, 1]\ncoarse_fraction = 1.0\nheartbeat_interval = 1\ngrace_period = 3\n")
    out = tmp_path / "search"
    proc = _start(cfg, out, "--trials", "2")
    deadline = time.monotonic() + 300
    while "RUNNING" not in _states(out / "study.db") or not _query(
            out / "study.db", "SELECT value_json FROM trial_user_attributes WHERE key = 'pid'"):
        assert proc.poll() is None, _log(out)
        assert time.monotonic() < deadline, "no trial started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _states(out / "study.db") == ["RUNNING"]  # left behind by the killed worker
    rc, err = _search_in_process(cfg, out, monkeypatch, capsys, "--trials", "2")
    assert rc == 0, err
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert {t.user_attrs["pid"] for t in study.trials} == {proc.pid, os.getpid()}
    assert not list((out / "trials").glob(".0.*"))  # the killed trial's half-written build is gone
    summary = json.loads((out / "search.json").read_text())
    assert summary["complete"] == 2 and summary["failed"] == 1 and summary["trials"][0]["fail_reason"]
    assert summary["best"] in (1, 2) and (out / "best" / "report.json").is_file()
    report = json.loads((out / "report.json").read_text())
    assert any(t["pareto"] for t in report["search"]["trials"]) and (out / "report.html").is_file()
