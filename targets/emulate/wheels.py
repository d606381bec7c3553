"""The device's Python packages: aarch64 wheels of numpy and the runtime, for the release's Python and glibc,
installed into a folder with `pip install --target --platform ... --only-binary=:all:` (nothing runs under
emulation to install them). The device's python sees only that folder: nothing edgepipe has."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import UsageError
from .spec import EmulatedSpec

DONE = ".edgepipe-complete"


def requirements(spec: EmulatedSpec) -> list[str]:
    """numpy and the runtime; tflite-runtime wheels were built against numpy 1.x."""
    numpy = "numpy<2" if spec.runtime_name == "tflite-runtime" else "numpy"
    return [numpy, spec.runtime.strip()]


def wheels_path(spec: EmulatedSpec, cache: Path) -> Path:
    r = spec.debian
    key = hashlib.sha256(repr((r.python, r.glibc_minor, requirements(spec))).encode()).hexdigest()[:16]
    return cache / "wheels" / f"py{r.python}-{key}"


def ensure_wheels(spec: EmulatedSpec, cache: Path) -> Path:
    """The folder for the device's PYTHONPATH, installed now if it is not in the cache yet."""
    dest = wheels_path(spec, cache)
    if (dest / DONE).is_file():
        return dest
    part = dest.with_name(f"{dest.name}.part{os.getpid()}")
    shutil.rmtree(part, ignore_errors=True)
    r = spec.debian
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
           "--target", str(part), "--python-version", r.python, "--only-binary=:all:", "--implementation", "cp"]
    for tag in r.platforms():
        cmd += ["--platform", tag]
    done = subprocess.run([*cmd, *requirements(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(part, ignore_errors=True)
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")] or done.stderr.splitlines()
        raise UsageError(f"no aarch64 wheel of {spec.runtime!r} for Debian {r.name} (Python {r.python}, "
                         f"glibc 2.{r.glibc_minor}): {(errors or ['pip failed'])[0].removeprefix('ERROR: ')}")
    (part / DONE).write_text(" ".join(requirements(spec)) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(part, dest)
    return dest


def installed_version(folder: Path, dist: str) -> str:
    """The version of `dist` installed in `folder`, from its .dist-info directory name."""
    wanted = re.sub(r"[-_.]+", "_", dist).lower()
    for info in folder.glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").rpartition("-")
        if re.sub(r"[-_.]+", "_", name).lower() == wanted:
            return version
    return "unknown"
