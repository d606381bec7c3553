"""The built-in examples end to end, as `./scripts/demo` runs them: every target within 1 point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("example", ["digits-cnn", "digits-lstm"])
def test_example_builds_three_int8_targets_within_a_point(example: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--quiet", "build", example, "--out", str(tmp_path / "run"), "--json"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    ref = report["reference"]
    assert ref["accuracy"] >= (0.97 if example == "digits-cnn" else 0.95)
    assert [s["name"] for s in report["stages"]][0] == "distill"
    final = report["stages"][-1]
    for name in ("tflite", "openvino", "tensorrt"):
        t = report["targets"][name]
        assert "error" not in t, t.get("error")
        assert t["precision"] == "int8" and t["accuracy_drop"] <= 0.01, (name, t["accuracy"], ref["accuracy"])
    assert rc == 0, err
    if example == "digits-cnn":  # the compression issue's size goals
        assert [s["name"] for s in report["stages"]] == ["distill", "prune"]
        assert final["params"] <= 0.25 * ref["params"]
        for name in ("tflite", "openvino", "tensorrt"):  # the IR counts its .xml and .bin
            assert report["targets"][name]["size_bytes"] <= ref["size_bytes"] / 10, name


@pytest.mark.slow
def test_anomaly_example_is_judged_by_reconstruction_auc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """digits-anomaly: an autoencoder (no classes), the held-out digit as anomaly, AUC in every runtime."""
    rc = main(["--quiet", "build", "digits-anomaly", "--out", str(tmp_path / "run"), "--json"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert rc == 0, err
    assert report["metric"]["name"] == "reconstruction_auc" and report["reference"]["accuracy"] is None
    assert report["reference"]["metric_value"] >= 0.95
    for name in ("tflite", "openvino", "tensorrt"):
        t = report["targets"][name]
        assert t["precision"] == "int8" and t["metric_drop"] <= 0.01, (name, t["metric_value"])
        assert all(a["passed"] == (a is t["attempts"][-1]) for a in t["attempts"])  # attempts judged as verified
    main(["examples"])
    assert "digits-anomaly" in capsys.readouterr().out


@pytest.mark.slow
def test_twohead_example_checks_every_output_in_every_runtime(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """digits-twohead: two inputs, two outputs; accuracy on `digit`, and `digit` and `ink` each against the float
    twin in every runtime."""
    rc = main(["--quiet", "build", "digits-twohead", "--out", str(tmp_path / "run"), "--json"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert rc == 0, err
    assert report["metric"]["output"] == "digit" and report["eval_set"]["inputs"] == ["image", "halves"]
    assert report["reference"]["accuracy"] >= 0.94
    for name in ("tflite", "openvino", "tensorrt"):
        t = report["targets"][name]
        assert t["precision"] == "int8" and t["accuracy_drop"] <= 0.01, (name, t["accuracy"])
        assert set(t["outputs"]) == {"digit", "ink"}
        assert t["outputs"]["digit"]["agreement_top1"] >= 0.97 and t["outputs"]["ink"]["sqnr_db"] >= 8.0, t["outputs"]
    main(["examples"])
    assert "digits-twohead" in capsys.readouterr().out
