"""`edgepipe bench` and `edgepipe verify` over several devices (issue 27): this host and a real sshd on 127.0.0.1,
through the CLI; a board that cannot be reached and one that drops mid-run; the store in PostgreSQL, and the
history page opened in Debian's headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.benchrun.store import Store
from pipeline.cli import main

ARTIFACTS = ("tflite/model_int8.tflite", "openvino/model_int8.xml", "tensorrt/model_qdq.onnx")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["--quiet", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_one_run_over_the_host_and_a_loopback_board(built_run: Path, ssh_config: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Three artifacts on two devices, profiled: one table of six cells, each with its CPU and runtime version,
    threads, cold start, the warm latency distribution, the runner's peak RSS and where it was measured; each
    profiled op with its type and the precision it ran in; the run stored in one piece."""
    page = tmp_path / "run.html"
    rc, out, err = _run(["bench", *(str(built_run / a) for a in ARTIFACTS), "--device", "host", "--device", ssh_config,
                         "--remote-python", sys.executable, "--eval", str(built_run / "data" / "eval.npz"),
                         "--iterations", "30", "--profile", "--json", "--html", str(page)], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    cells = doc["cells"]
    assert [(c["artifact"], c["device"]) for c in cells] == [(Path(a).name, d) for d in ("host", ssh_config)
                                                            for a in ARTIFACTS]
    for c in cells:
        assert c["status"] == "ok" and c["threads"] == 1 and c["runtime_version"] and c["cpu"]["arch"] == "x86_64"
        assert c["cold_start"]["load_ms"] > 0 and c["cold_start"]["first_inference_ms"] > 0
        lat = c["latency_ms"]
        assert lat["iterations"] == 30 and lat["median_ci"][0] <= lat["median"] <= lat["p90"] <= lat["p99"]
        assert c["peak_memory_kb"] > 10_000 and 0.9 < c["accuracy"] <= 1.0
        assert c["measured_on"] == ("host" if c["device"] == "host" else "device")
        prof = c["profile"]
        assert prof["ops"] and all(o["type"] and o["precision"] for o in prof["ops"])
        assert {g["type"] for g in prof["by_type"]} == {o["type"] for o in prof["ops"]}
    by_kind = {c["artifact"]: c["profile"] for c in cells if c["device"] == "host"}
    lite = by_kind["model_int8.tflite"]  # LiteRT's C API profiler; the tiny model's ops may all be under 1 µs
    assert lite["available"] and lite["runtime_ms_source"] == "Invoke events" and lite["runtime_ms"] > 0
    assert "int8" in {o["precision"] for o in lite["ops"]} and isinstance(lite["adds_up"], bool)
    for name in ("model_int8.xml", "model_qdq.onnx"):
        prof = by_kind[name]
        assert prof["available"] and prof["coverage"] > 0 and "int8" in {o["precision"] for o in prof["ops"]}
        assert abs(sum(o["share"] for o in prof["ops"]) - 1.0) < 1e-6
        assert prof["runtime_ms"] > 0 and prof["coverage_runtime"] > 0 and isinstance(prof["adds_up"], bool)
    assert "loopback" in cells[3]["where"]
    rows = Store.open(None).rows()
    assert [r["run_id"] for r in rows[-6:]] == [doc["run_id"]] * 6
    text = page.read_text()
    assert "<script" not in text and "Where the time goes" in text and "performance counters" in text


def test_verify_a_run_on_two_devices_leaves_its_report(built_run: Path, ssh_config: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(built_run, run)
    before = (run / "report.json").read_bytes()
    rc, out, err = _run(["verify", str(run), "--device", "host", "--device", ssh_config, "--remote-python",
                         sys.executable, "--json", "--no-store"], capsys)
    assert rc == 0, err
    cells = json.loads(out)["cells"]
    report = json.loads(before)
    built = {Path(t["artifact"]).name: t for t in report["targets"].values()}
    # each device measures what the build measured (the same runtimes): the same drop, give or take two of the
    # 360 test samples (the build may evaluate in batches where they agreed with batch 1 on 64 samples)
    assert len(cells) == 6 and all(c["passed"] for c in cells)
    for c in cells:
        assert c["accuracy_drop"] == pytest.approx(built[c["artifact"]]["accuracy_drop"], abs=2 / 360 + 1e-9), c
    assert (run / "report.json").read_bytes() == before and (run / "bench.html").is_file()


def test_an_unreachable_board_and_one_that_drops_mid_run(built_run: Path, ssh_config: str, closed_port: int,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The other devices still run; the table marks the failed cells; one line and exit 2; the store holds the
    run whole: measured cells with their numbers, failed ones with their error and no number."""
    wrapper = tmp_path / "python-dropping-on-onnx"  # kills its sshd session process while the .onnx runs
    wrapper.write_text(f"""#!/bin/sh
case "$2" in *.onnx) ;; *) exec '{sys.executable}' "$@";; esac
'{sys.executable}' "$@" &
sleep 1
p=$$
while [ "$p" -gt 1 ]; do
  if [ "$(cat /proc/$p/comm)" = sshd ]; then kill -9 "$p"; break; fi
  p=$(awk '{{print $4}}' /proc/$p/stat)
done
wait
""")
    wrapper.chmod(0o755)
    dead = f"ssh://root@127.0.0.1:{closed_port}"
    artifacts = [str(built_run / a) for a in (ARTIFACTS[0], ARTIFACTS[2])]
    rc, out, err = _run(["bench", *artifacts, "--device", "host", "--device", dead, "--device", ssh_config,
                         "--remote-python", str(wrapper), "--iterations", "20", "--json"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "connection refused" in err, err
    doc = json.loads(out)
    status = {(c["device"], c["artifact"]): (c["status"], c["error"]) for c in doc["cells"]}
    assert status[("host", "model_int8.tflite")][0] == status[("host", "model_qdq.onnx")][0] == "ok"
    assert status[(ssh_config, "model_int8.tflite")][0] == "ok"
    assert "dropped during the run, also on retry" in status[(ssh_config, "model_qdq.onnx")][1]
    assert "connection refused" in status[(dead, "model_int8.tflite")][1]
    assert "not tried" in status[(dead, "model_qdq.onnx")][1]
    rows = [r for r in Store.open(None).rows() if r["run_id"] == doc["run_id"]]
    assert len(rows) == 6
    assert all((r["median_ms"] is None) == (r["status"] == "failed") for r in rows)


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        pytest.skip("Debian's chromium is not installed (scripts/install-test-deps.sh installs it)")
    return found


def test_store_in_postgresql_and_history_plot_in_chromium(built_run: Path, postgres: str, chromium: str,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    artifact = str(built_run / ARTIFACTS[0])
    for _ in range(2):
        rc, _, err = _run(["bench", artifact, str(built_run / ARTIFACTS[1]), "--store", postgres,
                           "--iterations", "20"], capsys)
        assert rc == 0, err
    page = tmp_path / "history.html"
    rc, out, err = _run(["bench", "history", "--store", postgres, "--html", str(page), "--json"], capsys)
    assert rc == 0, err
    found = json.loads(out)["measurements"]
    assert len(found) == 4 and {m["runtime"] for m in found} == {"ai-edge-litert", "openvino"}
    assert len({m["run_id"] for m in found}) == 2
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--screenshot={shot}",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000", "--hide-scrollbars",
                    page.as_uri()], capture_output=True, timeout=180)
    import matplotlib.image

    pixels = np.asarray(matplotlib.image.imread(shot))[..., :3]

    def near(rgb: str) -> int:  # the plot's two series colours
        target = np.array([int(rgb[i:i + 2], 16) / 255 for i in (0, 2, 4)])
        return int((np.abs(pixels - target).max(axis=-1) < 0.06).sum())

    assert near("1f77b4") > 30 and near("d62728") > 30, (near("1f77b4"), near("d62728"))
