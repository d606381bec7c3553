"""OpenVINO int8 on x86 CPUs without VNNI: NNCF's overflow_fix (DISABLE / FIRST_LAYER / ENABLE), measured.

Without VNNI (AVX2 only), oneDNN's int8 kernels multiply u8 activations by s8 weights with VPMADDUBSW, which
adds each adjacent pair of products into a saturating int16: 2 * 255 * 127 = 64770 does not fit in 32767.
NNCF's `overflow_fix` quantizes weights to 7 bits (half range) so that the pair sum cannot saturate: in the
first quantized layer only (FIRST_LAYER, NNCF's default), everywhere (ENABLE) or nowhere (DISABLE).

For each model the same float OpenVINO IR is quantized three times with the same calibration samples and the
settings `targets/openvino.py` uses (MINMAX activations, fast bias correction, no channel alignment), only
`overflow_fix` differing. Every IR (and the float one) is evaluated on the digits test split by edgepipe's own
runner (`targets.runner.open_session` + `evaluate`, OpenVINO's CPU plugin) twice: natively on this host and
under `qemu-x86_64-static -cpu Haswell` (AVX2, FMA, no AVX-512, no VNNI), which makes oneDNN pick its AVX2
kernels. The kernel each run chose is read back from the compiled model (`primitiveType`), so the table shows
which ISA really ran. Emulated latency means nothing; only accuracy is compared.

Models (both on scikit-learn's 8x8 digits, inputs / 16 so that the many full-ink pixels are at the top of
the u8 range):
- digits-cnn: edgepipe's built-in example teacher (pipeline/examples.py), trained here for a few epochs.
- wide-binary: a stress case: conv 3x3 1->64 and conv 3x3 64->128 with fixed random +-1 weights (every
  weight is its channel's maximum, so every s8 weight is +-127) and ReLU6 (activations pile up at the top of
  the u8 range), global average pool, a dense readout fitted by logistic regression on the float features.

    python -m bench.openvino_overflow [--out BENCHMARKS-openvino-overflow.md] [--epochs 15] [--no-qemu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXES = ("DISABLE", "FIRST_LAYER", "ENABLE")
QEMU = "qemu-x86_64-static"
QEMU_CPU = "Haswell"
CALIBRATION_SAMPLES = 300


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from pipeline.inputs.examples import _digits_split

    x_tr, x_te, y_tr, y_te = _digits_split()
    return x_tr[..., None] / 16.0, y_tr, x_te[..., None] / 16.0, y_te


def _digits_cnn(x: np.ndarray, y: np.ndarray, epochs: int) -> Any:
    import keras

    from pipeline.inputs.examples import EXAMPLES

    keras.utils.set_random_seed(0)
    model = EXAMPLES["digits-cnn"].build_teacher()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _wide_binary(x: np.ndarray, y: np.ndarray) -> Any:
    import keras
    from keras import layers
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    inp = keras.Input((8, 8, 1), name="image")
    c1 = layers.Conv2D(64, 3, padding="same", use_bias=False)
    c2 = layers.Conv2D(128, 3, padding="same", use_bias=False)
    h = layers.ReLU(max_value=6.0)(c1(inp))
    h = layers.ReLU(max_value=6.0)(c2(h))
    features = keras.Model(inp, layers.GlobalAveragePooling2D()(h))
    c1.set_weights([rng.choice([-1.0, 1.0], (3, 3, 1, 64)).astype(np.float32) * 2.0])
    c2.set_weights([rng.choice([-1.0, 1.0], (3, 3, 64, 128)).astype(np.float32) * 0.05])
    f = features.predict(x, verbose=0)
    clf = LogisticRegression(max_iter=2000, C=10.0).fit(f, y)
    dense = layers.Dense(10, activation="softmax", name="probs")
    model = keras.Model(inp, dense(features.output), name="wide_binary")
    dense.set_weights([clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32)])
    return model


def _ov_float(model: Any, folder: Path) -> Any:
    """The float IR as targets/openvino.float_model makes it: SavedModel -> convert_model -> batch 1."""
    import openvino as ov

    model.export(str(folder / "saved_model"), verbose=False)
    ov_model = ov.convert_model(str(folder / "saved_model"))
    ov_model.reshape([1, *model.input_shape[1:]])
    return ov_model


def _quantize(ov_model: Any, calib: list[np.ndarray], fix: str) -> Any:
    """targets/openvino._nncf_quantize's settings for `minmax` calibration, with `overflow_fix` set."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
                                              disable_channel_alignment=True, overflow_fix=getattr(OverflowFix, fix))
    return nncf.quantize(ov_model, nncf.Dataset(calib), subset_size=len(calib), fast_bias_correction=True,
                         advanced_parameters=advanced)


