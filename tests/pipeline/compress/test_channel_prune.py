from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest

from pipeline.compress.channel_prune import channel_prune
from pipeline.compress.channels import analyze_channels
from pipeline.compress.cost import count_macs, count_params
from pipeline.compress.graph import to_functional
from pipeline.compress.layer_kinds import PRODUCERS

INPUTS = {"residual": (4, 8, 8, 3), "seq": (4, 8, 8, 1), "rnn": (4, 6, 4), "se": (4, 16, 5), "text": (4, 7)}


@pytest.mark.parametrize(
    "builder", ["residual_model", "sequential_model", "rnn_model", "se_model", "text_model"]
)
def test_pruning_zero_channels_keeps_outputs(
    builder: str, request: pytest.FixtureRequest, zero_channels: Callable[..., dict[str, int]]
) -> None:
    model = to_functional(request.getfixturevalue(builder)())
    zeroed = zero_channels(model, 0.5)
    assert zeroed, "nothing was prunable"
    rng = np.random.default_rng(0)
    if model.name == "text":
        x = rng.integers(0, 20, INPUTS[model.name]).astype("int32")
    else:
        x = rng.normal(size=INPUTS[model.name]).astype("float32")
    pruned = channel_prune(model, 0.5)
    np.testing.assert_allclose(model.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    assert count_params(pruned) < count_params(model)
    assert count_macs(pruned) < count_macs(model)
    for name, n_drop in zeroed.items():  # each group's first producer lost exactly the zeroed channels
        before = model.get_layer(name).get_config()
        after = pruned.get_layer(name).get_config()
        key = PRODUCERS[type(model.get_layer(name))]
        assert after[key] == before[key] - n_drop


def test_residual_groups_and_classifier(residual_model: Callable[..., keras.Model]) -> None:
    model = residual_model()
    graph = analyze_channels(model)
    residual = next(g for g in graph.roots() if "stem" in g.producers)
    assert set(residual.producers) == {"stem", "pw"}  # tied by the Add
    assert {"stem_bn", "dw", "dw_bn", "pw_bn"} <= set(residual.passthrough)
    assert graph.group(graph.output_group["classifier"]).frozen
    pruned = channel_prune(model, 0.5)
    assert pruned.get_layer("stem").filters == pruned.get_layer("pw").filters == 4
    assert pruned.get_layer("dw").get_weights()[0].shape == (3, 3, 4, 1)
    assert pruned.get_layer("cat_bn").get_weights()[0].shape == (5,)  # 3 of c1 + 2 of c2
    assert pruned.get_layer("fc").get_weights()[0].shape == (4 * 4 * 5, 5)  # Flatten rows sliced
    assert pruned.get_layer("classifier").units == 5
    assert pruned.output_shape == model.output_shape


def test_se_gate_prunes_through_reshape_and_multiply(se_model: Callable[..., keras.Model]) -> None:
    pruned = channel_prune(se_model(), 0.5)
    assert pruned.get_layer("conv").filters == pruned.get_layer("excite").units == 6
    reshape = next(layer for layer in pruned.layers if isinstance(layer, keras.layers.Reshape))
    assert tuple(reshape.target_shape) == (1, 6)


def test_blocking_layers_freeze_widths() -> None:
    L = keras.layers
    inp = keras.Input((4, 4, 2))
    x = L.Conv2D(8, 1, name="before_reshape")(inp)
    x = L.Reshape((8, 16))(x)  # moves channels: blocks
    x = L.Dense(6, name="before_ln")(x)
    x = L.LayerNormalization()(x)
    x = L.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, L.Dense(3, name="head")(x))
    pruned = channel_prune(model, 0.5)
    assert pruned.get_layer("before_reshape").filters == 8
    assert pruned.get_layer("before_ln").units == 6
