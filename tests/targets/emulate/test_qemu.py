"""QEMU older than 10 is never used for an emulated device: Debian 12's qemu-user-static 7.2 (installed by
scripts/install-test-deps.sh for another test) is seen, named and refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from targets.emulate.qemu import find_qemu, version_of
from targets.errors import UsageError


def test_debian_12_qemu_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = shutil.which("qemu-aarch64-static")
    assert old is not None, "run scripts/install-test-deps.sh (qemu-user-static)"
    version = version_of(Path(old))
    assert version is not None
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing else on PATH, nothing fetched into the cache
    monkeypatch.setenv("EDGEPIPE_QEMU_AARCH64", old)
    if int(version.split(".")[0]) >= 10:
        assert find_qemu(tmp_path, fetch=False).version == version
        return
    with pytest.raises(UsageError, match=rf"no QEMU >= 10 for aarch64 \({old} is {version}\)"):
        find_qemu(tmp_path, fetch=False)
