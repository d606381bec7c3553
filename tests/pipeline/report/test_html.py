"""report.html: rendered from a realistic report, opened in a real headless Chromium (Debian's package)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.errors import UsageError
from pipeline.report.html import render_html, render_run

ROOT = Path(__file__).resolve().parents[3]
INSTALL = ROOT / "scripts" / "install-test-deps.sh"
HOSTILE_NOTE = "<script>alert(1)</script>"
HOSTILE_LAYER = 'conv_2"><img src=x onerror=alert(2)>'
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PNG_IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _latency(median: float, spread: float) -> dict[str, Any]:
    return {"median": median, "p90": median + spread, "p99": median + 2.5 * spread, "mean": median + 0.2 * spread,
            "std": spread / 2, "min": median - spread / 2, "iterations": 200, "warmup": 20, "threads": 1}


def _target(artifact: str, runtime: str, device: str, size: int, acc: float, latency: dict[str, Any]) -> dict[str, Any]:
    return {"artifact": artifact, "precision": "int8", "runtime": runtime, "device": device, "size_bytes": size,
            "float_accuracy": 0.975, "accuracy": acc, "accuracy_drop": round(0.975 - acc, 4), "float_layers": [],
            "latency_ms": latency, "notes": [], "passed": True, "violations": []}


def make_report() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    tflite = _target("tflite/model_int8.tflite", "ai-edge-litert 2.3.0", "host", 61_440, 0.969, _latency(0.42, 0.05))
    tflite["latency_samples_ms"] = [float(x) for x in rng.gamma(9.0, 0.05, 200)]
    tflite["sensitivity"] = [{"layer": "conv_1", "sqnr_db": 31.2, "accuracy": 0.971},
                             {"layer": HOSTILE_LAYER, "sqnr_db": 18.4, "accuracy": 0.952},
                             {"layer": "dense", "sqnr_db": 24.9, "accuracy": None}]
    openvino = _target("openvino/model_int8.xml", "openvino 2026.4.1", "host", 70_100, 0.951, _latency(0.61, 0.12))
    openvino.update(passed=False, violations=["accuracy drop 0.024 > max 0.01"], notes=[HOSTILE_NOTE])
    trt = _target("tensorrt/model_int8.onnx", "onnxruntime 1.32.0", "jetson-orin", 88_000, 0.966, _latency(0.25, 0.03))
    trials = [{"number": i, "accuracy": float(0.93 + 0.045 * (1 - np.exp(-lat))), "latency_ms": float(lat),
               "size_bytes": int(40_000 + 30_000 * lat), "pareto": i % 3 == 0, "params": {"width": 8 * (i + 1)}}
              for i, lat in enumerate(np.linspace(0.2, 1.6, 12))]
    return {
        "schema": 1, "edgepipe_version": "0.1.0", "passed": False,
        "budget": {"max_accuracy_drop": 0.01, "max_latency_ms": 2.0, "max_size_kb": None},
        "reference": {"path": "reference/model.keras", "accuracy": 0.981, "params": 1_200_000, "macs": 9_000_000,
                      "size_bytes": 4_800_000},
        "stages": [
            {"name": "distill", "path": "stages/distill/model.keras", "accuracy": 0.977, "params": 310_000,
             "macs": 2_100_000, "size_bytes": 1_250_000, "seconds": 41.5, "cached": False, "latency_ms": 0.9,
             "notes": []},
            {"name": "prune", "path": "stages/prune/model.keras", "accuracy": 0.975, "params": 160_000,
             "macs": 1_000_000, "size_bytes": 650_000, "seconds": 12.0, "cached": True, "latency_ms": 0.6,
             "notes": ["50% sparsity"]},
        ],
        "eval_set": {"path": "data/eval.npz", "samples": 2000},
        "versions": {"tensorflow": "2.21.0", "keras": "3.15.1"},
        "targets": {"tflite": tflite, "openvino": openvino, "tensorrt": trt},
        "search": {"trials": trials},
    }


# ---------- fixtures ----------


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed through scripts/install-test-deps.sh when missing."""
    found = shutil.which("chromium")
    if found:
        return found
    try:
        proc = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"chromium missing and {INSTALL.name} could not run: {exc}")
    found = shutil.which("chromium")
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        pytest.skip(f"chromium missing and {INSTALL.name} failed (rc={proc.returncode}): {' | '.join(tail)}")
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "report.json").write_text(json.dumps(make_report()), encoding="utf-8")
    return render_run(run_dir)


