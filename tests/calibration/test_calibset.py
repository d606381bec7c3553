from __future__ import annotations

import numpy as np
import pytest

from calibration import SamplingMethod, make_calibration_set


def test_stratified_keeps_class_proportions() -> None:
    y = np.array([0] * 80 + [1] * 20)
    x = np.arange(100, dtype=np.float32)[:, None]
    c = make_calibration_set(x, y, 50, seed=3)
    assert c.sampling is SamplingMethod.STRATIFIED and len(c) == 50
    picked = y[c.samples[:, 0].astype(int)]
    assert (picked == 0).sum() == 40 and (picked == 1).sum() == 10


def test_deterministic_and_fingerprinted() -> None:
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    y = np.arange(200) % 4
    a, b = make_calibration_set(x, y, 30, seed=1), make_calibration_set(x, y, 30, seed=1)
    assert np.array_equal(a.samples, b.samples) and a.fingerprint() == b.fingerprint()
    assert make_calibration_set(x, y, 30, seed=2).fingerprint() != a.fingerprint()
    assert make_calibration_set(x, None, 30).sampling is SamplingMethod.RANDOM
    assert sum(len(batch) for batch in a.batches(8)) == 30


def test_size_is_capped_and_validated() -> None:
    x = np.zeros((10, 2), np.float32)
    assert len(make_calibration_set(x, None, 100)) == 10
    with pytest.raises(ValueError):
        make_calibration_set(x, None, 0)
