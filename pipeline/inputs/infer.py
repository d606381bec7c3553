"""A Keras model's outputs on data in memory, as Model.predict gives them, without predict's cost on small inputs.

Model.predict traces a function for every model it sees first: 0.1-0.3 s, most of a small model's pass (the
digits CNN on 1,000 images: 0.1 s in predict against 0.012 s called eagerly). The build and its stages run
fresh models all the time (each stage's candidate, each BatchNorm-recalibrated student, each QAT model), so a
small input is called batch by batch instead. A large input still goes through predict, whose traced function
runs a big model faster than eager calls (MobileNetV2 @224 on 512 images: 5.2 s against 7-10 s; AMD EPYC,
avx2 avx512_vnni avx512f avx_vnni)."""

from __future__ import annotations

from typing import Any

import numpy as np

EAGER_MAX_VALUES = 4_000_000  # input values (16 MB of float32) up to which the model is called eagerly
EAGER_BATCH = 256


def infer(model: Any, x: np.ndarray | dict[str, np.ndarray], batch_size: int) -> Any:
    """model.predict(x, batch_size=batch_size, verbose=0): an ndarray, or a list or dict of them, as predict
    gives it. `x`: an array, or {input name: array} for several inputs."""
    import keras

    arrays = list(x.values()) if isinstance(x, dict) else [x]
    n = len(arrays[0])
    if n == 0 or sum(int(np.size(a)) for a in arrays) > EAGER_MAX_VALUES:
        return model.predict(x, batch_size=batch_size, verbose=0)
    parts = [keras.tree.map_structure(np.asarray, model(_rows(x, i, i + EAGER_BATCH), training=False))
             for i in range(0, n, EAGER_BATCH)]
    return keras.tree.map_structure(lambda *p: np.concatenate(p), *parts)


def _rows(x: np.ndarray | dict[str, np.ndarray], start: int, stop: int) -> Any:
    if isinstance(x, dict):
        return {k: v[start:stop] for k, v in x.items()}
    return x[start:stop]
