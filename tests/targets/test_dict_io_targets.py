"""Issue 28's must-show: Keras models with dict outputs (and dict inputs) build on all three targets, every output
checked in each artifact's own runtime. The artifacts name their outputs by the dict's keys: they are run again
here with each runtime's own API, fed and read by name, and compared with what the report says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from pipeline.cli import main
from targets.runner_metrics import sqnr

if TYPE_CHECKING:
    from targets.ssh import SshDevice

pytestmark = pytest.mark.slow  # two three-target builds (about 35 s each on 2 cores)

TARGETS = ("tflite", "openvino", "tensorrt")
OUTPUTS = ("digit", "ink")
DEVICE_FILES = ("runner.py", "runner_sessions.py", "runner_metrics.py", "runner_arrays.py", "runner_settings.py",
                "trt_runner.py")


def _build(model: Path, npz: Path, work: Path) -> Path:
    """The issue's config: accuracy on the `digit` output; a budget (its verdict is not the point)."""
    tables = "\n".join(f"[targets.{t}]\niterations = 5\nwarmup = 1\nthreads = 2\n" for t in TARGETS)
    cfg = work / "dict.toml"
    cfg.write_text(f'[model]\npath = "{model}"\n[data]\npath = "{npz}"\nscale = 16.0\n'
                   f'[quantize]\ncalibration_samples = 200\n[metric]\nname = "accuracy"\noutput = "digit"\n'
                   f"[budget]\nmax_accuracy_drop = 0.03\n{tables}")
    rc = main(["--quiet", "build", str(cfg), "--out", str(work / "run")])
    assert rc in (0, 1), f"build exited {rc}"
    return work / "run"