# ---------- DevTools protocol ----------


def _wait_port(user_data: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    port_file = user_data / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text().splitlines()[0])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"chromium gave no DevTools port (exit code {proc.poll()})")


def _page_socket_url(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
        pages = [t for t in json.load(resp) if t.get("type") == "page"]
    assert pages, "chromium has no page target"
    return str(pages[0]["webSocketDebuggerUrl"])


class DevTools:
    """Just enough of the DevTools protocol: commands, with every event kept."""

    def __init__(self, url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.events: list[dict[str, Any]] = []
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, f"{method}: {msg['error']}"
                return dict(msg.get("result", {}))
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e["method"] == method for e in self.events):
            assert time.monotonic() < deadline, f"no {method} within {timeout}s"
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return result["result"].get("value")

    def errors(self) -> list[str]:
        found = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                found.append(f"exception: {p['exceptionDetails'].get('text')} {p['exceptionDetails'].get('exception')}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                found.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return found


def open_in_chromium(chromium: str, page: Path, tmp: Path) -> tuple[list[str], Any]:
    """Load `page`; return (console/log/exception errors, per-image [complete, naturalWidth, top, height])."""
    pytest.importorskip("websocket", reason="websocket-client is needed to drive Chromium's DevTools protocol")
    user_data = tmp / "profile-cdp"
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", "--remote-debugging-port=0",
           "--window-size=1280,2000", "about:blank"]
    with open(tmp / "chromium-cdp.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        tools = DevTools(_page_socket_url(_wait_port(user_data, proc)))
        for domain in ("Runtime", "Log", "Page"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=page.as_uri())
        tools.wait_event("Page.loadEventFired")
        tools.evaluate("new Promise(r => setTimeout(r, 300))")  # let late console messages arrive
        images = tools.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, "
                                "i.getBoundingClientRect().top, i.getBoundingClientRect().height])")
        tools.ws.close()
        return tools.errors(), images
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def screenshot(chromium: str, page: Path, tmp: Path) -> np.ndarray:
    import matplotlib.image

    shot = tmp / "shot.png"
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile-shot'}", f"--screenshot={shot}",
           "--window-size=1280,2000", "--hide-scrollbars", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert shot.exists(), f"no screenshot (rc={proc.returncode}): {proc.stderr[-2000:]}"
    return np.asarray(matplotlib.image.imread(shot))[..., :3]


# ---------- tests ----------


def test_html_is_self_contained_with_three_figures(rendered: Path) -> None:
    text = rendered.read_text(encoding="utf-8")
    images = PNG_IMG.findall(text)
    assert len(images) == 3  # stages, latency, Pareto front
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for data in images)
    assert not re.search(r"<(script|link|iframe)\b", text, re.I)
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", text, re.I)
    for expected in ("Per-layer sensitivity", "Pareto front", "ai-edge-litert 2.3.0", "keras", "3.15.1",
                     "accuracy drop 0.024 &gt; max 0.01", "jetson-orin", "FAIL", "PASS"):
        assert expected in text


def test_hostile_strings_are_escaped(rendered: Path) -> None:
    text = rendered.read_text(encoding="utf-8")
    assert HOSTILE_NOTE not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "conv_2&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in text


