"""A 1-D convolution's BatchNorm, which Keras exports to ONNX as Mul and Add after the convolution's Squeeze
(where ONNX Runtime's Conv+Mul/Add fusions cannot see it), is folded into the convolution: the same float
outputs (1e-5), no Mul or Add left, and the Q/DQ model quantizes each convolution's output once."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_conv1d_batchnorm_folds_into_the_conv(tmp_path: Path) -> None:
    import keras
    import onnx
    import onnxruntime as ort

    from targets import FloatModel
    from targets.onnx_fold import fold_squeezed_scale_shift
    from targets.tensorrt import to_onnx

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 4))
    x = keras.layers.Conv1D(6, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.DepthwiseConv1D(3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(x)))
    for bn in [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]:
        g, b, m, v = bn.get_weights()
        bn.set_weights([g * 3.0, b + 0.5, m + 0.1, v + 2.0])
    model.save(tmp_path / "m.keras")
    to_onnx(FloatModel(tmp_path / "sm", tmp_path / "m.keras", (8, 4)), tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(size=(5, 8, 4)).astype(np.float32)

    def run(path: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(len(x))])

    before = run(tmp_path / "m.onnx")
    m = onnx.load(str(tmp_path / "m.onnx"))
    assert sum(n.op_type in ("Mul", "Add") for n in m.graph.node) >= 4
    assert fold_squeezed_scale_shift(m) == 2
    onnx.save(m, str(tmp_path / "folded.onnx"))
    assert not [n.name for n in m.graph.node if n.op_type == "Mul"]
    np.testing.assert_allclose(run(tmp_path / "folded.onnx"), before, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(before, model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