@pytest.fixture(scope="module")
def runs(dict_outputs: tuple[Path, Path], dict_inputs: tuple[Path, Path],
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """{"outputs" | "inputs": (run directory, the model's npz)}."""
    return {kind: (_build(*pair, tmp_path_factory.mktemp(f"dict-{kind}")), pair[1])
            for kind, pair in (("outputs", dict_outputs), ("inputs", dict_inputs))}


def _eval(run: Path) -> dict[str, np.ndarray]:
    """eval.npz's inputs by name (one input: "x", fed under the artifact's only input name)."""
    with np.load(run / "data" / "eval.npz") as d:
        assert [str(n) for n in d["outputs"]] == list(OUTPUTS) and str(d["output"]) == "digit"
        return {k.removeprefix("x."): d[k] for k in d.files if k == "x" or k.startswith("x.")}


def _litert(path: Path, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    sig = Interpreter(model_path=str(path), num_threads=2).get_signature_runner("serving_default")
    ins, outs = sig.get_input_details(), sig.get_output_details()
    feed_names = {name: name if name in x else "x" for name in ins}  # one input: eval.npz's "x"
    rows: dict[str, list[np.ndarray]] = {k: [] for k in outs}
    for i in range(len(next(iter(x.values())))):
        feed = {}
        for name, d in ins.items():
            v = x[feed_names[name]][i : i + 1]
            if d["dtype"] != np.float32:
                scale, zero = d["quantization"]
                v = np.clip(np.round(v / scale + zero), -128, 127).astype(d["dtype"])
            feed[name] = v
        for key, v in sig(**feed).items():
            scale, zero = outs[key]["quantization"]
            rows[key].append((v.astype(np.float32) - zero) * scale if v.dtype != np.float32 else v)
    return {k: np.concatenate(v) for k, v in rows.items()}


def _openvino(path: Path, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": "2"})
    names = [p.get_any_name() for p in compiled.inputs]
    feed = {n: x[n] if n in x else x["x"] for n in names}
    rows = [compiled({k: v[i : i + 1] for k, v in feed.items()}) for i in range(len(x[next(iter(x))]))]
    return {k: np.concatenate([r[compiled.output(k)] for r in rows]) for k in OUTPUTS}


def _onnx(path: Path, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the Q/DQ graph as written
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: x[i.name] if i.name in x else x["x"] for i in sess.get_inputs()}
    return dict(zip(OUTPUTS, sess.run(list(OUTPUTS), feed), strict=True))


RUNTIMES = {"tflite": _litert, "openvino": _openvino, "tensorrt": _onnx}


@pytest.mark.parametrize("kind", ["outputs", "inputs"])
@pytest.mark.parametrize("target", TARGETS)
def test_every_output_of_every_target_is_checked_by_name(runs: dict[str, tuple[Path, Path]], kind: str,
                                                        target: str) -> None:
    run, npz = runs[kind]
    report = json.loads((run / "report.json").read_text())
    entry = report["targets"][target]
    assert "error" not in entry, entry
    assert report["metric"]["output"] == "digit" and report["eval_set"]["outputs"] == list(OUTPUTS)
    x = _eval(run)
    if kind == "inputs":
        assert sorted(x) == ["feats", "image"] and report["eval_set"]["inputs"] == ["feats", "image"]
    q = RUNTIMES[target](run / entry["artifact"], x)
    f = RUNTIMES[target](run / entry["float_artifact"], x)
    assert q["digit"].shape[1] == 10 and q["ink"].shape[1] == 1  # each named output is the head of that key
    with np.load(run / "data" / "eval.npz") as d, np.load(npz) as raw:
        y, ink = d["y"], raw["y_test.ink"]
        np.testing.assert_array_equal(y, raw["y_test.digit"])  # the test split in its order
    accuracy = float(np.mean(q["digit"].argmax(axis=1) == y))
    assert accuracy == pytest.approx(entry["accuracy"], abs=1.5 / len(y))  # the metric, on `digit`
    assert entry["metric"]["value"] == entry["accuracy"] and accuracy > 0.85
    assert float(np.mean((q["ink"] - ink) ** 2)) < 0.01  # the int8 `ink` head still measures ink
    assert set(entry["outputs"]) == set(OUTPUTS)
    for name in OUTPUTS:  # each output against the float twin, as the report says
        assert entry["outputs"][name]["sqnr_db"] == pytest.approx(sqnr(q[name], f[name]), abs=0.5), (name, entry)
        assert entry["outputs"][name]["sqnr_db"] > 8.0 and entry["outputs"][name]["cosine"] > 0.95, (name, entry)
    assert entry["outputs"]["digit"]["agreement_top1"] > 0.95
    assert "agreement_top1" not in entry["outputs"]["ink"]  # one value per sample: no top-1


@pytest.mark.parametrize("kind", ["outputs", "inputs"])
def test_the_validation_split_is_kept_for_dict_models(runs: dict[str, tuple[Path, Path]], kind: str) -> None:
    """The dict-output npz has no x_val (held out of train); the dict-input npz gives x_val.<input>, y_val.<output>."""
    run, npz = runs[kind]
    report = json.loads((run / "report.json").read_text())
    with np.load(run / "data" / "val.npz") as d, np.load(npz) as raw:
        assert [str(n) for n in d["outputs"]] == list(OUTPUTS) and str(d["output"]) == "digit"
        if kind == "inputs":
            assert report["validation_set"]["source"] == "given" and report["validation_set"]["samples"] == 300
            assert sorted(d.files) == ["output", "outputs", "x.feats", "x.image", "y"]
            np.testing.assert_array_equal(d["y"], raw["y_val.digit"])
            np.testing.assert_allclose(d["x.feats"], raw["x_val.feats"] / 16.0, rtol=1e-6)
        else:
            assert report["validation_set"]["source"] == "held out"
            assert sorted(d.files) == ["output", "outputs", "x", "y"] and len(d["y"]) > 200
    assert report["reference"]["metric"]["validation_value"] > 0.8


@pytest.mark.parametrize("target", TARGETS)
def test_the_device_runner_as_a_script_reads_the_metric_output(runs: dict[str, tuple[Path, Path]], target: str,
                                                               tmp_path: Path) -> None:
    """runner.py and its siblings alone in a folder (as copied to a device) score `digit` as the host did."""
    run = runs["inputs"][0]
    entry = json.loads((run / "report.json").read_text())["targets"][target]
    here = Path(__file__).resolve().parents[2] / "targets"
    for name in DEVICE_FILES:
        shutil.copy2(here / name, tmp_path / name)
    artifact = run / entry["artifact"]
    for f in artifact.parent.iterdir():
        shutil.copy2(f, tmp_path / f.name)
    shutil.copy2(run / "data" / "eval.npz", tmp_path / "eval.npz")
    done = subprocess.run([sys.executable, "runner.py", artifact.name, "--eval", "eval.npz", "--warmup", "1",
                           "--iterations", "2", "--threads", "2"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["samples"] == 360 and out["accuracy"] == pytest.approx(entry["accuracy"], abs=1.5 / 360)


@pytest.mark.parametrize("target", ["tflite", "openvino"])
def test_the_device_runner_over_ssh_feeds_dict_inputs(runs: dict[str, tuple[Path, Path]], target: str,
                                                      device: SshDevice) -> None:
    from targets.runner_settings import Bench
    from targets.ssh import run_remote

    run = runs["inputs"][0]
    entry = json.loads((run / "report.json").read_text())["targets"][target]
    remote = run_remote(device, run / entry["artifact"], run / "data" / "eval.npz", Bench(1, 3, 2))
    assert remote["samples"] == 360 and remote["accuracy"] == pytest.approx(entry["accuracy"], abs=1.5 / 360)
