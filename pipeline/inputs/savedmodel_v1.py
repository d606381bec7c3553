"""Reviving a TF 2.x SavedModel that TF 2 itself can no longer load, through the TF1 loader.

A Keras 2 `model.save(dir)` with its compiled OptimizerV2 optimizer (the default up to TF 2.10, the
`legacy` optimizers up to 2.15) stores the optimizer's slot variables on an object that only Keras 2
revives: without it `tf.saved_model.load` fails with "'_UserObject' object has no attribute 'add_slot'".
The TF1 loader reads the MetaGraph alone. Its serving_default signature is loaded into a tf.Graph, the
variables are frozen to constants, and the graph is re-exported as a plain TF2 SavedModel whose
serving_default has the same input and output names; the re-export is checked against the TF1 graph.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SERVING = "serving_default"
PROBE_BATCH = 2


@dataclass(frozen=True)
class FrozenSignature:
    """serving_default of the TF1-loaded graph, variables as constants, and a probe of its outputs."""

    graph_def: Any  # tf.compat.v1.GraphDef
    inputs: dict[str, Any]  # signature key -> TensorInfo
    outputs: dict[str, Any]
    probe: dict[str, np.ndarray] | None  # random inputs by key (None: a dimension is unknown)
    expected: dict[str, np.ndarray] | None  # the TF1 graph's outputs on the probe


@contextlib.contextmanager
def _quiet_tf() -> Iterator[None]:
    """The TF1 loader and freezer are deprecated: their warnings would only confuse a user."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _probe_inputs(inputs: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Random float inputs for every signature input, batch PROBE_BATCH; None when one cannot be made."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    probe = {}
    for key, info in inputs.items():
        dims = [d.size for d in info.tensor_shape.dim]
        dtype = tf.as_dtype(info.dtype)
        if info.tensor_shape.unknown_rank or not dims or -1 in dims[1:] or not dtype.is_floating:
            return None
        probe[key] = rng.random([PROBE_BATCH, *dims[1:]]).astype(dtype.as_numpy_dtype)
    return probe


def freeze_serving(src: Path) -> FrozenSignature:
    """Load `src`'s serving graph with the TF1 loader, run the probe, freeze variables to constants."""
    import tensorflow as tf

    graph = tf.Graph()
    with _quiet_tf(), tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, [tf.saved_model.SERVING], str(src))
        if SERVING not in meta.signature_def:
            raise ValueError(f"no {SERVING} signature (it has: {', '.join(meta.signature_def) or 'none'})")
        sig = meta.signature_def[SERVING]
        inputs, outputs = dict(sig.inputs), dict(sig.outputs)
        probe = _probe_inputs(inputs)
        expected = None
        if probe is not None:
            fetches = {k: v.name for k, v in outputs.items()}
            expected = sess.run(fetches, {inputs[k].name: a for k, a in probe.items()})
        out_ops = sorted({v.name.split(":")[0] for v in outputs.values()})
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), out_ops)
    return FrozenSignature(frozen, inputs, outputs, probe, expected)


def _serving_module(frozen: FrozenSignature) -> Any:
    """A tf.Module whose `serve` tf.function runs the frozen graph, inputs named by their signature keys."""
    import tensorflow as tf

    def _import() -> None:
        tf.compat.v1.import_graph_def(frozen.graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    keys = list(frozen.inputs)
    pruned = wrapped.prune(feeds=[wrapped.graph.as_graph_element(frozen.inputs[k].name) for k in keys],
                           fetches={k: wrapped.graph.as_graph_element(v.name) for k, v in frozen.outputs.items()})
    specs = [tf.TensorSpec([d.size if d.size >= 0 else None for d in frozen.inputs[k].tensor_shape.dim],
                           tf.as_dtype(frozen.inputs[k].dtype), name=k) for k in keys]
    module = tf.Module()
    module.serve = tf.function(lambda *args: pruned(*args), input_signature=specs)
    return module


def _check(dest: Path, frozen: FrozenSignature) -> bool:
    """The re-export must give the TF1 graph's outputs on the probe; False when there is no probe."""
    import tensorflow as tf

    if frozen.probe is None or frozen.expected is None:
        return False
    fn = tf.saved_model.load(str(dest)).signatures[SERVING]
    got = fn(**{k: tf.constant(a) for k, a in frozen.probe.items()})
    for key, want in frozen.expected.items():
        if not np.allclose(np.asarray(got[key]), want, rtol=1e-4, atol=1e-5):
            raise ValueError(f"the re-exported graph's output {key!r} differs from the TF1 loader's")
    return True


def revive(src: Path, dest: Path) -> bool:
    """Write a TF2 SavedModel at `dest` (a new folder) with `src`'s serving_default, variables frozen.
    True when its outputs were checked against the TF1 graph's (not possible with unknown dimensions)."""
    import tensorflow as tf

    frozen = freeze_serving(src)
    module = _serving_module(frozen)
    tf.saved_model.save(module, str(dest), signatures={SERVING: module.serve})
    return _check(dest, frozen)
