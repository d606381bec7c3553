"""Bad input through the CLI: every case exits 2 with one line on stderr, no traceback, and nothing left
where the run would have gone. Plus safe model loading and paths that cannot leave the run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main

RUN_NAME = "run"


@dataclass(frozen=True)
class Env:
    tmp: Path
    model: Path
    npz: Path
    custom_model: Path

    @property
    def runs(self) -> Path:
        return self.tmp / "runs"

    def config(self, name: str = "c", *, model: Path | str | None = None, data: Path | str | None = None,
               data_section: str | None = None, extra: str = "", targets: str = "[targets.tflite]\n") -> Path:
        data_section = data_section or f'[data]\npath = "{data or self.npz}"\nscale = 16.0\n'
        path = self.tmp / f"{name}.toml"
        path.write_text(f'[model]\npath = "{model or self.model}"\n\n{data_section}\n{extra}\n{targets}')
        return path

    def npz_with(self, name: str, **over: object) -> Path:
        with np.load(self.npz) as d:
            arrays = {k: d[k] for k in d.files}
        arrays.update(over)  # type: ignore[arg-type]
        for k in [k for k, v in arrays.items() if v is None]:
            del arrays[k]
        path = self.tmp / name
        np.savez(path, **arrays)
        return path


def _tiny_model(path: Path) -> Path:
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, layers.Dense(10, activation="softmax")(x)).save(path)
    return path


_CUSTOM_LAYER_SCRIPT = """
import sys
import keras

@keras.saving.register_keras_serializable(package="my_pkg")
class Scale(keras.layers.Layer):
    def call(self, x):
        return x * 2.0

