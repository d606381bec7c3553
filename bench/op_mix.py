"""Where MobileNetV2's int8 speed-up comes from: each of its op types alone, float vs int8, per runtime.

A network's int8 speed-up is a mix of its op types' speed-ups. Each probe is six layers of one op type at a
shape MobileNetV2 1.0 @224 runs (1x1 pointwise conv and 3x3 depthwise conv on 56x56x144, the stride-2 stem
conv on 224x224x3, one layer), exported by edgepipe's own target exports and timed float vs int8 interleaved, one thread.
Next to each, the op type's share of MobileNetV2 1.0 @224's MACs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cache import Cache
from pipeline.ui import UI

from .artifacts import prepare
from .measure import Timing, median_ms, ratio, run_child
from .models import BenchModel, mobilenet_v2

if TYPE_CHECKING:
    import keras

TARGETS = ("tflite", "openvino")
INTRO = " ".join(__doc__.split("\n\n")[1].split()) if __doc__ else ""
KINDS = ("pointwise", "depthwise", "stem")


def _stack(kind: str) -> keras.Model:
    import keras

    if kind == "stem":
        i = keras.Input((224, 224, 3))
        return keras.Model(i, keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu6")(i))
    i = keras.Input((56, 56, 144))
    x = i
    for _ in range(6):
        x = (keras.layers.Conv2D(144, 1, activation="relu6") if kind == "pointwise"
             else keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6"))(x)
    return keras.Model(i, x)


PROBES = (
    BenchModel("probe-pointwise", "1x1 pointwise conv 144->144 @56x56 (x6)", (56, 56, 144),
               lambda: _stack("pointwise"), quick=True),
    BenchModel("probe-depthwise", "3x3 depthwise conv 144 ch @56x56 (x6)", (56, 56, 144),
               lambda: _stack("depthwise"), quick=True),
    BenchModel("probe-stem", "3x3/2 stem conv 3->32 @224x224 (x1)", (224, 224, 3), lambda: _stack("stem"),
               quick=True),
)


def mac_shares() -> dict[str, float]:
    """Share of MobileNetV2 1.0 @224's MACs in pointwise, depthwise and the stem (the first, 3-channel conv)."""
    import keras

    from pipeline.compress.cost import layer_macs

    model = mobilenet_v2(1.0, 224)
    macs = dict.fromkeys((*KINDS, "other"), 0)
    for layer in model.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            continue
        m = layer_macs(layer, tuple(layer.input.shape), tuple(layer.output.shape))
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            macs["depthwise"] += m
        elif isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1):
            macs["pointwise"] += m
        elif isinstance(layer, keras.layers.Conv2D) and layer.input.shape[-1] == 3:
            macs["stem"] += m
        else:
            macs["other"] += m
    total = sum(macs.values())
    return {k: v / total for k, v in macs.items()}


def measure(work: Path, cache: Cache, ui: UI, timing: Timing) -> list[str]:
    """The markdown section: one row per probe, float and int8 ms and their ratio per runtime."""
    shares = mac_shares()
    body = []
    no_gain: dict[str, list[str]] = {t: [] for t in TARGETS}
    for bm, kind in zip(PROBES, KINDS, strict=True):
        ui.info(f"op mix: {bm.title}")
        prep = prepare(bm, work, cache, ui, targets=TARGETS)
        cells = [bm.title, f"{shares[kind] * 100:.1f}%"]
        for t in TARGETS:
            if t in prep.errors:
                cells += ["error", "error", "error"]
                continue
            arts = prep.artifacts[t]
            res = run_child({"float": arts["float"], "int8": arts["int8"]}, bm.input_shape, 1, timing)
            r = ratio(res, "float", "int8")
            if r[0] < 1.1:
                no_gain[t].append(f"{kind} {r[0]:.2f}x")
            cells += [f"{median_ms(res, 'float'):.3f}", f"{median_ms(res, 'int8'):.3f}",
                      f"{r[0]:.2f}x [{r[1]:.2f}-{r[2]:.2f}]"]
        body.append(cells)
    header = ["Probe (one op type)", "share of MobileNetV2 1.0 @224 MACs"] + [
        f"{'LiteRT' if t == 'tflite' else 'OpenVINO'} {c}" for t in TARGETS for c in ("float ms", "int8 ms",
                                                                                      "float / int8")]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    other = shares["other"] * 100
    lines += ["", f"The rest of MobileNetV2's MACs ({other:.1f}%) are in its last Dense layer."]
    for t in TARGETS:
        if no_gain[t]:
            lines.append("")
            lines.append(f"On {'LiteRT' if t == 'tflite' else 'OpenVINO'} here, int8 gains little or nothing over "
                         f"float for: {', '.join(no_gain[t])} (float / int8); a network's speed-up is bounded by "
                         "the time it spends in such ops, whatever the conversion.")
    return lines + [""]