def test_partial_reports_render(tmp_path: Path) -> None:
    """A report with only some of its parts (a failed target, no stages, no latency) still renders."""
    cases: list[dict[str, Any]] = [
        {"schema": 1},
        {"schema": 1, "targets": {"tensorrt": {"error": "conversion failed: <op> unsupported", "device": "orin"}}},
        {"schema": 1, "targets": {"b": {"latency_ms": None, "sensitivity": [{"layer": "x", "sqnr_db": 3.0}]}},
         "search": {"trials": [{"number": 1}]}, "versions": {}, "budget": {}},
        {"schema": 1, "targets": {"t": {"latency_ms": {"median": 1.0}, "latency_samples_ms": [1.0, float("nan")]}},
         "stages": [{"name": "cost $5 and $6", "accuracy": 0.5}]},
    ]
    for i, report in enumerate(cases):
        out = render_html(report, tmp_path / str(i))
        assert out == tmp_path / str(i) / "report.html" and out.read_text(encoding="utf-8").startswith("<!DOCTYPE")
    assert "conversion failed: &lt;op&gt; unsupported" in (tmp_path / "1" / "report.html").read_text()
    assert len(PNG_IMG.findall((tmp_path / "3" / "report.html").read_text())) == 2


@pytest.mark.parametrize(("report", "names"), [
    ({}, "not a schema 1 edgepipe report"),
    ({"schema": 1, "stages": "oops"}, "stages"),
    ({"schema": 1, "targets": {"a": None}}, "targets.a"),
    ({"schema": 1, "targets": {"t": {"latency_samples_ms": [1.0, "x"]}}}, "targets.t.latency_samples_ms.1"),
    ({"schema": 1, "versions": []}, "versions"),
])
def test_malformed_reports_are_one_line(tmp_path: Path, report: dict[str, Any], names: str) -> None:
    """The typed report names the first part that is not what schema 1 says; nothing is written."""
    with pytest.raises(UsageError) as info:
        render_html(report, tmp_path)
    assert names in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "report.html").exists()


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]", b"\xff\xfe"])
def test_bad_report_json_is_a_usage_error(tmp_path: Path, content: str | bytes | None) -> None:
    if isinstance(content, bytes):
        (tmp_path / "report.json").write_bytes(content)
    elif content is not None:
        (tmp_path / "report.json").write_text(content)
    with pytest.raises(UsageError) as info:
        render_run(tmp_path)
    assert "report.json" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "report.html").exists()


def test_devtools_harness_catches_errors(chromium: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><img src='missing.png'><script>console.error('boom');"
                   "throw new Error('kaboom')</script></body></html>")
    errors, _ = open_in_chromium(chromium, bad, tmp_path)
    joined = "\n".join(errors)
    assert "boom" in joined and "kaboom" in joined and "missing.png" in joined


def test_chromium_loads_report_without_errors(chromium: str, rendered: Path, tmp_path: Path) -> None:
    errors, images = open_in_chromium(chromium, rendered, tmp_path)
    assert errors == []
    assert len(images) == 3
    assert all(complete and width > 300 for complete, width, _, _ in images), images


def test_screenshot_shows_the_figures(chromium: str, rendered: Path, tmp_path: Path) -> None:
    pixels = screenshot(chromium, rendered, tmp_path)
    assert pixels.shape[:2] == (2000, 1280)
    colors = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    non_white = float((pixels < 0.95).any(axis=-1).mean())
    assert colors > 200 and non_white > 0.03, (colors, non_white)

    def near(rgb: str) -> int:  # pixels of a figure-only colour: stage bars, latency boxes
        target = np.array([int(rgb[i:i + 2], 16) / 255 for i in (0, 2, 4)])
        return int((np.abs(pixels - target).max(axis=-1) < 0.04).sum())

    assert near("4878d0") > 5_000, "stage bars not drawn"
    assert near("a1c9f4") > 1_000, "latency boxes not drawn"
