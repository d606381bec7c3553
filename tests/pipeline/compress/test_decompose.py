from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest

from pipeline.compress.base import StageContext, TrainData
from pipeline.compress.cost import count_macs
from pipeline.compress.decompose import ConvMethod, DecomposeStage, decompose_model, decompose_with_decisions
from pipeline.config import DecomposeSection

L = keras.layers


def _rand(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).normal(size=shape).astype("float32")


def test_full_rank_svd_reproduces_dense() -> None:
    keras.utils.set_random_seed(0)
    inp = keras.Input((12,))
    model = keras.Model(inp, L.Dense(9, activation="relu", name="d")(inp))
    new, decisions = decompose_with_decisions(model, 1.0, require_saving=False)
    assert [d.method for d in decisions] == ["svd"]
    assert len(new.layers) == 3
    x = _rand((5, 12))
    np.testing.assert_allclose(model.predict(x, verbose=0), new.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("method", ["spatial", "tucker"])
@pytest.mark.parametrize("strides,padding,dilation", [(1, "same", 1), (2, "same", 1), (1, "valid", 2)])
def test_full_rank_conv_decomposition_reproduces_conv(
    method: ConvMethod, strides: int, padding: str, dilation: int
) -> None:
    keras.utils.set_random_seed(0)
    inp = keras.Input((9, 8, 3))
    conv = L.Conv2D(
        5, (3, 2), strides=strides, padding=padding, dilation_rate=dilation, activation="relu", name="c"
    )
    model = keras.Model(inp, conv(inp))
    model.get_layer("c").set_weights([_rand((3, 2, 3, 5)), _rand((5,))])
    new, decisions = decompose_with_decisions(model, 1.0, conv_method=method, require_saving=False)
    assert [d.method for d in decisions] == [method]
    x = _rand((2, 9, 8, 3))
    np.testing.assert_allclose(model.predict(x, verbose=0), new.predict(x, verbose=0), atol=1e-4)


def test_full_rank_conv1d_and_pointwise() -> None:
    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 4))
    x = L.Conv1D(6, 3, padding="causal", name="c1d")(inp)
    out = L.Conv1D(5, 1, strides=2, name="pw")(x)
    model = keras.Model(inp, out)
    new, decisions = decompose_with_decisions(model, 1.0, require_saving=False)
    assert {d.layer: d.method for d in decisions} == {"c1d": "tucker", "pw": "svd"}
    x_in = _rand((2, 10, 4))
    np.testing.assert_allclose(model.predict(x_in, verbose=0), new.predict(x_in, verbose=0), atol=1e-4)


def _wide_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 8))
    x = L.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = L.Flatten()(x)
    x = L.Dense(32, activation="relu")(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="classifier")(x))


def test_decompose_lowers_macs() -> None:
    model = _wide_model()
    new, decisions = decompose_with_decisions(model, 0.25)
    assert len(decisions) >= 3
    assert count_macs(new) < count_macs(model)
    assert new.output_shape == model.output_shape
    assert decompose_model(model, 1.0).count_params() == model.count_params()  # nothing pays at full rank


def test_decompose_stage_fine_tunes(sequential_model: Callable[..., keras.Model]) -> None:
    rng = np.random.default_rng(0)
    data = TrainData(
        _rand((64, 8, 8, 1)), rng.integers(0, 4, 64), _rand((16, 8, 8, 1)), rng.integers(0, 4, 16), 4
    )
    model = sequential_model()
    stage = DecomposeStage(DecomposeSection(rank_ratio=0.25, epochs=1, batch_size=32))
    result = stage.run(model, StageContext(data=data, teacher=model))
    assert result.details["macs_after"] < result.details["macs_before"]
    assert result.model.output_shape == (None, 4)
    assert stage.config_dict()["rank_ratio"] == 0.25
