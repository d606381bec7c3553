"""`edgepipe device emulate|list|remove`: bad input is one line and exit 2, before anything is built."""

from __future__ import annotations

import pytest

from pipeline.cli import main


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("args", "expected"), [
    (["--release", "buster"], "unknown release 'buster': known releases are bookworm, bullseye"),
    (["--runtime", "onnxruntime"], "unsupported runtime 'onnxruntime'"),
    (["--cpu", "Cortex A76"], "bad CPU model"),
])
def test_bad_spec_is_one_line(args: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "emulate", "arm", *args]) == 2
    assert expected in _one_line_error(capsys)


def test_bad_names_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "emulate", "rpi5"]) == 2
    assert "a device profile's name" in _one_line_error(capsys)
    assert main(["device", "emulate", "../up"]) == 2
    assert "bad device name" in _one_line_error(capsys)
    assert main(["device", "remove", "nothing-here"]) == 2
    assert "no emulated device 'nothing-here'" in _one_line_error(capsys)
    assert main(["device", "list"]) == 0


@pytest.mark.services
def test_a_runtime_without_a_wheel_for_the_release_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """tflite-runtime 2.14.0 needs glibc 2.34: there is no wheel for bullseye's 2.31 (asks PyPI)."""
    assert main(["--quiet", "device", "emulate", "arm", "--release", "bullseye", "--runtime",
                 "tflite-runtime==2.14.0"]) == 2
    err = _one_line_error(capsys)
    assert "no aarch64 wheel of 'tflite-runtime==2.14.0' for Debian bullseye (Python 3.9, glibc 2.31)" in err
    assert main(["device", "list"]) == 0 and "arm\t" not in capsys.readouterr().out
