"""The edgepipe command end to end: builds from .h5 and SavedModel, caching, exit codes 0/1/2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import BUILT_RUN_BUDGET, tiny_cnn, write_config
from legacy_h5 import write_keras2_h5

from pipeline.cli import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["--quiet", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


BUDGET = f"[budget]\nmax_accuracy_drop = {BUILT_RUN_BUDGET}\n"  # the trained CNN's, sized in conftest


def _within_budget(report: dict) -> None:
    for name, t in report["targets"].items():
        assert "error" not in t, f"{name}: {t.get('error')}"
        assert t["accuracy_drop"] <= BUILT_RUN_BUDGET, f"{name}: {t['accuracy']} vs {report['reference']['accuracy']}"


@pytest.mark.slow
def test_build_from_legacy_keras2_h5(tmp_path: Path, trained_cnn: Path, digits_npz: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import keras

    # the trained CNN as a Sequential of the same layers (the .h5 writer's form), its trained weights copied
    model = keras.Sequential([keras.Input((8, 8, 1)), *tiny_cnn().layers[1:]])
    model.set_weights(keras.saving.load_model(trained_cnn).get_weights())
    h5 = tmp_path / "old.h5"
    write_keras2_h5(h5, model, (8, 8, 1))
    cfg = write_config(tmp_path / "h5.toml", h5, digits_npz, BUDGET,
                       targets=("tflite", "openvino"))
    rc, out, err = _run(["build", str(cfg), "--out", str(tmp_path / "run"), "--json"], capsys)
    report = json.loads(out)
    _within_budget(report)
    assert rc == 0, err
    # the weights survive the .h5: the reference is as accurate as the trained CNN it was written from (test
    # split; one sample of slack for float rounding), and that one is trained (0.90-0.97 across sessions, 0.88
    # seen once: tests/conftest.py)
    with np.load(digits_npz) as d:
        x, y = (d["x_test"][..., None] / 16.0).astype(np.float32), d["y_test"]
    trained = float(np.mean(model.predict(x, verbose=0).argmax(1) == y))
    assert report["reference"]["format"] == "h5" and trained > 0.85
    assert abs(report["reference"]["accuracy"] - trained) <= 1 / len(y), (report["reference"]["accuracy"], trained)
    assert set(report["targets"]) == {"tflite", "openvino"}
    _within_budget(report)


@pytest.mark.slow
def test_build_from_saved_model(tmp_path: Path, trained_cnn: Path, digits_npz: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    import keras

    keras.saving.load_model(trained_cnn).export(str(tmp_path / "sm"), verbose=False)
    cfg = write_config(tmp_path / "sm.toml", tmp_path / "sm", digits_npz, BUDGET)
    rc, out, err = _run(["build", str(cfg), "--out", str(tmp_path / "run"), "--json"], capsys)
    assert rc == 0, err
    report = json.loads(out)
    assert report["reference"]["path"] == "reference/saved_model"
    assert (tmp_path / "run" / "reference" / "saved_model" / "saved_model.pb").is_file()
    _within_budget(report)
    # compression needs a Keras model, and says so
    cfg2 = write_config(tmp_path / "sm2.toml", tmp_path / "sm", digits_npz, "[prune]\nsparsity = 0.5\n")
    rc, _, err = _run(["build", str(cfg2), "--out", str(tmp_path / "run2")], capsys)
    assert rc == 2 and "need a Keras model" in err and not (tmp_path / "run2").exists()


@pytest.mark.slow
def test_build_from_keras2_saved_model_with_optimizer_slots(tmp_path: Path, keras2_saved_model: tuple[Path, float],
                                                            digits_npz: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cache import content_hash as file_hash

    path, keras2_acc = keras2_saved_model
    cfg = write_config(tmp_path / "k2.toml", path, digits_npz, BUDGET)
    rc, out, err = _run(["build", str(cfg), "--out", str(tmp_path / "run"), "--json"], capsys)
    assert out, err  # exit 2 and no report: the model did not load
    report = json.loads(out)
    ref = report["reference"]
    assert ref["format"] == "saved_model" and "TF1 loader" in ref["notes"][0]
    assert ref["path"] == "reference/saved_model"  # the user's files, not the re-export
    assert file_hash(tmp_path / "run" / ref["path"]) == file_hash(path)
    assert abs(ref["accuracy"] - keras2_acc) < 1e-6, (ref["accuracy"], keras2_acc)
    assert set(report["targets"]) == {"tflite", "openvino", "tensorrt"}
    _within_budget(report)
    assert rc == 0, err


def test_second_build_reuses_the_cache_and_budget_miss_exits_1(
        built_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = next(built_run.parent.glob("*.toml"))
    text = cfg.read_text().replace("[budget]\n", "[budget]\nmax_size_kb = 1\n")
    assert "max_size_kb = 1" in text
    strict = tmp_path / "strict.toml"
    strict.write_text(text)
    rc, out, err = _run(["build", str(strict), "--out", str(tmp_path / "run"), "--target", "tflite", "--json"],
                        capsys)
    assert rc == 1
    report = json.loads(out)
    t = report["targets"]["tflite"]
    assert t["cached"] is True and report["passed"] is False and t["passed"] is False
    assert any("max_size_kb" in v for v in t["violations"])
    assert (tmp_path / "run" / "report.json").is_file()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["build", "nope.toml"], "config file not found"),
        (["build", "no-such-example"], "no such config file or built-in example"),
        (["build", "digits-cnn", "--target", "coreml"], "unknown target 'coreml'"),
        (["build", "--bogus"], "unrecognized arguments"),
        (["bench", "missing.tflite"], "artifact not found"),
        (["verify", "."], "no report.json"),
    ],
)
def test_usage_errors_are_one_line_exit_2(argv: list[str], expected: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if argv[1:2] == ["--bogus"] else _nullcontext() as info:
        rc, _, err = _run(argv, capsys)
    if info is not None and hasattr(info, "value"):
        rc, err = info.value.code, capsys.readouterr().err
    assert rc == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir()), "nothing may be written on bad input"


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def test_bad_data_leaves_no_run_directory(tmp_path: Path, trained_cnn: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.ones((10, 9, 9)), y_train=np.zeros(10), x_test=np.ones((5, 9, 9)), y_test=np.zeros(5))
    cfg = write_config(tmp_path / "c.toml", trained_cnn, bad)
    rc, _, err = _run(["build", str(cfg), "--out", str(tmp_path / "runs" / "x")], capsys)
    assert rc == 2 and "does not fit the model input 8x8x1" in err
    assert list((tmp_path / "runs").iterdir()) == []


def test_verify_bench_report_and_examples(built_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "copy"
    shutil.copytree(built_run, run)
    (run / "report.html").unlink()
    rc, out, err = _run(["verify", str(run), "--json"], capsys)
    assert rc == 0, err
    report = json.loads(out)
    assert report["targets"]["openvino"]["device"] == "host" and (run / "report.html").is_file()
    rc, out, _ = _run(["bench", str(run / "openvino" / "model_int8.xml"), "--iterations", "5", "--json"], capsys)
    stats = json.loads(out)
    assert rc == 0 and stats["latency_ms"]["iterations"] == 5 and stats["runtime"].startswith("openvino")
    rc, _, _ = _run(["report", str(run)], capsys)
    assert rc == 0
    rc, out, _ = _run(["examples"], capsys)
    assert rc == 0 and "digits-cnn" in out


def test_verify_a_broken_artifact_fails_that_target_and_retries_it_later(built_run: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "copy"
    shutil.copytree(built_run, run)
    artifact = run / "tflite" / "model_int8.tflite"
    good = artifact.read_bytes()
    artifact.write_bytes(b"not a flatbuffer" * 64)
    rc, out, err = _run(["verify", str(run), "--json"], capsys)
    assert rc == 1, err  # measured, and one target failed: not a usage error, not an internal error
    report = json.loads(out)
    assert "tflite" in report["targets"]["tflite"]["error"] and report["targets"]["openvino"]["passed"]
    artifact.write_bytes(good)
    rc, out, err = _run(["verify", str(run), "--json"], capsys)
    assert rc == 0, err
    assert "error" not in json.loads(out)["targets"]["tflite"]
