"""pipeline.inputs.infer: a model's outputs as Model.predict gives them (an array, a list or a dict of arrays),
for one input or several by name, whether the input is small (called eagerly) or large (through predict)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

from pipeline.inputs import infer as infer_module
from pipeline.inputs.infer import infer


def _models() -> dict[str, tuple[keras.Model, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6))  # float64 on purpose: predict casts to the input's dtype, and so must infer
    inp = keras.Input((6,), name="a")
    hidden = keras.layers.Dense(5, activation="relu")(inp)
    other = keras.Input((2,), name="b")
    joined = keras.layers.Concatenate()([hidden, other])
    return {
        "one output": (keras.Model(inp, keras.layers.Dense(3)(hidden)), x),
        "a list": (keras.Model(inp, [hidden, keras.layers.Dense(3)(hidden)]), x),
        "a dict, two inputs": (keras.Model({"a": inp, "b": other},
                                           {"p": keras.layers.Dense(3)(joined), "q": keras.layers.Dense(1)(joined)}),
                               {"a": x, "b": rng.normal(size=(600, 2))}),
    }


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "predict"])
def test_infer_gives_what_predict_gives(eager: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not eager:
        monkeypatch.setattr(infer_module, "EAGER_MAX_VALUES", 0)
    for name, (model, x) in _models().items():
        expected, got = model.predict(x, batch_size=32, verbose=0), infer(model, x, 32)
        assert keras.tree.flatten(keras.tree.map_structure(np.shape, got)) == \
            keras.tree.flatten(keras.tree.map_structure(np.shape, expected)), name
        assert type(got) is type(expected), name
        for a, e in zip(keras.tree.flatten(got), keras.tree.flatten(expected), strict=True):
            assert a.dtype == e.dtype, name
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6, err_msg=name)
