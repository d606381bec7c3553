"""Cross-layer equalization in Keras: the float function is unchanged (1e-5), outlier channels are evened out
across conv -> BN -> ReLU -> depthwise -> conv -> flatten -> dense -> dense, and layers that are not
positively homogeneous (sigmoid, ReLU6) stop it."""

from __future__ import annotations

import numpy as np
import pytest

OUTLIER = 500.0


def _chain(activation: str = "relu"):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Activation(activation, name="act")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = layers.Conv2D(6, 1, activation="relu", name="c2")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(12, activation="relu", name="d1")(x)
    out = layers.Dense(5, name="d2")(x)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn")
    g, b, mu, var = bn.get_weights()
    bn.set_weights([g * np.linspace(0.5, 2, 8), b + 0.3, mu + 0.1, var + 0.5])
    return model


def _outliers(model, channels=(1, 4)) -> None:
    """Two conv channels scaled up by OUTLIER (after BN), the depthwise scaled back: same function."""
    bn, dw = model.get_layer("bn"), model.get_layer("dw")
    g, b, mu, var = bn.get_weights()
    g[list(channels)] *= OUTLIER
    b[list(channels)] *= OUTLIER
    bn.set_weights([g, b, mu, var])
    k, bias = dw.get_weights()
    k[:, :, list(channels), :] /= OUTLIER
    dw.set_weights([k, bias])


def _act_spread(model, name: str, x: np.ndarray) -> float:
    import keras

    r = keras.Model(model.inputs, model.get_layer(name).output).predict(x, verbose=0)
    r = np.abs(r.reshape(-1, r.shape[-1])).max(axis=0)
    return float(r.max() / np.median(r))


def test_equalize_keeps_the_function_and_evens_out_channels() -> None:
    from pipeline.quantize.equalize import equalize

    model = _chain()
    _outliers(model)
    x = np.random.default_rng(0).random((64, 8, 8, 3), dtype=np.float32)
    equalized, done = equalize(model, x)
    assert [(d.head, d.tails) for d in done] == [("c1", ("dw",)), ("dw", ("c2",)), ("c2", ("d1",)), ("d1", ("d2",))]
    before, after = model.predict(x, verbose=0), equalized.predict(x, verbose=0)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    assert _act_spread(model, "act", x) > 100  # the outliers as built
    assert _act_spread(equalized, "act", x) < 5
    assert done[0].spread_before > 100 and done[0].spread_after < 5
    assert model.get_layer("c1").get_weights()[0] is not None  # the source model is left alone
    assert _act_spread(model, "act", x) > 100


@pytest.mark.parametrize("activation", ["sigmoid", "relu6"])
def test_non_homogeneous_activation_stops_equalization(activation: str) -> None:
    from pipeline.quantize.equalize import equalize

    model = _chain(activation)
    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    equalized, done = equalize(model, x)
    assert "c1" not in [d.head for d in done]  # c1 -> sigmoid/relu6 -> dw: not scale-safe
    assert [d.head for d in done] == ["dw", "c2", "d1"]
    np.testing.assert_allclose(equalized.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
