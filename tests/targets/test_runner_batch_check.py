"""Batched evaluation is accepted only where batched outputs match batch-1 outputs: 64 samples spread over the
split, identical argmax, every value within 1e-3 of the sample's largest output magnitude."""

from __future__ import annotations

import numpy as np

from targets import runner


def test_the_spot_check_covers_64_samples_spread_over_the_split() -> None:
    assert runner.SPOT_CHECK == 64 and runner.RELATIVE_TOLERANCE == 1e-3


def test_identical_rows_agree_and_a_flipped_argmax_does_not() -> None:
    rng = np.random.default_rng(0)
    single = rng.normal(size=(64, 10))
    assert runner._agrees(single.copy(), single)
    flipped = single.copy()
    row = 50
    top, second = np.argsort(single[row])[-1], np.argsort(single[row])[-2]
    flipped[row, top], flipped[row, second] = single[row, second], single[row, top]
    assert not runner._agrees(flipped, single)


def test_a_relative_error_over_1e_3_anywhere_refuses_the_batch() -> None:
    single = np.tile(np.linspace(-1.0, 4.0, 10), (64, 1))  # largest magnitude 4.0 per row
    near = single.copy()
    near[63, 0] += 0.9e-3 * 4.0
    assert runner._agrees(near, single)
    far = single.copy()
    far[63, 0] += 1.2e-3 * 4.0  # the last sample: a check of the first samples only would miss it
    assert not runner._agrees(far, single)
