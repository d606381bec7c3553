"""Workers that share one study draw different points, and a study stays reproducible from its seed.

Two workers are two `open_study` calls on one RDB storage (a SQLite file, as `--storage` would name it),
each with its own sampler, opened before either samples: what workers started together by one CI job do.
They run in this one process, so they have the same pid, as workers in separate containers often do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from pipeline.config import Config, config_from_dict
from pipeline.search.objectives import SearchRequest
from pipeline.search.space import plan, sample
from pipeline.search.study import open_storage, open_study


def _config(seed: int, sampler: str) -> Config:
    data = {"model": {"path": "m.keras"}, "data": {"path": "d.npz"}, "distill": {}, "prune": {},
            "search": {"seed": seed, "sampler": sampler}}
    return config_from_dict(data, name="t", base_dir=Path("/tmp"), source="t.toml")


def _worker(db: Path, seed: int = 0, sampler: str = "tpe", trials: int = 4) -> optuna.Study:
    cfg = _config(seed, sampler)
    url = f"sqlite:///{db}"
    req = SearchRequest(cfg, db.parent, trials, url, "shared")
    return open_study(open_storage(url, cfg.search), req)


def _ask(study: optuna.Study, seed: int = 0, sampler: str = "tpe") -> tuple[optuna.Trial, dict[str, Any]]:
    trial = study.ask()
    sample(trial, plan(_config(seed, sampler)))
    return trial, dict(trial.params)


def _values(params: dict[str, Any]) -> tuple[float, float, float]:
    """Deterministic stand-in objectives: what a build would measure for these knobs."""
    return (params["width"] - params["sparsity"], params["width"] * 10, params["width"] * (1 - params["sparsity"]))


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_two_workers_on_one_study_draw_different_points(tmp_path: Path, sampler: str) -> None:
    a, b = _worker(tmp_path / "study.db", sampler=sampler), _worker(tmp_path / "study.db", sampler=sampler)
    (ta, pa), (tb, pb) = _ask(a, sampler=sampler), _ask(b, sampler=sampler)
    assert ta.number != tb.number
    assert pa != pb, "two workers sampled the same point"
    assert pa["width"] != pb["width"]


def draw(db: Path, seed: int, sampler: str, trials: int = 4) -> list[dict[str, Any]]:
    """One worker's study from scratch: ask, sample, tell `trials` times; the params drawn."""
    study, drawn = _worker(db, seed, sampler), []
    for _ in range(trials):  # 2 startup trials, then the model-based sampler
        trial, params = _ask(study, seed, sampler)
        study.tell(trial, _values(params))
        drawn.append(params)
    return drawn


def _draw_in_a_new_process(db: Path, seed: int, sampler: str) -> list[dict[str, Any]]:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from test_search_workers import draw; from pathlib import Path; "
            f"print(json.dumps(draw(Path({str(db)!r}), {seed}, {sampler!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_one_worker_with_the_same_seed_draws_the_same_points(tmp_path: Path, sampler: str) -> None:
    """Reproducible from the seed across runs (processes with other pids), on a --storage URL too."""
    first = _draw_in_a_new_process(tmp_path / "a.db", 7, sampler)
    assert _draw_in_a_new_process(tmp_path / "b.db", 7, sampler) == first
    assert draw(tmp_path / "c.db", 7, sampler) == first
    assert draw(tmp_path / "d.db", 8, sampler) != first
    assert len({p["width"] for p in first}) == 4  # no repeats within the study either
