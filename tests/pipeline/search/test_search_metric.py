"""`edgepipe search` with a metric where lower is better (mse): the study minimizes it, the Pareto front and
the best trial follow its direction, and max_metric_drop is the search's constraint. Real builds of a small
regressor through the tflite target."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from regression_data import train_regressor

from pipeline.cli import main
from pipeline.search.objectives import Metrics, pareto_flags
from pipeline.search.report import pick_best
from pipeline.search.runner import promote


def test_lower_is_better_fronts_and_promotion() -> None:
    errors = [Metrics(0.10, 2.0, 100, higher_is_better=False), Metrics(0.20, 1.0, 100, higher_is_better=False),
              Metrics(0.30, 2.0, 100, higher_is_better=False)]  # the last: a larger error and no faster
    assert pareto_flags(errors) == [True, True, False]
    assert promote(Metrics(0.05, 3.0, 100, higher_is_better=False), errors, 0.0)  # the smallest error
    assert not promote(Metrics(0.40, 2.0, 100, higher_is_better=False), errors, 0.25)
    rows = [{"state": "COMPLETE", "fidelity": "full", "feasible": True, "accuracy": a, "latency_ms": 1.0,
             "size_bytes": 1, "number": i} for i, a in enumerate((0.3, 0.1, 0.2))]
    assert pick_best(rows, higher_is_better=False)["number"] == 1
    assert pick_best(rows, higher_is_better=True)["number"] == 0


@pytest.mark.slow
def test_search_minimizes_mse(tmp_path: Path) -> None:
    model, data = train_regressor(tmp_path)
    cfg = tmp_path / "reg.toml"
    cfg.write_text(f'[model]\npath = "{model}"\n[data]\npath = "{data}"\n[metric]\nname = "mse"\n'
                   "[budget]\nmax_metric_drop = 0.05\n"
                   '[prune]\nmethod = "channel"\nsparsity = 0.25\nepochs = 3\nbatch_size = 64\n'
                   "[search]\ncoarse_fraction = 1.0\nseed = 1\n[targets.tflite]\niterations = 5\nwarmup = 1\n")
    out = tmp_path / "search"
    assert main(["--quiet", "search", str(cfg), "--trials", "3", "--out", str(out)]) == 0
    study = optuna.load_study(study_name="reg", storage=f"sqlite:///{out / 'study.db'}")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE", "MINIMIZE"]
    summary = json.loads((out / "search.json").read_text())
    assert summary["metric"] == {"name": "mse", "higher_is_better": False}
    assert summary["objectives"]["accuracy"] == "minimize"
    full = [r for r in summary["trials"] if r["state"] == "COMPLETE"]
    assert len(full) == 3
    for r in full:  # each trial's metric is its build's own measurement of the int8 artifact, on validation
        trial_report = json.loads((Path(r["run_dir"]) / "report.json").read_text())
        trial = trial_report["targets"]["tflite"]
        assert trial_report["eval_set"]["split"] == "validation" and not (Path(r["run_dir"]) / "data/eval.npz").exists()
        assert r["accuracy"] == trial["metric_value"] and r["feasible"] == (trial["metric_drop"] <= 0.05)
    feasible = [r for r in full if r["feasible"]]
    best = min(feasible, key=lambda r: (r["accuracy"], r["latency_ms"], r["size_bytes"]))
    assert summary["best"] == best["number"]
    # the chosen trial is built again and measured once on the test split; the trial's validation value is
    # the one it was chosen by
    promoted = json.loads((out / "best" / "report.json").read_text())
    assert promoted["search_trial"] == best["number"] and promoted["eval_set"]["split"] == "test"
    assert promoted["targets"]["tflite"]["metric"]["split"] == "test"
