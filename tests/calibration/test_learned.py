"""Learned ranges find their tensors by statistics: the same values in another layout match, other tensors
(the pre-activation, a pooled copy, another size) do not; the record round-trips through a dict."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from calibration.learned import LearnedRange, Signatures, match, same


def _signature(key: str, samples: list[np.ndarray]) -> tuple[float, ...]:
    s = Signatures()
    for v in samples:
        s.add(key, v)
    return s.values()[key]


def test_same_values_in_another_layout_match_and_others_do_not() -> None:
    rng = np.random.default_rng(0)
    pre = [rng.normal(size=(4, 4, 8)).astype(np.float32) for _ in range(6)]
    relu = [np.maximum(p, 0) for p in pre]
    learned = LearnedRange("conv", 0.0, 2.5, False, _signature("k", relu))
    backend = Signatures()
    for p, r in zip(pre, relu, strict=True):
        backend.add("nchw_relu", np.transpose(r, (2, 0, 1)) * (1 + 1e-6))  # another layout, float noise
        backend.add("flat_relu", r.reshape(-1))
        backend.add("pre_relu", p)
        backend.add("pooled", r.max(axis=(0, 1)))
        backend.add("half", r[:2])
    found = match([learned], backend.values())
    assert set(found) == {"nchw_relu", "flat_relu"} and found["nchw_relu"] is learned
    assert not same(learned.signature, backend.values()["pre_relu"])


def test_scale_and_round_trip() -> None:
    sym = LearnedRange("x", -3.0, 2.0, True, (4.0, -1.0, 1.0, 0.0, 0.5, 0.6))
    asym = LearnedRange("y", -1.0, 2.0, False, (4.0, -1.0, 1.0, 0.0, 0.5, 0.6))
    assert sym.scale() == 3.0 / 127 and asym.scale() == 3.0 / 255
    assert LearnedRange.from_dict(asdict(sym)) == sym


def test_on_grid_puts_the_zero_point_on_an_integer() -> None:
    """An asymmetric range moved onto the grid the fake quantization trains: 255 steps, an integer zero point,
    zero itself a grid point, and a range already on it left where it is."""
    from calibration.learned import ASYMMETRIC_STEPS, on_grid

    for lo, hi in ((-0.37, 5.2), (-3.0, 0.01), (0.0, 6.0), (-1.0, 1.0)):
        glo, ghi = on_grid(lo, hi)
        step = (ghi - glo) / ASYMMETRIC_STEPS
        zero = -glo / step
        assert abs(zero - round(zero)) < 1e-6 and glo <= 0.0 <= ghi
        assert abs(step - (hi - lo) / ASYMMETRIC_STEPS) < 1e-12 and abs(glo - lo) <= step / 2 + 1e-12
        assert on_grid(glo, ghi) == (glo, ghi) or np.allclose(on_grid(glo, ghi), (glo, ghi), rtol=1e-12)
