"""QEMU user mode >= 10 for aarch64: from PATH, or Debian trixie's qemu-user (a static binary that runs on
Debian 12) fetched with apt from the Debian registry into the cache. Older QEMU (Debian 12's 7.2) crashes
LiteRT 2.x and gives wrong int8 results with SVE/SME CPU models, so it is never used."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

MIN_VERSION = (10, 0)
TRIXIE = "deb http://deb.debian.org/debian trixie main"


@dataclass(frozen=True)
class Qemu:
    path: Path
    version: str

    def cpu_models(self) -> list[str]:
        out = subprocess.run([str(self.path), "-cpu", "help"], capture_output=True, text=True, timeout=30).stdout
        return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


def version_of(path: Path) -> str | None:
    """'10.0.13' from `qemu-aarch64 --version`; None when it does not run."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    return None if match is None else ".".join(g for g in match.groups() if g is not None)


def _new_enough(version: str | None) -> bool:
    return version is not None and tuple(int(p) for p in version.split(".")[:2]) >= MIN_VERSION


def candidates(cache: Path) -> list[Path]:
    """Where QEMU may be: $EDGEPIPE_QEMU_AARCH64, PATH, then the copy fetched into the cache."""
    env = os.environ.get("EDGEPIPE_QEMU_AARCH64", "").strip()
    found = [Path(env)] if env else []
    found += [Path(p) for p in (shutil.which("qemu-aarch64"), shutil.which("qemu-aarch64-static")) if p]
    return [*found, cache / "qemu" / "qemu-aarch64"]


def find_qemu(cache: Path, fetch: bool = True) -> Qemu:
    """The first QEMU >= 10 found; else trixie's, fetched into `cache`; else a UsageError."""
    seen = []
    for path in candidates(cache):
        version = version_of(path) if path.is_file() else None
        if _new_enough(version):
            return Qemu(path, str(version))
        if version is not None:
            seen.append(f"{path} is {version}")
    if fetch:
        fetch_trixie(cache / "qemu")
        return find_qemu(cache, fetch=False)
    raise UsageError(f"no QEMU >= {MIN_VERSION[0]} for aarch64 ({'; '.join(seen) or 'none found'}): run "
                     "scripts/install-test-deps.sh or set EDGEPIPE_QEMU_AARCH64")


def fetch_trixie(dest: Path) -> None:
    """apt-get download Debian trixie's qemu-user with a private apt state (the system's is untouched), then
    keep its static qemu-aarch64."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise UsageError("no QEMU >= 10 for aarch64 and no apt-get to fetch Debian trixie's qemu-user: "
                         "install qemu-user >= 10 or set EDGEPIPE_QEMU_AARCH64")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "lists" / "partial").mkdir(parents=True)
        (work / "sources.list").write_text(TRIXIE + "\n")
        opts = [f"-oDir::Etc::SourceList={work / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
                f"-oDir::State::Lists={work / 'lists'}", f"-oDir::Cache={work / 'cache'}",
                "-oAPT::Sandbox::User=root", "-qq"]
        for step in (["update"], ["download", "qemu-user"]):
            done = subprocess.run(["apt-get", *opts, *step], cwd=work, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["failed"])[-1]
                raise UsageError(f"no QEMU >= 10 for aarch64, and fetching Debian trixie's qemu-user failed: {last}")
        deb = next(work.glob("qemu-user_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
        dest.mkdir(parents=True, exist_ok=True)
        part = dest / f"qemu-aarch64.{os.getpid()}"
        shutil.copy2(work / "x" / "usr" / "bin" / "qemu-aarch64", part)
        os.replace(part, dest / "qemu-aarch64")
