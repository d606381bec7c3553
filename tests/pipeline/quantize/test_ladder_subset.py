"""The accuracy-aware ladder judges an attempt on SUBSET evenly spread samples of a large evaluation set first
and measures the whole set only for an attempt that meets the budget there (a real LiteRT artifact). The
accuracy it records is checked against LiteRT's own Interpreter run by hand (tests/runtimes.py), not
through targets.runner, which the ladder itself measures with."""

from __future__ import annotations

import numpy as np
import pytest
from runtimes import accuracy

from calibration import make_calibration_set
from pipeline.cache import Cache
from pipeline.quantize import accuracy_aware
from pipeline.quantize.accuracy_aware import SUBSET, Job, measure
from pipeline.quantize.export import ExportRequest, export_target
from pipeline.ui import UI
from targets import ExportOptions, FloatModel, runner
from targets.runner_arrays import write_npz


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    import keras

    work = tmp_path_factory.mktemp("subset")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * SUBSET + 500, 12)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)
    model.save(work / "m.keras")
    model.export(str(work / "sm"), format="tf_saved_model", verbose=False)
    fm = FloatModel(work / "sm", work / "m.keras", (12,))
    calib = make_calibration_set(x, None, 64)
    req = ExportRequest("tflite", fm, "subset-test", calib, Cache(), UI(quiet=True))
    exported = export_target(req, ExportOptions())
    write_npz(work / "eval.npz", {"x": x, "y": y})
    return fm, calib, exported, work / "eval.npz", x, y


def _job(artifact: tuple, reference: float, max_drop: float) -> Job:
    fm, calib, _, eval_path, _, _ = artifact
    return Job("tflite", fm, "subset-test", calib, eval_path, reference, max_drop, Cache(), UI(quiet=True))


def test_a_miss_on_the_subset_is_not_measured_in_full(artifact: tuple) -> None:
    _, _, exported, _, x, y = artifact
    a = measure(_job(artifact, reference=1.0, max_drop=0.0), exported, ExportOptions())
    rows = np.linspace(0, len(y) - 1, SUBSET).round().astype(np.int64)
    assert len(set(rows.tolist())) == SUBSET and rows[0] == 0 and rows[-1] == len(y) - 1  # evenly spread
    by_hand = accuracy(exported.folder / exported.result.artifact, x[rows], y[rows])
    assert a.samples == SUBSET and not a.passed
    assert a.accuracy == by_hand < 1.0  # the subset's accuracy, not the whole set's
    assert a.drop == pytest.approx(1.0 - by_hand, abs=1e-12)
    assert a.record()["samples"] == SUBSET


def test_a_pass_on_the_subset_is_decided_on_the_whole_set(artifact: tuple) -> None:
    _, _, exported, _, x, y = artifact
    a = measure(_job(artifact, reference=0.5, max_drop=0.5), exported, ExportOptions())
    by_hand = accuracy(exported.folder / exported.result.artifact, x, y)
    assert a.samples == len(y) and a.passed
    assert a.accuracy == by_hand and a.drop == pytest.approx(0.5 - by_hand, abs=1e-12)
    assert accuracy_aware.SUBSET * 2 < len(y)


def test_the_measurement_says_which_batch_it_evaluated_with(artifact: tuple) -> None:
    _, _, exported, eval_path, x, _ = artifact
    path = exported.folder / exported.result.artifact
    result = runner.run(path, eval_path, runner.Bench(1, 2, 1))
    session = runner.open_session(path, 1, exact=True)
    runner.outputs_of(session, x)
    assert result["evaluation_batch"] == session.eval_batch and session.eval_batch in (1, runner.EVAL_BATCH)
