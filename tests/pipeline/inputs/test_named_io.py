"""Models with several inputs and outputs: npz keys x_train.<input> / y_train.<output>, [metric] output, and each
bad input as one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.config import MetricName, MetricSection
from pipeline.errors import ConfigError, DataError
from pipeline.inputs.data import Preprocess, read_npz
from pipeline.inputs.models import load_model
from pipeline.inputs.source import data_and_metric


def _variant(npz: Path, dest: Path, drop: tuple[str, ...] = (), **over: np.ndarray) -> Path:
    with np.load(npz) as d:
        arrays = {k: d[k] for k in d.files if k not in drop}
    arrays.update({k.replace("__", "."): v for k, v in over.items()})
    np.savez(dest, **arrays)
    return dest


def test_named_keys_give_every_input_and_the_metric_outputs_labels(twoio: tuple[Path, Path]) -> None:
    model, npz = load_model(twoio[0]), read_npz(twoio[1])
    assert model.input_names == ("image", "feats") and model.output_names == ("digit", "ink")
    data, metric = data_and_metric(npz, Preprocess(16.0), model, None, "t")  # no [metric]: the first output
    assert isinstance(data.x_test, dict) and list(data.x_test) == ["image", "feats"]
    assert data.x_test["image"].shape == (360, 8, 8, 1) and data.x_test["feats"].shape == (360, 2)
    assert float(data.x_test["image"].max()) <= 1.0  # preprocessing applies to every input
    assert metric.spec == "accuracy" and metric.output == "digit" and metric.output_index == 0
    assert data.y_test.dtype == np.int64 and data.y_test.shape == (360,)
    ink = MetricSection(name=MetricName.MSE, output="ink")
    data, metric = data_and_metric(npz, Preprocess(16.0), model, ink, "t")
    assert metric.output == "ink" and metric.output_index == 1
    assert data.y_test.dtype == np.float32 and data.y_test.shape == (360, 1)


def test_other_outputs_labels_may_be_absent(twoio: tuple[Path, Path], tmp_path: Path) -> None:
    npz = _variant(twoio[1], tmp_path / "d.npz", drop=("y_train.ink", "y_test.ink"))
    data, _ = data_and_metric(read_npz(npz), Preprocess(16.0), load_model(twoio[0]), None, "t")
    assert data.y_train.shape[0] == data.x_train["image"].shape[0]  # type: ignore[index]


@pytest.mark.parametrize(("section", "drop", "over", "error", "expected"), [
    (None, ("x_test.feats",), {}, DataError, "x_test.feats: missing"),
    (None, (), {"x_train__extra": np.zeros((1437, 2))}, DataError, "x_train.extra: the model has no input 'extra'"),
    (None, (), {"y_test__nope": np.zeros(360)}, DataError, "y_test.nope: the model has no output 'nope'"),
    (None, ("y_train.digit",), {}, DataError, "y_train.digit: missing"),
    (MetricSection(name=MetricName.MSE, output="score"), (), {}, ConfigError, "[metric] output 'score' is not an output"),
    (MetricSection(name=MetricName.MSE, output="ink"), (), {"y_test__ink": np.zeros((360, 3))}, DataError,
     "y_test.ink: targets of shape (3,) do not fit the model output (1,)"),
    (MetricSection(name=MetricName.ACCURACY, output="ink"), (), {}, ConfigError, "accuracy needs a classifier"),
])
def test_bad_named_data_is_one_clear_error(twoio: tuple[Path, Path], tmp_path: Path, section: MetricSection | None,
                                          drop: tuple[str, ...], over: dict[str, np.ndarray], error: type,
                                          expected: str) -> None:
    npz = _variant(twoio[1], tmp_path / "d.npz", drop, **over)
    with pytest.raises(error) as err:
        data_and_metric(read_npz(npz), Preprocess(16.0), load_model(twoio[0]), section, "t")
    assert expected in str(err.value) and "\n" not in str(err.value)


def _config(tmp: Path, model: Path, npz: Path, extra: str) -> Path:
    cfg = tmp / "twoio.toml"
    cfg.write_text(f'[model]\npath = "{model}"\n[data]\npath = "{npz}"\nscale = 16.0\n{extra}\n[targets.tflite]\n')
    return cfg


@pytest.mark.parametrize(("extra", "drop", "over", "expected"), [
    ('[metric]\nname = "mse"\noutput = "scores"\n', (), {}, "[metric] output 'scores' is not an output of the model"),
    ("", ("x_train.image",), {}, "x_train.image: missing"),
    ("", ("y_test.digit",), {}, "y_test.digit: missing"),
    ("", (), {"y_train__digit": np.full(1437, 0.5)}, "y_train.digit: labels must be integer class ids"),
    ('[metric]\nname = "mse"\noutput = "ink"\n', (), {"y_test__ink": np.zeros((360, 2))},
     "y_test.ink: targets of shape (2,) do not fit"),
    ('[distill]\nstudent = "width:0.5"\n', (), {}, "[distill] with several inputs or outputs"),
], ids=["unknown-output", "missing-input-key", "missing-label-key", "labels-of-the-wrong-kind",
        "labels-of-the-wrong-shape", "distill"])
def test_cli_bad_input_exits_2_with_one_line_and_nothing_written(
        twoio: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str,
        drop: tuple[str, ...], over: dict[str, np.ndarray], expected: str) -> None:
    npz = _variant(twoio[1], tmp_path / "d.npz", drop, **over)
    runs = tmp_path / "runs"
    runs.mkdir()
    rc = main(["--quiet", "build", str(_config(tmp_path, twoio[0], npz, extra)), "--out", str(runs / "run")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("edgepipe: error: ") and "Traceback" not in err, err
    assert expected in err, err
    assert list(runs.iterdir()) == [], "bad input must leave no run behind"


def test_a_folder_of_named_npy_splits_reads_like_the_npz(twoio: tuple[Path, Path], tmp_path: Path) -> None:
    """Data larger than memory: x_train.<input>.npy (read a batch at a time) and y_train.<output>.npy per split."""
    from pipeline.inputs.data import read_data

    folder = tmp_path / "data"
    folder.mkdir()
    with np.load(twoio[1]) as d:
        for k in d.files:
            np.save(folder / f"{k}.npy", d[k])
    model = load_model(twoio[0])
    from_folder, _ = data_and_metric(read_data(folder), Preprocess(16.0), model, None, "t")
    from_npz, _ = data_and_metric(read_npz(twoio[1]), Preprocess(16.0), model, None, "t")
    assert isinstance(from_folder.x_test, dict) and isinstance(from_npz.x_test, dict)
    for name in ("image", "feats"):
        np.testing.assert_array_equal(np.asarray(from_folder.x_test[name]), from_npz.x_test[name])
    np.testing.assert_array_equal(from_folder.y_train, from_npz.y_train)
