"""The two Keras equalization methods, each keeping the float function (1e-5): SmoothQuant-style activation-to-
weight migration evens out outlier activation channels across conv -> BN -> ReLU -> depthwise -> conv ->
flatten -> dense -> dense; cross-layer equalization (Nagel et al.) evens out the channel weight ranges of
consecutive layers (BatchNorm folded), absorbs high biases where the next layer sees every position, and both
stop at layers that are not positively homogeneous (sigmoid, ReLU6)."""

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


def test_migration_keeps_the_function_and_evens_out_activation_channels() -> None:
    from pipeline.quantize.smoothquant import migrate

    model = _chain()
    _outliers(model)
    x = np.random.default_rng(0).random((64, 8, 8, 3), dtype=np.float32)
    equalized, done = migrate(model, x)
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
    from pipeline.quantize.smoothquant import migrate

    model = _chain(activation)
    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    equalized, done = migrate(model, x)
    assert "c1" not in [d.head for d in done]  # c1 -> sigmoid/relu6 -> dw: not scale-safe
    assert [d.head for d in done] == ["dw", "c2", "d1"]
    np.testing.assert_allclose(equalized.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def _weight_spread(model, head: str, norm: str | None) -> float:
    """Largest / median channel range of the head's kernel with its BatchNorm folded in."""
    from pipeline.quantize.cle import head_ranges

    r = head_ranges(model.get_layer(head), model.get_layer(norm) if norm else None)
    return float(r.max() / np.median(r))


def test_cle_evens_out_weight_ranges_and_keeps_the_function() -> None:
    """The outlier channels (BN gamma x500, the depthwise / 500) are a weight-range imbalance: CLE gives each
    channel of a pair the same range in both layers (head and tail spreads meet), the BN-folded head's spread
    drops from over 100, the activation outliers shrink with it, and the function holds to 1e-5 (no bias is
    absorbed here: the 3x3 'same' depthwise would not carry it to the zero-padded border)."""
    from pipeline.quantize.cle import equalize

    model = _chain()
    _outliers(model)
    x = np.random.default_rng(0).random((64, 8, 8, 3), dtype=np.float32)
    equalized, done = equalize(model, x)
    assert [(d.head, d.tail) for d in done] == [("c1", "dw"), ("dw", "c2"), ("d1", "d2")]  # Flatten stops c2
    np.testing.assert_allclose(equalized.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert _weight_spread(model, "c1", "bn") > 100 and _weight_spread(equalized, "c1", "bn") < 5
    first = done[0]
    assert first.head_spread_before > 100 and first.head_spread_after < 5 and first.max_scale > 100
    assert first.head_spread_after == pytest.approx(first.tail_spread_after, rel=1e-3)
    assert all(d.absorbed == 0 for d in done)
    assert _act_spread(model, "act", x) > 100 and _act_spread(equalized, "act", x) < 10


def _high_bias_model():
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    inp = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 3, use_bias=False, name="c1")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(6, 1, use_bias=False, name="c2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, layers.Dense(4, name="d")(x))
    bn = model.get_layer("bn1")
    g, b, mu, var = bn.get_weights()
    bn.set_weights([g, b + np.linspace(0.0, 6.0, 8), mu, var])  # high biases: the ReLU is linear for most x
    return model


def test_cle_absorbs_high_biases_into_the_next_layer() -> None:
    """Conv -> BN (high beta) -> ReLU -> 1x1 conv -> BN: beta - 3|gamma| (capped at the smallest pre-activation on
    the samples) moves into the next BatchNorm's moving mean; on the samples the function is unchanged."""
    from pipeline.quantize.cle import equalize

    model = _high_bias_model()
    x = np.random.default_rng(0).random((32, 6, 6, 3), dtype=np.float32)
    equalized, done = equalize(model, x)
    assert [(d.head, d.tail) for d in done] == [("c1", "c2"), ("c2", "d")]
    assert done[0].absorbed > 0
    def shift(m) -> float:  # beta / |gamma|: unchanged by the equalizing scale, lowered by absorption
        g, b = m.get_layer("bn1").get_weights()[:2]
        return float(np.sum(b / np.abs(g)))

    assert shift(equalized) < shift(model) - 1.0
    np.testing.assert_allclose(equalized.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_relu6_stops_cle() -> None:
    from pipeline.quantize.cle import equalize

    model = _chain("relu6")
    x = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
    _, done = equalize(model, x)
    assert "c1" not in [d.head for d in done]