inp = keras.Input((8, 8, 1))
x = keras.layers.GlobalAveragePooling2D()(Scale()(inp))
model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))
model.save(sys.argv[1])
model.save(sys.argv[2])
"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory, digits_npz: Path) -> tuple[Path, Path]:
    """A tiny untrained model, and a model with a custom layer saved by another process (the class is
    unknown to this one, as it is to `edgepipe build`)."""
    folder = tmp_path_factory.mktemp("robust-models")
    custom = folder / "custom.keras"
    subprocess.run([sys.executable, "-c", _CUSTOM_LAYER_SCRIPT, str(custom), str(custom.with_suffix(".h5"))],
                   check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    return _tiny_model(folder / "tiny.keras"), custom


@pytest.fixture
def env(tmp_path: Path, assets: tuple[Path, Path], digits_npz: Path) -> Env:
    (tmp_path / "runs").mkdir()
    return Env(tmp_path, assets[0], digits_npz, assets[1])


# ---- the bad input matrix ---------------------------------------------------------------------------------

def _lambda_model(e: Env) -> Path:
    import keras

    inp = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = e.tmp / "lambda.keras"
    keras.Model(inp, keras.layers.Dense(10)(x)).save(path)
    return path


def _dynamic_input_model(e: Env) -> Path:
    import keras

    inp = keras.Input((None, None, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
    path = e.tmp / "dynamic.keras"
    keras.Model(inp, keras.layers.Dense(10)(x)).save(path)
    return path


def _truncated_h5(e: Env) -> Path:
    import keras

    full = e.tmp / "full.h5"
    keras.saving.load_model(e.model).save(full)
    data = full.read_bytes()
    path = e.tmp / "truncated.h5"
    path.write_bytes(data[: len(data) // 2])
    return path


def _bytes(e: Env, name: str, content: bytes) -> Path:
    path = e.tmp / name
    path.write_bytes(content)
    return path


def _npy(e: Env) -> Path:
    path = e.tmp / "data.npz"
    with path.open("wb") as f:
        np.save(f, np.ones((4, 8, 8)))
    return path


def _truncated_npz(e: Env) -> Path:
    data = e.npz.read_bytes()
    return _bytes(e, "cut.npz", data[: len(data) // 3])


def _build(e: Env, cfg: Path, *more: str) -> list[str]:
    return ["build", str(cfg), "--out", str(e.runs / RUN_NAME), *more]


def _existing_file_out(e: Env) -> list[str]:
    (e.runs / RUN_NAME).write_text("precious\n")
    return _build(e, e.config())


def _foreign_dir_out(e: Env) -> list[str]:
    (e.runs / RUN_NAME).mkdir()
    (e.runs / RUN_NAME / "notes.txt").write_text("precious\n")
    return _build(e, e.config())


def _out_under_a_file(e: Env) -> list[str]:
    (e.runs / "file").write_text("precious\n")
    return ["build", str(e.config()), "--out", str(e.runs / "file" / RUN_NAME)]


Case = Callable[[Env], list[str]]

BAD_INPUTS: list[tuple[str, Case, str]] = [
    # model files
    ("model-missing", lambda e: _build(e, e.config(model=e.tmp / "nope.keras")), "model not found"),
    ("model-keras-not-a-zip", lambda e: _build(e, e.config(model=_bytes(e, "bad.keras", b"not a zip"))),
     "not a valid .keras file"),
    ("model-keras-empty", lambda e: _build(e, e.config(model=_bytes(e, "empty.keras", b""))),
     "not a valid .keras file"),
    ("model-h5-truncated", lambda e: _build(e, e.config(model=_truncated_h5(e))), "cannot load the model"),
    ("model-unsupported-suffix", lambda e: _build(e, e.config(model=_bytes(e, "m.onnx", b"x"))),
     "unsupported model file"),
    ("model-lambda-layer", lambda e: _build(e, e.config(model=_lambda_model(e))), "--allow-unsafe-model"),
    ("model-unknown-custom-object", lambda e: _build(e, e.config(model=e.custom_model)),
     "unknown custom objects: Scale (registered as 'my_pkg>Scale')"),
    ("model-h5-unknown-custom-object", lambda e: _build(e, e.config(model=e.custom_model.with_suffix(".h5"))),
     "unknown custom object: my_pkg>Scale"),
    ("model-unknown-custom-object-allowed", lambda e: _build(e, e.config(model=e.custom_model),
                                                             "--allow-unsafe-model"),
     "unknown custom objects: Scale"),
    ("model-dynamic-input-shape", lambda e: _build(e, e.config(model=_dynamic_input_model(e))),
     "input ?x?x1 has unknown dimensions"),
    ("student-missing", lambda e: _build(e, e.config(extra='[distill]\nstudent = "nope.keras"\n')),
     "student model not found"),
    # data files
    ("data-missing", lambda e: _build(e, e.config(data=e.tmp / "nope.npz")), "data file not found"),
    ("data-not-npz", lambda e: _build(e, e.config(data=_bytes(e, "text.npz", b"x,y\n1,2\n"))),
     "not a readable .npz"),
    ("data-single-npy", lambda e: _build(e, e.config(data=_npy(e))), "a single .npy array"),
    ("data-truncated-npz", lambda e: _build(e, e.config(data=_truncated_npz(e))), "not a readable .npz"),
    ("data-is-a-directory", lambda e: _build(e, e.config(data=e.tmp)), "a directory without x_train.npy"),
    ("npz-missing-key", lambda e: _build(e, e.config(data=e.npz_with("k.npz", y_test=None))), "missing y_test"),
    ("data-shape-mismatch", lambda e: _build(e, e.config(data=e.npz_with(
        "s.npz", x_train=np.ones((20, 9, 9), np.float32), y_train=np.arange(20) % 10))),
     "does not fit the model input 8x8x1"),
    ("data-scalar", lambda e: _build(e, e.config(data=e.npz_with("sc.npz", x_test=np.float32(1)))),
     "a single value"),
    ("labels-out-of-range", lambda e: _build(e, e.config(data=e.npz_with(
        "l.npz", y_test=np.full(10, 10), x_test=np.ones((10, 8, 8), np.float32)))), "labels out of range"),
    ("labels-negative", lambda e: _build(e, e.config(data=e.npz_with(
        "n.npz", y_train=np.full(20, -1), x_train=np.ones((20, 8, 8), np.float32)))), "labels out of range"),
    ("labels-not-numbers", lambda e: _build(e, e.config(data=e.npz_with(
        "t.npz", y_train=np.array(["a"] * 20), x_train=np.ones((20, 8, 8), np.float32)))),
     "labels must be integer class ids"),
    ("labels-count-mismatch", lambda e: _build(e, e.config(data=e.npz_with(
        "c.npz", y_train=np.arange(19) % 10, x_train=np.ones((20, 8, 8), np.float32)))), "has 20 samples"),
    ("data-nan", lambda e: _build(e, e.config(data=e.npz_with(
        "nan.npz", x_train=np.full((20, 8, 8), np.nan, np.float32), y_train=np.arange(20) % 10))),
     "contains NaN or inf"),
    ("data-inf", lambda e: _build(e, e.config(data=e.npz_with(
        "inf.npz", x_test=np.full((10, 8, 8), np.inf, np.float32), y_test=np.arange(10)))),
     "contains NaN or inf"),
    ("data-mean-channels", lambda e: _build(e, e.config(data_section=(
        f'[data]\npath = "{e.npz}"\nmean = [0.1, 0.2, 0.3]\nstd = [1.0, 1.0, 1.0]\n'))), "3 values but"),
    ("image-folder-missing", lambda e: _build(e, e.config(data_section=(
        f'[data]\nimages = "{e.tmp / "no-such-photos"}"\nimage_size = [8, 8]\n'))), "image folder not found"),
    # config files and values
    ("config-misspelt-key", lambda e: _build(e, e.config(extra="[quantize]\ncalibration_sample = 10\n")),
     "quantize.calibration_sample: unknown key"),
    ("config-unknown-section", lambda e: _build(e, e.config(extra="[distil]\nepochs = 1\n")),
     "distil: unknown key"),
    ("config-sparsity-1.5", lambda e: _build(e, e.config(extra="[prune]\nsparsity = 1.5\n")), "prune.sparsity"),
    ("config-calibration-samples-0", lambda e: _build(e, e.config(extra="[quantize]\ncalibration_samples = 0\n")),
     "quantize.calibration_samples"),
    ("config-negative-latency-budget", lambda e: _build(e, e.config(extra="[budget]\nmax_latency_ms = -1.0\n")),
     "budget.max_latency_ms"),
    ("config-negative-size-budget", lambda e: _build(e, e.config(extra="[budget]\nmax_size_kb = -5\n")),
     "budget.max_size_kb"),
    ("config-negative-accuracy-budget", lambda e: _build(e, e.config(extra="[budget]\nmax_accuracy_drop = -0.1\n")),
     "budget.max_accuracy_drop"),
    ("config-negative-seed", lambda e: _build(e, e.config(extra="[quantize]\nseed = -1\n")), "quantize.seed"),
    ("config-nan-value", lambda e: _build(e, e.config(data_section=f'[data]\npath = "{e.npz}"\nscale = nan\n')),
     "data.scale"),
    ("config-nul-in-path", lambda e: _build(e, e.config(model="m\\u0000.keras")), "model.path"),
    ("config-not-toml", lambda e: _build(e, _bytes(e, "bad.toml", b"[model\npath = 'x'\n")), "not valid TOML"),
    ("config-not-utf8", lambda e: _build(e, _bytes(e, "bin.toml", b"\xff\xfe\x00[model]")), "not UTF-8"),
    ("config-empty", lambda e: _build(e, _bytes(e, "empty.toml", b"")), "model: Field required"),
    ("config-missing", lambda e: _build(e, e.tmp / "nope.toml"), "config file not found"),
    ("config-line-break-in-value", lambda e: _build(e, e.config(extra='[distill]\nstudent = "width:x\\ny"\n')),
     "is not 'width:<number>'"),
    # targets and devices
    ("target-unknown", lambda e: _build(e, e.config(), "--target", "coreml"), "unknown target 'coreml'"),
    ("target-path-like", lambda e: _build(e, e.config(), "--target", "../tflite"), "unknown target '../tflite'"),
    ("target-unknown-in-config", lambda e: _build(e, e.config(targets="[targets.coreml]\n")),
     "targets.coreml: unknown key"),
    ("device-unknown", lambda e: _build(e, e.config(), "--device", "nosuchdevice"),
     "unknown device 'nosuchdevice'"),
    ("device-path-like", lambda e: _build(e, e.config(), "--device", "../../etc/passwd"), "unknown device"),
    # where the run goes
    ("out-is-a-file", _existing_file_out, "exists and is not a directory"),
    ("out-is-a-foreign-directory", _foreign_dir_out, "not an edgepipe run"),
    ("out-under-a-file", _out_under_a_file, "is not a directory"),
]


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["--quiet", *argv])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(("case", "expected"), [pytest.param(c, x, id=i) for i, c, x in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_no_run(case: Case, expected: str, env: Env,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    argv = case(env)
    before = {p.name: p.read_bytes() for p in env.runs.rglob("*") if p.is_file()}
    rc, err = _cli(argv, capsys)
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("edgepipe: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    assert expected in err, err
    after = {p.name: p.read_bytes() for p in env.runs.rglob("*") if p.is_file()}
    assert after == before, "bad input must not write (or delete) anything where the run goes"
    assert not [p for p in env.runs.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    if not before:
        assert list(env.runs.iterdir()) == [], "no run directory on bad input"


def test_bad_input_count() -> None:
    """The docs' "What edgepipe guarantees" (docs/how-it-works/guarantees.md) quotes this number."""
    assert len(BAD_INPUTS) == 50
    page = (Path(__file__).resolve().parents[2] / "docs" / "how-it-works" / "guarantees.md").read_text()
    assert f"**{len(BAD_INPUTS)} bad inputs**" in page


# ---- safe loading ------------------------------------------------------------------------------------------

def test_custom_object_from_an_importable_module_needs_allow_unsafe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A custom layer whose module is importable: refused by default (naming the class), loaded with
    --allow-unsafe-model, which imports that module."""
    import keras

    from pipeline.errors import ModelLoadError
    from pipeline.inputs.models import load_model

    (tmp_path / "ep_test_layers.py").write_text(
        "import keras\n\n@keras.saving.register_keras_serializable(package='ep_test')\n"
        "class Doubler(keras.layers.Layer):\n    def call(self, x):\n        return x * 2.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import ep_test_layers  # type: ignore[import-not-found]

    inp = keras.Input((4,))
    path = tmp_path / "doubler.keras"
    keras.Model(inp, keras.layers.Dense(3)(ep_test_layers.Doubler()(inp))).save(path)
    keras.saving.get_custom_objects().pop("ep_test>Doubler")  # as in a fresh process
    monkeypatch.delitem(sys.modules, "ep_test_layers")
    with pytest.raises(ModelLoadError, match=r"unknown custom objects: Doubler .*--allow-unsafe-model"):
        load_model(path)
    assert "ep_test_layers" not in sys.modules, "safe mode imports nothing the model names"
    loaded = load_model(path, allow_unsafe=True)
    assert loaded.keras_model is not None and loaded.num_classes == 3
    keras.saving.get_custom_objects().pop("ep_test>Doubler", None)


# ---- paths -------------------------------------------------------------------------------------------------

def test_config_name_cannot_choose_the_run_directory(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`...toml` has the stem `..`: runs/.. would be the working directory, which build would replace."""
    monkeypatch.chdir(env.tmp)
    cfg = env.config("..")
    rc, err = _cli(["build", cfg.name], capsys)
    assert rc == 2 and "pass --out" in err and err.count("\n") == 1
    assert cfg.is_file() and env.model.is_file()


def test_stage_and_target_names_are_plain_folder_names(env: Env) -> None:
    """Run paths are OUT/stages/<stage>/ and OUT/<target>/: names come from code, never from the config."""
    from pipeline.commands import _RUN_NAME
    from pipeline.compress import build_stages
    from pipeline.config import TARGET_NAMES, load_config

    cfg = load_config(env.config(extra="[distill]\n[prune]\n[decompose]\n"))
    names = [s.name for s in build_stages(cfg)] + list(TARGET_NAMES)  # a target's folder is its name
    assert names and all(_RUN_NAME.fullmatch(n) and ".." not in n for n in names), names


@pytest.mark.parametrize("bad", ["../evil.tflite", "/tmp/evil.tflite", "sub/x.tflite", "..", "", "a\x00b"])
def test_export_file_names_cannot_leave_the_target_folder(tmp_path: Path, bad: str) -> None:
    from pipeline.errors import TargetError
    from pipeline.quantize.export import checked_result
    from targets import ExportResult

    (tmp_path / "model_int8.tflite").write_bytes(b"x")
    good = ExportResult("model_int8.tflite", None, "int8", ("model_int8.tflite",))
    assert checked_result("tflite", good, tmp_path) is good
    with pytest.raises(TargetError, match="not a file in its output folder"):
        checked_result("tflite", ExportResult("model_int8.tflite", None, "int8", ("model_int8.tflite", bad)),
                       tmp_path)


def test_a_build_writes_only_its_run_directory(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A complete build: the output's parent gains exactly OUT, temporary files are gone afterwards, and
    every file of the run lies inside OUT (no symlinks out of it)."""
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(env.tmp)
    # tensorrt too: its export job keeps the ONNX files in a folder that an exit handler removes
    cfg = env.config(extra="[quantize]\ncalibration_samples = 20\n",
                     targets="[targets.tflite]\niterations = 3\nwarmup = 1\n"
                             "[targets.tensorrt]\niterations = 3\nwarmup = 1\n")
    inputs = {p: p.stat().st_mtime_ns for p in (cfg, env.model, env.npz)}
    rc, err = _cli(_build(env, cfg), capsys)
    assert rc in (0, 1), err
    assert [p.name for p in env.runs.iterdir()] == [RUN_NAME]
    run = (env.runs / RUN_NAME).resolve()
    files = [p for p in run.rglob("*")]
    assert not [p for p in files if p.is_symlink()]
    assert all(p.resolve().is_relative_to(run) for p in files)
    assert {"report.json", "report.html", "build.log"} <= {p.name for p in files}
    report = json.loads((run / "report.json").read_text())
    assert all((run / report["targets"][t]["artifact"]).is_file() for t in ("tflite", "tensorrt"))
    # TF's autograph keeps its generated modules until the interpreter exits (an atexit hook removes them); ONNX
    # Runtime's telemetry SDK writes a session file (.ses) when it is imported and leaves it, in any process
    left = [p.name for p in scratch.iterdir() if not p.name.startswith("__autograph_generated_file")
            and p.name != ".ses"]
    assert left == [], "temporary files left behind"
    assert {p: p.stat().st_mtime_ns for p in inputs} == inputs, "inputs are never written"
