"""A calibration set for a model with several inputs covers every input: the same rows of each, in a fixed order,
with a fingerprint over all of them, saved and loaded by input name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration import CalibrationSet, make_calibration_set


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"image": rng.random((50, 4, 4, 1), np.float32), "feats": np.arange(100, dtype=np.float32).reshape(50, 2)}


def test_every_input_gets_the_same_rows_and_round_trips(tmp_path: Path) -> None:
    x, labels = _inputs(), np.arange(50) % 5
    calib = make_calibration_set(x, labels, 20, seed=3)
    assert len(calib) == 20 and calib.input_names == ("image", "feats")
    rows = (calib.samples["feats"][:, 0] / 2).astype(int)  # type: ignore[index]
    np.testing.assert_array_equal(calib.samples["image"], x["image"][rows])  # type: ignore[index]
    assert sorted(np.bincount(labels[rows])) == [4, 4, 4, 4, 4]  # stratified
    batch = next(calib.batches(1))
    assert isinstance(batch, dict) and batch["image"].shape == (1, 4, 4, 1) and batch["feats"].shape == (1, 2)
    calib.save(tmp_path / "c.npz")
    loaded = CalibrationSet(CalibrationSet.load_samples(tmp_path / "c.npz"), calib.source, calib.sampling, calib.seed)
    assert loaded.fingerprint() == calib.fingerprint()
    assert calib.head(5).input_names == ("image", "feats") and len(calib.head(5)) == 5


def test_the_fingerprint_covers_every_input() -> None:
    x = _inputs()
    base = make_calibration_set(x, None, 10).fingerprint()
    x["feats"][:, 1] += 1.0
    assert make_calibration_set(x, None, 10).fingerprint() != base