def evaluate_child(job_path: str) -> None:
    """Child process (native or under qemu): evaluate each IR with the runner, print one JSON object."""
    sys.path.insert(0, str(ROOT))
    from targets import runner

    job = json.loads(Path(job_path).read_text())
    with np.load(job["eval"]) as data:
        x, y = data["x"].astype(np.float32), data["y"]
    out = {}
    for key, xml in job["models"].items():
        session = runner.open_session(Path(xml), 1)
        kernels = sorted({op.get_rt_info()["primitiveType"].astype(str) for op in session.compiled.get_runtime_model().get_ops()
                          if op.get_rt_info()["layerType"].astype(str) in ("Convolution", "FullyConnected")})
        out[key] = {"accuracy": runner.evaluate(session, x, y), "kernels": kernels}
    print(json.dumps(out))


def _run_child(job: Path, emulate: bool) -> dict:
    path = [*_site_packages(), str(ROOT)]
    code = f"import sys; sys.path[:0] = {path!r}; import bench.openvino_overflow as b; b.evaluate_child({str(job)!r})"
    python = os.path.realpath(sys.executable)
    cmd = [QEMU, "-cpu", QEMU_CPU, python, "-c", code] if emulate else [python, "-c", code]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if res.returncode != 0:
        raise RuntimeError(f"{'qemu ' if emulate else ''}evaluation failed:\n{res.stderr[-3000:]}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def _site_packages() -> list[str]:
    import site

    return [p for p in site.getsitepackages() if Path(p).is_dir()]


def _flags() -> list[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "flags":
            return sorted(f for f in val.split() if f.startswith(("avx", "fma", "amx", "sse4")))
    return []


def _short(kernels: list[str]) -> str:
    return ", ".join(kernels) if kernels else "-"


def _irs(folder: Path, x_tr: np.ndarray, y_tr: np.ndarray, epochs: int, t0: float) -> dict[str, str]:
    """Each model's float IR and its three overflow_fix variants, saved under `folder`: {model/variant: .xml}."""
    import openvino as ov

    rng = np.random.default_rng(0)
    calib = [x_tr[i : i + 1].astype(np.float32) for i in rng.choice(len(x_tr), CALIBRATION_SAMPLES, replace=False)]
    models: dict[str, str] = {}
    for name, build in (("digits-cnn", lambda: _digits_cnn(x_tr, y_tr, epochs)),
                        ("wide-binary", lambda: _wide_binary(x_tr, y_tr))):
        print(f"[{time.perf_counter() - t0:5.0f}s] {name}: building, quantizing", file=sys.stderr)
        (folder / name).mkdir()
        ov_float = _ov_float(build(), folder / name)
        for variant in ("float", *FIXES):
            m = ov_float if variant == "float" else _quantize(ov_float, calib, variant)
            xml = folder / name / f"{variant}.xml"
            ov.save_model(m, str(xml), compress_to_fp16=False)
            models[f"{name}/{variant}"] = str(xml)
    return models


def _rows(models: dict[str, str], results: dict[str, Any],
          hosts: list[str]) -> tuple[list[list[str]], dict[str, set[str]]]:
    """The table's rows (model, variant, accuracy per host) and the kernels each host's CPU plugin chose."""
    rows: list[list[str]] = []
    kernels: dict[str, set[str]] = {h: set() for h in hosts}
    for key in models:
        name, variant = key.split("/")
        cells = [name, "float (no int8)" if variant == "float" else variant]
        for host in hosts:
            r = results[host][key]
            cells.append(f"{r['accuracy']:.3f}")
            kernels[host].update(r["kernels"])
        rows.append(cells)
    return rows, kernels


def _markdown(rows: list[list[str]], kernels: dict[str, set[str]], hosts: list[str], emulate: bool,
              elapsed: float, y_te: np.ndarray) -> list[str]:
    import keras
    import nncf
    import openvino as ov

    header = ["Model", "overflow_fix", *(f"accuracy, {h}" for h in hosts)]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    return [
        "# OpenVINO int8 on CPUs without VNNI: NNCF overflow_fix",
        "",
        f"Written by `python -m bench.openvino_overflow` on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"run time {elapsed / 60:.1f} min.",
        "",
        f"- Host CPU flags (avx*/fma/amx/sse4): {' '.join(_flags())}",
        f"- Versions: python {platform.python_version()}, openvino {ov.get_version().split('-')[0]}, "
        f"nncf {nncf.__version__}, keras {keras.__version__}, numpy {np.__version__}",
        f"- Emulation: {QEMU} -cpu {QEMU_CPU} (AVX2 + FMA, no AVX-512, no VNNI)" if emulate else "- Emulation: none",
        f"- Calibration: the same {CALIBRATION_SAMPLES} training samples for every variant; NNCF MINMAX activations, "
        "fast bias correction, no channel alignment (targets/openvino.py's `minmax` settings); only "
        "`overflow_fix` differs.",
        f"- Accuracy: top-1 on the {len(y_te)}-sample digits test split, one sample at a time, through "
        "`targets.runner` (OpenVINO CPU plugin).",
        *(f"- Conv/FC kernels the CPU plugin chose, {h}: {_short(sorted(kernels[h]))}" for h in hosts),
        "",
        *table,
        "",
        "Reading the table: a row whose two accuracy columns differ is an artifact whose accuracy depends on the "
        "CPU's ISA. On the AVX2-only CPU the CPU plugin runs oneDNN's jit_avx2 int8 kernels (VPMADDUBSW, int16 "
        "pair sums that saturate); natively it runs AVX-512 VNNI kernels (int32 accumulation, nothing saturates).",
        "",
        "What targets/openvino.py does with this (since target version 7): `overflow_fix=ENABLE` for every export, "
        "recorded in the target's report notes. NNCF's default FIRST_LAYER leaves later layers at full 8-bit range, "
        "which saturates on x86 CPUs without VNNI (the wide-binary rows); ENABLE makes the artifact's accuracy the "
        "same on both ISAs, and its 7-bit weights cost no more than noise on the VNNI host here. The export does not "
        "know which device will run the artifact (one int8 IR serves every profile and `edgepipe verify` may run it "
        "on another CPU), so the fix is not chosen per device profile.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.openvino_overflow", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS-openvino-overflow.md")
    p.add_argument("--epochs", type=int, default=15, help="digits-cnn training epochs")
    p.add_argument("--no-qemu", action="store_true", help="native runs only")
    a = p.parse_args(argv)
    emulate = not a.no_qemu and shutil.which(QEMU) is not None
    t0 = time.perf_counter()
    import keras  # noqa: F401  (the runtimes load in this order, before the data, as they always did)
    import nncf  # noqa: F401
    import openvino  # noqa: F401

    x_tr, y_tr, x_te, y_te = _digits()
    hosts = ["native"] + ([f"qemu -cpu {QEMU_CPU}"] if emulate else [])
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-") as tmp:
        folder = Path(tmp)
        np.savez(folder / "eval.npz", x=x_te.astype(np.float32), y=y_te)
        models = _irs(folder, x_tr, y_tr, a.epochs, t0)
        job = folder / "job.json"
        job.write_text(json.dumps({"eval": str(folder / "eval.npz"), "models": models}))
        results = {}
        for host in hosts:
            print(f"[{time.perf_counter() - t0:5.0f}s] evaluating {len(models)} IRs: {host}", file=sys.stderr)
            results[host] = _run_child(job, emulate=host != "native")
    rows, kernels = _rows(models, results, hosts)
    text = "\n".join(_markdown(rows, kernels, hosts, emulate, time.perf_counter() - t0, y_te))
    sys.stdout.write(text)
    if a.out is not None:
        a.out.write_text(text)
        print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
