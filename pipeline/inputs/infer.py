"""A Keras model's outputs on data in memory, as Model.predict gives them, without predict's cost on small inputs.

Model.predict traces a function for every model it sees first: 0.1-0.3 s, most of a small model's pass. The
build and its stages run fresh models all the time (each stage's candidate, each BatchNorm-recalibrated student,
each QAT model), so a small input is called batch by batch instead. A large input still goes through predict,
whose traced function runs a big model faster than eager calls. bench/keras_passes.py measures both (AMD EPYC,
avx2 avx512_vnni avx512f avx_vnni, BENCHMARKS-keras-passes.md): the digits CNN on 1,024 images 2.4x faster here
than in predict; MobileNetV2 1.0 @224 on 512 images 1.5-1.7x slower called eagerly than in predict."""

from __future__ import annotations

from typing import Any

import numpy as np

EAGER_MAX_VALUES = 4_000_000  # input values (16 MB of float32) up to which the model is called eagerly
EAGER_BATCH = 256  # samples per eager call where they are small: at most EAGER_BATCH_VALUES input values a call,
EAGER_BATCH_VALUES = 1_000_000  # and never fewer samples than the caller's batch_size (its memory bound for predict)


def infer(model: Any, x: np.ndarray | dict[str, np.ndarray], batch_size: int) -> Any:
    """model.predict(x, batch_size=batch_size, verbose=0): an ndarray, or a list or dict of them, as predict
    gives it. `x`: an array, or {input name: array} for several inputs."""
    import keras

    arrays = list(x.values()) if isinstance(x, dict) else [x]
    n = len(arrays[0])
    if n == 0 or sum(int(np.size(a)) for a in arrays) > EAGER_MAX_VALUES:
        return model.predict(x, batch_size=batch_size, verbose=0)
    per_sample = max(1, sum(int(np.size(a)) for a in arrays) // n)
    step = max(batch_size, min(EAGER_BATCH, EAGER_BATCH_VALUES // per_sample))
    parts = [keras.tree.map_structure(np.asarray, model(_rows(x, i, i + step), training=False))
             for i in range(0, n, step)]
    return keras.tree.map_structure(lambda *p: np.concatenate(p), *parts)


def _rows(x: np.ndarray | dict[str, np.ndarray], start: int, stop: int) -> Any:
    if isinstance(x, dict):
        return {k: v[start:stop] for k, v in x.items()}
    return x[start:stop]
