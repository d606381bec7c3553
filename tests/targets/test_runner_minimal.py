"""The device runner needs the standard library, numpy and the artifact's runtime, nothing else: a static
check of every import in the files the SSH transport copies (the emulated devices prove it at run time)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

TARGETS = Path(__file__).resolve().parents[2] / "targets"
RUNTIMES = {"numpy", "ai_edge_litert", "tflite_runtime", "openvino", "onnxruntime", "tensorrt"}
# copied next to runner.py
SIBLINGS = {"runner_sessions", "runner_metrics", "runner_arrays", "runner_settings", "trt_runner", "runner_profile",
            "runner_litert_prof"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):  # `from . import x` / `from .x import y`: a sibling module
            found |= {"." + (node.module or a.name) for a in node.names}
    return found


DEVICE_FILES = ["runner.py", "runner_sessions.py", "runner_metrics.py", "runner_arrays.py", "runner_settings.py",
                "trt_runner.py", "runner_profile.py", "runner_litert_prof.py"]


@pytest.mark.parametrize("name", DEVICE_FILES)
def test_device_files_import_only_stdlib_numpy_and_runtimes(name: str) -> None:
    allowed = set(sys.stdlib_module_names) | RUNTIMES | SIBLINGS | {"." + name for name in SIBLINGS}
    extra = sorted(_imports(TARGETS / name) - allowed)
    assert not extra, f"{name} imports {extra}: the device has only the standard library, numpy and the runtime"


@pytest.mark.parametrize("name", DEVICE_FILES)
def test_device_files_parse_as_python_3_8(name: str) -> None:
    """Devices run old Pythons (Raspberry Pi OS 11: 3.9; Jetson images: 3.8): no newer syntax."""
    source = (TARGETS / name).read_text()
    ast.parse(source, feature_version=(3, 8))
    assert "from __future__ import annotations" in source  # annotations (X | None, list[int]) stay strings
