from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from pipeline.compress.graph import (
    LayerEdit,
    inbound_layers,
    layer_config,
    outbound_layers,
    rebuild,
    to_functional,
)

L = keras.layers


def test_sequential_to_functional_keeps_outputs(sequential_model: Callable[..., keras.Model]) -> None:
    model = sequential_model()
    flat = to_functional(model)
    assert not isinstance(flat, keras.Sequential)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), flat.predict(x, verbose=0), atol=1e-6)
    assert not {id(w) for w in model.weights} & {id(w) for w in flat.weights}


def test_nested_model_is_inlined() -> None:
    inner = keras.Sequential([keras.Input((4,)), L.Dense(5, activation="relu", name="dense")], name="inner")
    inp = keras.Input((4,))
    out = L.Dense(2, name="head")(inner(inp))
    model = keras.Model(inp, out)
    flat = to_functional(model)
    assert not any(isinstance(layer, keras.Model) for layer in flat.layers)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), flat.predict(x, verbose=0), atol=1e-6)


def test_graph_neighbours(residual_model: Callable[..., keras.Model]) -> None:
    model = residual_model()
    parents = {k: [p.name for p in v] for k, v in inbound_layers(model).items()}
    children = {k: [c.name for c in v] for k, v in outbound_layers(model).items()}
    assert parents["stem_bn"] == ["stem"]
    assert len(parents[next(k for k in parents if k.startswith("add"))]) == 2
    assert children["stem"] == ["stem_bn"]


def test_rebuild_with_replacement_layers() -> None:
    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(3, name="d")(inp))

    def transform(layer: keras.layers.Layer) -> list[LayerEdit] | None:
        if layer.name != "d":
            return None
        kernel, bias = layer.get_weights()
        first = layer_config(layer, units=4, use_bias=False, name="d_pre")
        return [
            LayerEdit(L.Dense, first, [np.eye(4, dtype="float32")]),
            LayerEdit(L.Dense, layer.get_config(), [kernel, bias]),
        ]

    new = rebuild(model, transform)
    assert [layer.name for layer in new.layers[1:]] == ["d_pre", "d"]
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), new.predict(x, verbose=0), atol=1e-6)
