"""One `edgepipe bench` over the run's three artifacts on three devices (issue 27): this host, the loopback SSH
board and an emulated aarch64 device; one table, the emulated cells marked as emulated, never as a board's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline.cli import main

ARTIFACTS = ("tflite/model_int8.tflite", "openvino/model_int8.xml", "tensorrt/model_qdq.onnx")


def test_three_artifacts_on_host_loopback_and_emulated(built_run: Path, arm_devices: dict, ssh_config: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", *(str(built_run / a) for a in ARTIFACTS), "--device", "host", "--device", ssh_config,
               "--device", "arm-bookworm", "--remote-python", sys.executable, "--iterations", "30", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    cells = json.loads(out)["cells"]
    assert [c["device"] for c in cells] == ["host"] * 3 + [ssh_config] * 3 + ["arm-bookworm"]  # it runs .tflite only
    for c in cells:
        assert c["status"] == "ok" and c["cold_start"]["load_ms"] > 0 and c["peak_memory_kb"] > 0
        assert c["latency_ms"]["median"] > 0 and c["runtime_version"]
    arm = cells[-1]
    assert arm["measured_on"] == "emulated" and arm["latency_ms"]["emulated"] is True
    assert arm["cpu"]["arch"] == "aarch64" and arm["emulated"]["cpu_model"] == "cortex-a76"
    assert any("not a board's" in n for n in arm["notes"]) and any("QEMU's own" in n for n in arm["notes"])
    assert {c["measured_on"] for c in cells[:6]} == {"host", "device"}
    table = err[: err.index("ops by type")] if "ops by type" in err else err
    assert table.count("EMULATED") == 1 and "cortex-a76" in table
