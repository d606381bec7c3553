"""The device's root file system: Debian arm64 unpacked with mmdebstrap's `extract` variant (no emulation
needed to build it: about 76 MB in a few seconds), one per release, shared by every device of that release."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import UsageError
from .spec import Release

PACKAGES = ("python3-minimal", "python3", "libstdc++6", "libgcc-s1")
DONE = ".edgepipe-complete"


def mirror() -> str:
    return os.environ.get("EDGEPIPE_DEBIAN_MIRROR", "").strip() or "http://deb.debian.org/debian"


def rootfs_path(release: Release, cache: Path) -> Path:
    return cache / "rootfs" / f"{release.name}-arm64"


def ensure_rootfs(release: Release, cache: Path) -> Path:
    """The unpacked root for `release`, made now if it is not in the cache yet (atomically: a killed
    build leaves no root that a later one would trust)."""
    dest = rootfs_path(release, cache)
    if (dest / DONE).is_file():
        return dest
    if not shutil.which("mmdebstrap"):
        raise UsageError("mmdebstrap is not installed (apt-get install mmdebstrap, or run scripts/install-test-deps.sh)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.part{os.getpid()}")
    shutil.rmtree(part, ignore_errors=True)
    # the main suite only: bullseye's security suite no longer serves
    source = f"deb {mirror()} {release.name} main"
    cmd = ["mmdebstrap", "--quiet", "--variant=extract", "--architectures=arm64",
           f"--include={','.join(PACKAGES)}", release.name, str(part), source]
    done = subprocess.run(cmd, capture_output=True, text=True)
    python = part / "usr" / "bin" / "python3"
    if done.returncode != 0 or not (python.exists() or python.is_symlink()):
        shutil.rmtree(part, ignore_errors=True)
        last = (done.stderr.strip().splitlines() or ["no python3 in the root"])[-1]
        raise UsageError(f"could not build the Debian {release.name} arm64 root with mmdebstrap: {last}")
    (part / DONE).write_text(release.name + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(part, dest)
    return dest
