from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import CalibrationMethod, PruneMethod, load_config
from pipeline.errors import ConfigError

FULL = """
[model]
path = "teacher.keras"
[data]
path = "data.npz"
scale = 255.0
mean = [0.5]
std = [0.5]
[distill]
student = "width:0.5"
temperature = 4.0
alpha = 0.7
epochs = 10
[prune]
method = "channel"
sparsity = 0.5
epochs = 5
[decompose]
rank_ratio = 0.5
[quantize]
calibration_samples = 300
calibration = "percentile"
[budget]
max_accuracy_drop = 0.01
max_latency_ms = 10.0
max_size_kb = 1024
[targets.tflite]
[targets.openvino]
[devices.rpi5]
host = "ssh://pi@rpi5.local"
python = "/home/pi/venv/bin/python"
target = "tflite"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edge.toml"
    p.write_text(text)
    return p


def test_contract_config_parses(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, FULL))
    assert cfg.name == "edge" and cfg.prune is not None and cfg.prune.method is PruneMethod.CHANNEL
    assert cfg.quantize.calibration is CalibrationMethod.PERCENTILE
    assert cfg.targets.enabled() == ["tflite", "openvino"]
    assert cfg.devices["rpi5"].target == "tflite"
    assert cfg.resolve("data.npz") == tmp_path / "data.npz"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (FULL.replace("sparsity = 0.5", "sparsty = 0.5"), "prune.sparsty: unknown key"),
        (FULL.replace("sparsity = 0.5", "sparsity = 1.5"), "prune.sparsity"),
        (FULL.replace("calibration_samples = 300", "calibration_samples = 0"), "quantize.calibration_samples"),
        (FULL.replace("max_latency_ms = 10.0", "max_latency_ms = -1.0"), "budget.max_latency_ms"),
        (FULL.replace('calibration = "percentile"', 'calibration = "magic"'), "quantize.calibration"),
        (FULL.replace('student = "width:0.5"', 'student = "width:abc"'), "distill.student"),
        (FULL + "\n[targets.coreml]\n", "targets.coreml: unknown key"),
        (FULL.replace('[model]\npath = "teacher.keras"', "[model]"), "set exactly one of 'path' or 'example'"),
        ("[model\npath=1", "not valid TOML"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and expected in msg and "\n" not in msg


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
