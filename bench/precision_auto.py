"""`precision = "auto"` on the demo (the built-in example digits-cnn) and on one bench model (MobileNetV2 0.35,
the bench's architecture, trained briefly on the digits upsampled to 64x64x3 so that accuracy means something):
each target's candidates table as the build's report.json records it, written to BENCHMARKS-precision-auto.md.

    python -m bench.precision_auto [--out BENCHMARKS-precision-auto.md] [--only demo|mobilenetv2] [--runs DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, config_from_dict
from pipeline.inputs.examples import EXAMPLES
from pipeline.ui import UI
from targets import target_names

from .pipeline_floor import host_kind

SIDE = 64  # MobileNetV2's input side: the 8x8 digits upsampled 8x
EPOCHS = 30
CASES = ("demo", "mobilenetv2")


def _digits(dest: Path) -> Path:
    """The example's digits split, each image upsampled to SIDE x SIDE and repeated on 3 channels (raw 0..16)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(d.images.astype(np.float32), d.target.astype(np.int64), test_size=0.2,
                                              stratify=d.target, random_state=0)
    up = np.ones((SIDE // 8, SIDE // 8), np.float32)

    def big(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.stack([np.kron(i, up) for i in x])[..., None], 3, axis=-1)

    np.savez(dest, x_train=big(x_tr), y_train=y_tr, x_test=big(x_te), y_test=y_te)
    return dest


def _mobilenet(npz: Path, dest: Path) -> float:
    """MobileNetV2 0.35 @ SIDE (keras.applications, 10 classes), trained from scratch; its test accuracy."""
    import keras

    keras.utils.set_random_seed(0)
    with np.load(npz) as d:
        x, y, xt, yt = d["x_train"] / 16.0, d["y_train"], d["x_test"] / 16.0, d["y_test"]
    model = keras.applications.MobileNetV2(input_shape=(SIDE, SIDE, 3), alpha=0.35, weights=None, classes=10)
    for layer in model.layers:  # its 0.999 keeps the moving statistics near their start in a short training
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=EPOCHS, batch_size=32, verbose=0)
    model.save(dest)
    return float(model.evaluate(xt, yt, verbose=0)[1])


def _auto_targets(extra: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    return {t: {"precision": "auto", **(extra or {}).get(t, {})} for t in target_names()}


def demo_config() -> Config:
    """The built-in example digits-cnn as `edgepipe build` runs it, every target set to precision = "auto"."""
    cfg = copy.deepcopy(EXAMPLES["digits-cnn"].config)
    cfg["targets"] = _auto_targets()
    return config_from_dict(cfg, name="digits-cnn-auto", base_dir=Path.cwd(), source="example digits-cnn (auto)")


def mobilenet_config(work: Path) -> Config:
    npz = work / "digits64.npz"
    if not npz.exists():
        _digits(npz)
    model = work / "mobilenetv2.keras"
    if not model.exists():
        print(f"MobileNetV2: test accuracy in Keras {_mobilenet(npz, model):.4f} after {EPOCHS} epochs", flush=True)
    # OpenVINO with 2 threads: its 1-thread int8 FC kernels are wrong on AVX-512 VNNI EPYC (docs/how-it-works/guarantees.md)
    cfg = {"model": {"path": str(model)}, "data": {"path": str(npz), "scale": 16.0},
           "quantize": {"calibration_samples": 200}, "budget": {"max_accuracy_drop": 0.01},
           "targets": _auto_targets({t: {"iterations": 200, "warmup": 20} for t in target_names()}
                                    | {"openvino": {"iterations": 200, "warmup": 20, "threads": 2}})}
    return config_from_dict(cfg, name="mobilenetv2-auto", base_dir=work, source="bench mobilenetv2")


def _build(cfg: Config, out: Path, again: bool = True) -> dict[str, Any]:
    from pipeline.build import BuildRequest, build

    if again or not (out / "report.json").is_file():
        build(BuildRequest(cfg, tuple(cfg.targets.enabled()), out), UI())
    return dict(json.loads((out / "report.json").read_text()))


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _built_at(runs: Path) -> float:
    """When the newest run was built (the tables' date)."""
    done = [p.stat().st_mtime for p in runs.glob("*/report.json")]
    return max(done) if done else datetime.now(timezone.utc).timestamp()


def table(report: dict[str, Any]) -> list[str]:
    """Markdown: per target, the candidates side by side and the one-line choice."""
    lines = [f"Reference accuracy {_f(report['reference'].get('accuracy'), '.4f')}; budget "
             + ", ".join(f"{k} = {v}" for k, v in report["budget"].items() if v is not None) + "."]
    for name, t in report["targets"].items():
        lat = t.get("latency_ms") or {}
        lines += ["", f"**{name}** on {t.get('device')} ({t.get('runtime')}, {lat.get('threads', '-')} thread(s), "
                  f"{lat.get('iterations', '-')} pooled runs): {t.get('precision_choice') or t.get('error')}", "",
                  "| candidate | precision | how | accuracy | drop | median ms | size KB | budget | why |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in t.get("precision_candidates", []):
            verdict = ("PASS" if c["passed"] else "FAIL") if c["measured"] else "-"
            name_cell = f"**{c['candidate']}** (shipped)" if c["chosen"] else c["candidate"]
            size = None if c["size_bytes"] is None else c["size_bytes"] / 1024
            lines.append(f"| {name_cell} | {c['precision']} | {c['detail'] or '-'} | {_f(c['accuracy'], '.4f')} | "
                         f"{_f(c['accuracy_drop'], '+.4f')} | {_f(c['latency_ms'], '.4f')} | {_f(size, '.1f')} | "
                         f"{verdict} | {c['why'].replace('|', '/')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    from pipeline.commands import import_tensorflow_quietly

    p = argparse.ArgumentParser(prog="python -m bench.precision_auto")
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS-precision-auto.md"))
    p.add_argument("--only", choices=CASES)
    p.add_argument("--runs", type=Path, default=Path("runs/precision-auto"), help="run directories and the model")
    p.add_argument("--tables-only", action="store_true", help="rewrite the tables from the runs' report.json")
    args = p.parse_args(argv)
    import_tensorflow_quietly()
    args.runs.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    if args.only in (None, "demo"):
        report = _build(demo_config(), args.runs / "demo", not args.tables_only)
        sections += ["## The demo: `edgepipe build digits-cnn` with `precision = \"auto\"` for every target", "",
                     *table(report), ""]
    if args.only in (None, "mobilenetv2"):
        report = _build(mobilenet_config(args.runs), args.runs / "mobilenetv2", not args.tables_only)
        sections += [f"## MobileNetV2 0.35 @{SIDE}x{SIDE}x3, 10 classes: `bench/models.py`'s architecture, trained "
                     f"{EPOCHS} epochs from scratch on the digits upsampled {SIDE // 8}x (the reference is that "
                     "model)", "", *table(report), ""]
    stamp = datetime.fromtimestamp(_built_at(args.runs), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = ["# precision = \"auto\": the candidates per target", "",
            f"{stamp}, host: {host_kind()}. Reproduce: `python -m bench.precision_auto`. Every candidate is "
            "measured by the build on this host with the target's settings, in two rounds (in order, then in "
            "reverse), its median from both; the fastest that meets the budget ships (within 2%: the smaller).", "",
            *sections]
    args.out.write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
