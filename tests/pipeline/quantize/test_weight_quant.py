"""Which kernels QAT fake-quantizes and how, without training: every weighted layer is listed (fake-quantized
with its kernels' grid, or not with the reason), the fake-quantized forward pass computes exactly what the
model with its kernels snapped to the grid computes, and each layout keeps one step per output channel."""

from __future__ import annotations

import numpy as np
import pytest

GRIDS = {"conv": (255, False), "conv3d": (127, False), "depthwise": (255, False), "transposed": (127, False),
         "dense": (127, False), "recurrent": (255, False)}


def _model():
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 4))
    x = L.Conv2D(6, 3, padding="same", groups=2, name="grouped")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu", name="dw")(x)
    x = L.Conv2DTranspose(5, 3, padding="same", name="up")(x)
    x = L.Reshape((6, 30))(x)
    x = L.Bidirectional(L.GRU(4, return_sequences=True), name="bigru")(x)
    x = L.EinsumDense("abc,cd->abd", output_shape=(6, 3), name="einsum")(x)
    return keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(x)))


def test_every_weighted_layer_is_listed_with_its_grid_or_a_reason() -> None:
    from pipeline.quantize.weight_quant import plan

    planned, done, skipped = plan(_model(), GRIDS)
    assert {r["layer"]: [(k["weight"], k["levels"], k["grid"]) for k in r["kernels"]] for r in done} == {
        "dw": [("kernel", 255, "per (channel, multiplier)")],
        "up": [("kernel", 127, "per output channel (kernel axis -2)")],
        "bigru": [("forward_layer.cell.kernel", 255, "per output channel"),
                  ("forward_layer.cell.recurrent_kernel", 255, "per output channel"),
                  ("backward_layer.cell.kernel", 255, "per output channel"),
                  ("backward_layer.cell.recurrent_kernel", 255, "per output channel")],
        "out": [("kernel", 127, "per output channel")]}
    reasons = {r["layer"]: r["reason"] for r in skipped}
    assert set(reasons) == {"grouped", "bn", "einsum"} and set(planned) == {"dw", "up", "bigru", "out"}
    assert "groups > 1" in reasons["grouped"] and "fold" in reasons["bn"] and "EinsumDense" in reasons["einsum"]
    float_dense = {**GRIDS, "dense": "the target keeps dense weights in float"}
    _, done, skipped = plan(_model(), float_dense)
    assert "out" not in {r["layer"] for r in done} and {"layer": "out", "class": "Dense",
                                                         "reason": "the target keeps dense weights in float"} in skipped


def test_the_fake_quantized_forward_is_the_snapped_model() -> None:
    """attach() wraps the calls; the outputs equal those of a fresh model holding snapped_weights (what the
    export writes), and each snapped kernel has max|integer| = (levels - 1) / 2 per output channel."""
    import keras

    from pipeline.compress.graph import to_functional
    from pipeline.quantize.weight_quant import attach, plan, reduced_axes, snapped_weights

    model = _model()
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 4)).astype(np.float32)
    planned, _, _ = plan(model, GRIDS)
    snapped = to_functional(model)
    for name, kernels in planned.items():
        snapped.get_layer(name).set_weights(snapped_weights(model.get_layer(name), kernels))
    fake = to_functional(model)
    attach(fake, planned)
    np.testing.assert_allclose(fake.predict(x, verbose=0), snapped.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.predict(x, verbose=0), snapped.predict(x, verbose=0), atol=1e-6)
    up = snapped.get_layer("up").get_weights()[0]  # (k, k, out, in): one step per output channel, axis -2
    step = np.abs(up).max(axis=reduced_axes(4, "transposed", False), keepdims=True) / 63
    assert np.allclose(up / step, np.round(up / step), atol=1e-4) and step.shape == (1, 1, 5, 1)
    assert isinstance(fake.get_layer("bigru"), keras.layers.Bidirectional)


@pytest.mark.parametrize(("layout", "shape", "kept"), [("last", (3, 3, 4, 6), (6,)), ("transposed", (3, 3, 6, 4), (6,)),
                                                         ("depthwise", (3, 3, 4, 2), (4, 2))])
def test_one_step_per_output_channel(layout: str, shape: tuple[int, ...], kept: tuple[int, ...]) -> None:
    from pipeline.quantize.weight_quant import on_grid, reduced_axes

    w = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    axes = reduced_axes(len(shape), layout, False)
    q = on_grid(w, 255, axes)
    step = np.abs(q).max(axis=axes) / 127
    assert step.shape == kept
    assert np.allclose(q / np.expand_dims(step, axes), np.round(q / np.expand_dims(step, axes)), atol=1e-4)
    one = on_grid(w, 255, reduced_axes(len(shape), layout, True))  # per tensor: one step for all
    assert np.abs(one).max() == pytest.approx(np.abs(w).max(), rel=1e-6)
    assert np.allclose(one / (np.abs(w).max() / 127), np.round(one / (np.abs(w).max() / 127)), atol=1e-3)
