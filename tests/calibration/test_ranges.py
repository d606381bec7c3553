"""Range estimators and sensitivity maths on plain numpy arrays."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.ranges import METHODS, ValueCollector, estimate_range, fake_quant
from calibration.sensitivity import pick_layers, rank, sensitivity_table, sqnr_db


def _with_outliers(seed: int = 0) -> np.ndarray:
    """Mostly N(0, 1), with a few huge values: min-max wastes the grid on them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=100_000)
    x[:5] = [60.0, -55.0, 70.0, 58.0, -62.0]
    return x


def _mse(x: np.ndarray, r: tuple[float, float]) -> float:
    return float(np.mean((fake_quant(x, r[0], r[1]) - x) ** 2))


def test_minmax_is_exact_and_contains_zero() -> None:
    assert estimate_range(np.array([1.0, 2.0, 3.0]), "minmax") == (0.0, 3.0)
    assert estimate_range(np.array([-1.0, 2.0]), "minmax") == (-1.0, 2.0)
    assert estimate_range(np.array([-1.0, 2.0]), "minmax", symmetric=True) == (-2.0, 2.0)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_percentile_and_entropy_clip_rare_outliers(method: str) -> None:
    lo, hi = estimate_range(_with_outliers(), method)
    assert 2.0 < hi < 10.0 and -10.0 < lo < -2.0, (lo, hi)


def test_mse_range_has_the_lowest_quantization_error() -> None:
    """mse searches the clipping with the least error: never worse than min-max (on its grid) or the others;
    with a handful of huge outliers it keeps most of the range (clipping them would cost more)."""
    for x in (_with_outliers(), np.random.default_rng(4).laplace(size=50_000)):
        best = _mse(x, estimate_range(x, "mse"))
        for other in ("minmax", "percentile", "entropy"):
            assert best <= _mse(x, estimate_range(x, other)) * 1.001, other
    lap = np.random.default_rng(4).laplace(size=50_000)
    assert estimate_range(lap, "mse")[1] < estimate_range(lap, "minmax")[1]


def test_entropy_ignores_the_zero_spike_of_relu_outputs() -> None:
    x = np.maximum(np.random.default_rng(5).normal(size=50_000), 0.0)
    assert estimate_range(x, "entropy")[1] > 3.0


@pytest.mark.parametrize("method", METHODS)
def test_symmetric_ranges_are_symmetric(method: str) -> None:
    lo, hi = estimate_range(_with_outliers(1), method, symmetric=True)
    assert lo == -hi and hi > 0


@pytest.mark.parametrize("method", METHODS)
def test_one_sided_relu_like_data_keeps_zero_as_lower_bound(method: str) -> None:
    x = np.maximum(np.random.default_rng(2).normal(size=50_000), 0.0)
    lo, hi = estimate_range(x, method)
    assert lo == 0.0 and 2.0 < hi <= x.max()


@pytest.mark.parametrize("method", METHODS)
def test_uniform_data_keeps_nearly_the_full_range(method: str) -> None:
    x = np.random.default_rng(3).uniform(-1.0, 1.0, size=50_000)
    lo, hi = estimate_range(x, method)
    assert lo < -0.9 and hi > 0.9


@pytest.mark.parametrize("method", METHODS)
def test_degenerate_tensors(method: str) -> None:
    assert estimate_range(np.zeros(100), method) == (0.0, 0.0)
    assert estimate_range(np.full(10, 3.0), method) == (0.0, 3.0)
    assert estimate_range(np.array([np.nan, 1.0, np.inf]), method) == (0.0, 1.0)


def test_unknown_method_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown calibration method"):
        estimate_range(np.ones(3), "kl")


def test_value_collector_is_bounded_and_keeps_the_extremes() -> None:
    c = ValueCollector(per_batch=100)
    for i in range(5):
        c.add("t", np.arange(10_000, dtype=np.float32) + i)
    assert c.values("t").size <= 5 * 102
    assert estimate_range(c.values("t"), "minmax") == (0.0, 10_003.0)
    assert c.names() == ["t"] and set(c.ranges("mse")) == {"t"}


def test_sqnr_and_ranking() -> None:
    ref = np.linspace(-1, 1, 1000)
    assert sqnr_db(ref, ref) == 100.0
    assert sqnr_db(ref, ref + 0.01) > sqnr_db(ref, ref + 0.1)
    assert abs(sqnr_db(ref, ref * 0.9) - 20.0) < 1e-6  # noise amplitude 10% of the signal
    assert sqnr_db([ref[:10], ref[10:]], [ref[:10], ref[10:]]) == 100.0
    rows = [{"layer": "a", "sqnr_db": 30.0, "accuracy": 0.9}, {"layer": "b", "sqnr_db": 40.0, "accuracy": 0.5},
            {"layer": "c", "sqnr_db": 10.0, "accuracy": None}, {"layer": "d", "sqnr_db": 20.0, "accuracy": 0.9}]
    assert [r["layer"] for r in rank(rows)] == ["b", "d", "a", "c"]
    assert pick_layers(list("abcdefghij"), 4) == ["a", "d", "g", "j"]
    assert pick_layers(["x"], 4) == ["x"]


class _ScaledLayers:
    """A numpy LayerProbe: layer k's quantization noise is k/10 of a signal; accuracy falls with it."""

    def __init__(self) -> None:
        self.signal = np.linspace(-1, 1, 100)

    def candidates(self) -> list[str]:
        return ["l0", "l1", "skip", "l3"]

    def quantized_alone(self, layer: str) -> float | None:
        return None if layer == "skip" else int(layer[1]) / 10

    def sqnr(self, layer: str, model: float) -> float | None:
        return sqnr_db(self.signal, self.signal * (1 + model))

    def accuracy(self, model: float) -> float:
        return 1.0 - model


def test_sensitivity_table_is_one_algorithm_over_a_probe() -> None:
    table = sensitivity_table(_ScaledLayers())
    assert [r["layer"] for r in table] == ["l3", "l1", "l0"]  # least accurate first; unmeasurable left out
    assert table[-1]["sqnr_db"] == 100.0 and table[0]["accuracy"] == 0.7
