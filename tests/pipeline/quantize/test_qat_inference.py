"""pipeline.quantize.qat._outputs: the fine-tune's inference passes give Model.predict's outputs, one array per
model output, whether the input is small (called eagerly) or large (through predict)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.quantize import qat


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "predict"])
def test_outputs_match_predict_for_one_and_several_outputs(eager: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not eager:
        monkeypatch.setattr(qat, "_EAGER_MAX_VALUES", 0)
    inp = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu")(inp)
    two = keras.Model(inp, [hidden, keras.layers.Dense(3)(hidden)])
    one = keras.Model(inp, keras.layers.Dense(3)(inp))
    x = np.random.default_rng(0).normal(size=(600, 6)).astype(np.float32)  # 3 batches of 256, the last partial
    for model in (one, two):
        expected = model.predict(x, verbose=0)
        expected = expected if isinstance(expected, list) else [expected]
        got = qat._outputs(model, x)
        assert [a.shape for a in got] == [e.shape for e in expected]
        for a, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
