"""pipeline.compress.training.recalibrate_batchnorm: one inference pass sets every BatchNorm's moving statistics
to those of its input, each computed with the BatchNorms before it already recalibrated."""

from __future__ import annotations

import keras
import numpy as np

from pipeline.compress.training import recalibrate_batchnorm

L = keras.layers


def _branchy() -> keras.Model:
    """BatchNorms on a residual branch, after an Add, before a Concatenate, and one in a nested model."""
    inner_in = keras.Input((12, 12, 8))
    inner = keras.Model(inner_in, L.BatchNormalization(name="nested_bn")(L.Conv2D(8, 1)(inner_in)), name="inner")
    i = keras.Input((12, 12, 3))
    a = L.ReLU()(L.BatchNormalization(name="bn_a")(L.Conv2D(8, 3, padding="same")(i)))
    b = L.BatchNormalization(name="bn_b")(L.Conv2D(8, 3, padding="same")(a))
    c = L.BatchNormalization(name="bn_sum")(L.Add()([a, b]))
    d = L.Concatenate()([inner(c), a])
    return keras.Model(i, L.Dense(4)(L.GlobalAveragePooling2D()(d)))


def test_each_batchnorm_holds_the_statistics_of_its_input_after_the_ones_before() -> None:
    model = _branchy()
    x = np.random.default_rng(0).normal(2.0, 3.0, (300, 12, 12, 3)).astype(np.float32)
    nested_before = [w.copy() for w in model.get_layer("inner").get_layer("nested_bn").get_weights()]
    recalibrate_batchnorm(model, x, max_samples=256)
    for name in ("bn_a", "bn_b", "bn_sum"):
        bn = model.get_layer(name)
        act = np.asarray(keras.Model(model.inputs, bn.input)(x[:256], training=False))  # with the new stats before
        mean, var = bn.get_weights()[2:]
        np.testing.assert_allclose(mean, act.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(var, act.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5, err_msg=name)
        assert not np.allclose(mean, 0.0), name  # a fresh BatchNorm's mean is 0: these were really set
    nested_after = model.get_layer("inner").get_layer("nested_bn").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(nested_before, nested_after, strict=True))
