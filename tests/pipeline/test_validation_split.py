"""Choices on the validation split, the test split read once (issue: verdicts an expert would sign).

One model whose plain int8 misses by several points (tests/outliers.py) climbs the accuracy-aware ladder; the
same build with the test labels permuted must choose the same attempts and write the same bytes; a read log
counts who read which split's labels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config

from pipeline.cli import main


def _permuted(npz: Path, dest: Path) -> Path:
    with np.load(npz) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["y_test"] = np.random.default_rng(7).permutation(arrays["y_test"])
    np.savez(dest, **arrays)
    return dest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CHOICE_KEYS = ("calibration", "equalize", "equalization", "cross_layer_equalization", "float_layers", "int16_layers",
               "qat", "accuracy", "accuracy_drop", "passed", "samples")


@pytest.fixture(scope="module")
def two_builds(outlier_model: Path, digits_npz: Path, tmp_path_factory: pytest.TempPathFactory,
               ) -> tuple[tuple[int, dict, Path, list[str]], tuple[int, dict, Path]]:
    import os

    work = tmp_path_factory.mktemp("valsplit")
    extra = "[budget]\nmax_accuracy_drop = 0.02\n"
    cfg = write_config(work / "a.toml", outlier_model, digits_npz, extra, targets=("tflite",))
    log = work / "reads.log"
    os.environ["EDGEPIPE_READ_LOG"] = str(log)
    try:
        rc_a, rep_a = _build_quiet(cfg, work / "a")
    finally:
        del os.environ["EDGEPIPE_READ_LOG"]
    cfg_b = write_config(work / "b.toml", outlier_model, _permuted(digits_npz, work / "permuted.npz"), extra,
                         targets=("tflite",))
    rc_b, rep_b = _build_quiet(cfg_b, work / "b")
    return (rc_a, rep_a, work / "a", log.read_text().splitlines()), (rc_b, rep_b, work / "b")


def _build_quiet(cfg: Path, out: Path) -> tuple[int, dict]:
    rc = main(["--quiet", "build", str(cfg), "--out", str(out)])
    return rc, json.loads((out / "report.json").read_text())


def test_choices_do_not_depend_on_the_test_labels(two_builds) -> None:
    (rc_a, a, run_a, _), (rc_b, b, run_b) = two_builds
    ta, tb = a["targets"]["tflite"], b["targets"]["tflite"]
    assert len(ta["attempts"]) >= 2, "plain int8 must miss for the ladder to choose"
    assert [{k: x.get(k) for k in CHOICE_KEYS} for x in ta["attempts"]] == \
        [{k: x.get(k) for k in CHOICE_KEYS} for x in tb["attempts"]]
    assert ta["precision"] == tb["precision"] and ta["artifact"] == tb["artifact"]
    assert _sha(run_a / ta["artifact"]) == _sha(run_b / tb["artifact"])
    assert ta["selection"] == {**tb["selection"], "test_value": ta["selection"]["test_value"],
                               "test_drop": ta["selection"]["test_drop"]}
    # only the test-split numbers differ: permuted labels score near chance
    assert a["reference"]["accuracy"] > 0.8 and b["reference"]["accuracy"] < 0.3
    assert a["reference"]["metric"]["validation_value"] == b["reference"]["metric"]["validation_value"]


def test_the_test_split_is_read_once_per_shipped_artifact_plus_the_reference(two_builds) -> None:
    (rc, report, run, reads), _ = two_builds
    t = report["targets"]["tflite"]
    test_reads = [r for r in reads if r.endswith("eval.npz") or r.startswith("reference: test")]
    assert sorted(Path(r).name if r.endswith(".npz") else r for r in test_reads) == \
        ["eval.npz", "reference: test split"], reads
    val_reads = [r for r in reads if r.endswith("val.npz")]
    assert len(val_reads) >= len(t["attempts"]) >= 2  # every attempt judged on the validation split


def test_the_report_gives_validation_beside_test_and_the_drop_with_its_interval(two_builds) -> None:
    (rc, report, run, _), _ = two_builds
    t = report["targets"]["tflite"]
    sel, m = t["selection"], t["metric"]
    assert sel["split"] == "validation" and sel["candidates"] == len(t["attempts"])
    assert sel["samples"] == report["validation_set"]["samples"] > 0
    assert report["validation_set"]["source"] == "held out"
    chosen = next(x for x in t["attempts"] if x["accuracy"] == sel["validation_value"])
    assert chosen and sel["test_value"] == t["accuracy"]
    assert m["name"] == "accuracy" and m["split"] == "test" and m["samples"] == report["eval_set"]["samples"]
    lo, hi = m["interval"]
    assert lo <= m["drop"] <= hi and hi - lo > 0 and m["method"] == "newcombe-paired"
    assert m["uncertain"] == (lo <= 0.02 <= hi)
    # 360 test images cannot resolve a 0.02 budget at 95%: the build says so and how many would
    assert any("cannot resolve the budget 0.02" in n and "samples would" in n for n in t["notes"])
    # the validation split is held out of training: together with train it is the npz's training split
    with np.load(run / "data" / "val.npz") as v:
        assert len(v["y"]) == sel["samples"]
