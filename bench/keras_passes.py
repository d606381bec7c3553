"""The build's Keras inference passes, before and after 2026-12-08, timed in one run on this host.

- BatchNorm recalibration (pipeline.compress.training.recalibrate_batchnorm, before every validation pass of a
  fine-tune): one inference pass over the graph, each BatchNorm set just before it runs, against the earlier
  method kept here as the baseline: a sub-model up to each BatchNorm and its Model.predict, in layer order (a
  pass per BatchNorm). Both end with the same statistics; the table gives the largest relative difference.
- An inference pass on a fresh model (stage metrics, teacher logits, reference predictions, QAT):
  pipeline.inputs.infer against Model.predict. Small inputs are called eagerly; inputs over
  infer.EAGER_MAX_VALUES values go through predict in both columns.

- Why infer keeps predict for large inputs: MobileNetV2 1.0 @224 on 512 images, Model.predict against the same
  model called eagerly batch by batch (infer with its threshold lifted); no recalibration columns (the baseline
  would take minutes a round).

Each cell is the median of `--repeats` rounds, the two methods interleaved within a round (which goes first
alternates), each round on a fresh copy of the model (Keras traces per model object). Ratios are baseline / new, with the range over the rounds.

    python -m bench.keras_passes [--repeats 3] [--out BENCHMARKS-keras-passes.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .system import emit, host_words


def per_batchnorm_predict(model: Any, x: np.ndarray, max_samples: int = 1024) -> None:
    """The baseline: recalibrate_batchnorm as it was until 2026-12-08 (a sub-model and a predict per BatchNorm)."""
    import keras

    head = np.asarray(x[:max_samples])
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        act = np.asarray(keras.Model(model.inputs, layer.input).predict(head, batch_size=256, verbose=0))
        axes = tuple(i for i in range(act.ndim) if i != (layer.axis % act.ndim))
        gamma_beta = layer.get_weights()[: len(layer.get_weights()) - 2]
        layer.set_weights([*gamma_beta, act.mean(axis=axes), act.var(axis=axes)])


def _digits_cnn() -> Any:
    from pipeline.inputs.examples import _digits_cnn as make

    return make()


def _mobilenet_v2() -> Any:
    import keras

    return keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)


MODELS: dict[str, tuple[Callable[[], Any], tuple[int, ...], int]] = {  # name: (builder, input shape, samples)
    "digits CNN (examples)": (_digits_cnn, (8, 8, 1), 1024),
    "MobileNetV2 0.35 @96": (_mobilenet_v2, (96, 96, 3), 256),
}


def _stats(model: Any) -> list[np.ndarray]:
    import keras

    return [w for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
            for w in layer.get_weights()[2:]]


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(times: dict[str, list[float]], round_no: int, pair: list[tuple[str, Callable[[], Any]]]) -> None:
    """Time both calls of `pair` one after the other; which goes first alternates between rounds."""
    for key, fn in pair[:: 1 if round_no % 2 == 0 else -1]:
        times[key].append(_timed(fn))


def _fresh(model: Any) -> Any:
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def large(repeats: int) -> dict[str, Any]:
    """MobileNetV2 1.0 @224 on 512 images: predict against eager calls (infer's threshold lifted)."""
    import keras

    from pipeline.inputs import infer as infer_module

    model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
    x = np.random.default_rng(0).random((512, 224, 224, 3), dtype=np.float32)
    times: dict[str, list[float]] = {"predict": [], "eager": []}
    limit = infer_module.EAGER_MAX_VALUES
    def eager(m: Any) -> None:
        infer_module.EAGER_MAX_VALUES = x.size
        try:
            infer_module.infer(m, x, 32)
        finally:
            infer_module.EAGER_MAX_VALUES = limit

    for r in range(repeats):
        p, e = _fresh(model), _fresh(model)
        _interleaved(times, r, [("predict", partial(p.predict, x, batch_size=32, verbose=0)),
                                ("eager", partial(eager, e))])
    return {"values": int(x.size), "times": times}


def measure(repeats: int) -> list[dict[str, Any]]:
    from pipeline.compress.training import recalibrate_batchnorm
    from pipeline.inputs.infer import infer

    rows = []
    for name, (build, shape, n) in MODELS.items():
        model = build()
        x = np.random.default_rng(0).random((n, *shape), dtype=np.float32)
        times: dict[str, list[float]] = {k: [] for k in ("bn old", "bn new", "predict", "infer")}
        diff = 0.0
        for r in range(repeats):
            old, new, p, i = _fresh(model), _fresh(model), _fresh(model), _fresh(model)
            _interleaved(times, r, [("bn old", partial(per_batchnorm_predict, old, x)),
                                    ("bn new", partial(recalibrate_batchnorm, new, x))])
            _interleaved(times, r, [("predict", partial(p.predict, x, batch_size=32, verbose=0)),
                                    ("infer", partial(infer, i, x, 32))])
            diff = max([diff] + [float(np.max(np.abs(a - b) / (np.abs(a) + 1e-3)))
                                 for a, b in zip(_stats(old), _stats(new), strict=True)])
        rows.append({"model": name, "samples": n, "values": int(x.size), "times": times, "diff": diff})
    return rows


def _ratio(base: list[float], new: list[float]) -> str:
    ratios = sorted(b / n for b, n in zip(base, new, strict=True))
    return f"{statistics.median(ratios):.1f}x ({ratios[0]:.1f}-{ratios[-1]:.1f})"


def table(rows: list[dict[str, Any]]) -> str:
    from pipeline.inputs.infer import EAGER_MAX_VALUES

    lines = ["| model | samples (input values) | BatchNorm recalibration: per-BatchNorm predict s | one pass s | "
             "speed-up | largest relative difference | inference pass: Model.predict s | infer s | speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = {k: statistics.median(v) for k, v in r["times"].items()}
        path = "eager" if r["values"] <= EAGER_MAX_VALUES else "predict"
        lines.append(f"| {r['model']} | {r['samples']} ({r['values']:,}; infer: {path}) | {t['bn old']:.3f} | "
                     f"{t['bn new']:.3f} | {_ratio(r['times']['bn old'], r['times']['bn new'])} | {r['diff']:.1e} | "
                     f"{t['predict']:.3f} | {t['infer']:.3f} | {_ratio(r['times']['predict'], r['times']['infer'])} |")
    return "\n".join(lines)


def large_table(row: dict[str, Any]) -> str:
    t = {k: statistics.median(v) for k, v in row["times"].items()}
    ratios = sorted(e / p for p, e in zip(row["times"]["predict"], row["times"]["eager"], strict=True))
    return ("| model | images (input values) | Model.predict s | called eagerly s | eager / predict |\n|---|---|---|---|---|\n"
            f"| MobileNetV2 1.0 @224 | 512 ({row['values']:,}) | {t['predict']:.2f} | {t['eager']:.2f} | "
            f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f}) |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the table (markdown) here as well")
    args = parser.parse_args(argv)
    started = time.time()
    rows = measure(args.repeats)
    big = large(args.repeats)
    text = (f"# The build's Keras inference passes\n\nMeasured {datetime.now(timezone.utc):%Y-%m-%d} by "
            f"`python -m bench.keras_passes --repeats {args.repeats}` on {host_words()}, "
            f"{time.time() - started:.0f} s. What is measured: the "
            "docstring of bench/keras_passes.py. Medians of the rounds; speed-ups are the median of the rounds' "
            "ratios (baseline / new) with their range.\n\n" + table(rows) + "\n\n"
            "Why inputs over the threshold still go through Model.predict (a larger model, eager calls forced):\n\n"
            + large_table(big) + "\n")
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
