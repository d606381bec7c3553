"""Injected faults: a build interrupted (SIGINT, SIGTERM) or killed (SIGKILL) mid-phase, and cache entries
damaged or tampered with on disk. No fault may leave a corrupt cache entry that is trusted, a run directory
at OUT that is half written, or stop the next build from completing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cache import MANIFEST, Cache, _files, file_digest
from pipeline.cli import main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras
    from keras import layers

    path = tmp_path_factory.mktemp("interrupt-model") / "tiny.keras"
    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, layers.Dense(10, activation="softmax")(x)).save(path)
    return path


def _config(folder: Path, model: Path, npz: Path, extra: str = "") -> Path:
    path = folder / "tiny.toml"
    path.write_text(f'[model]\npath = "{model}"\n[data]\npath = "{npz}"\nscale = 16.0\n'
                    f"[quantize]\ncalibration_samples = 20\n{extra}\n"
                    "[targets.tflite]\niterations = 3\nwarmup = 1\n")
    return path


class Build:
    """`edgepipe build` in a child process (the one a signal is sent to) with its own cache and temp folder."""

    def __init__(self, tmp: Path, cfg: Path) -> None:
        self.tmp, self.cfg = tmp, cfg
        self.out = tmp / "runs" / "run"
        self.cache = tmp / "cache"
        self.tmpdir = tmp / "tmpdir"
        self.tmpdir.mkdir(exist_ok=True)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "EDGEPIPE_CACHE_DIR": str(self.cache), "TMPDIR": str(self.tmpdir),
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "--quiet", "build", str(self.cfg), "--out", str(self.out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=self.tmp)
        return self.proc

    def partials(self) -> list[Path]:
        parent = self.out.parent
        return sorted(parent.glob(f".{self.out.name}.*")) if parent.is_dir() else []

    def wait_for_log(self, marker: str, timeout: float = 180) -> None:
        """Until the running build's build.log (in its .partial- folder) has `marker`."""
        assert self.proc is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                pytest.fail(f"build ended (exit {self.proc.returncode}) before '{marker}': {err}")
            for log in self.out.parent.glob(f".{self.out.name}.partial-*/build.log"):
                try:
                    if marker in log.read_text(errors="replace"):
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        pytest.fail(f"no '{marker}' in build.log after {timeout} s")

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        assert self.proc is not None
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def assert_cache_sound(root: Path) -> list[Path]:
    """Every entry in the cache is intact (manifest matches the files) and no temp folder is mistaken
    for an entry. Returns the entries."""
    if not root.exists():
        return []
    entries = [p for shard in root.iterdir() if shard.is_dir() for p in shard.iterdir()
               if p.is_dir() and not p.name.startswith(".")]
    for entry in entries:
        assert Cache._intact(entry), f"corrupt cache entry {entry}"
    return entries


def _assert_next_build_completes(b: Build, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> dict:
    """The next build, run in this process (what it checks is the cache and OUT the interrupted one left, not
    process behaviour; its TensorFlow import and zygote are this process's): the same config, cache, TMPDIR
    and working folder as the interrupted build's child had."""
    monkeypatch.setenv("EDGEPIPE_CACHE_DIR", str(b.cache))
    monkeypatch.setenv("TMPDIR", str(b.tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)  # found again from TMPDIR, as in a fresh process
    monkeypatch.chdir(b.tmp)
    capsys.readouterr()
    rc = main(["--quiet", "build", str(b.cfg), "--out", str(b.out)])
    assert rc in (0, 1), capsys.readouterr().err
    report = json.loads((b.out / "report.json").read_text())
    assert "error" not in report["targets"]["tflite"], report["targets"]["tflite"]
    assert assert_cache_sound(b.cache), "the completed build cached nothing: the soundness check saw no entry"
    return report


@dataclass(frozen=True)
class SignalFault:
    """A signal sent to a running build once its build.log shows `marker`."""

    sig: signal.Signals
    extra: str  # the config's compression section that makes the phase long enough to land in
    marker: str
    exit: tuple[int, str] | None  # (exit code, stderr) of a handled signal; None for SIGKILL
    redone: tuple[str, str]  # ("stages", name) or ("targets", name): what the next build must not take from the cache


SIGNAL_FAULTS = {
    "SIGINT during training": SignalFault(
        signal.SIGINT, '[distill]\nstudent = "width:0.5"\nepochs = 8\npatience = 8\n', " epoch 1: ",
        (130, "edgepipe: interrupted\n"), ("stages", "distill")),
    "SIGTERM during a stage": SignalFault(
        signal.SIGTERM, "[prune]\nsparsity = 0.5\nepochs = 8\nbatch_size = 16\n", " epoch 1: ",
        (128 + signal.SIGTERM, "edgepipe: terminated\n"), ("stages", "prune")),
    "SIGKILL during a conversion": SignalFault(signal.SIGKILL, "", "start: tflite: converting", None,
                                               ("targets", "tflite")),
}


@pytest.mark.parametrize("fault", SIGNAL_FAULTS.values(), ids=list(SIGNAL_FAULTS))
def test_a_signal_mid_build_leaves_nothing_half_made(tmp_path: Path, tiny_model: Path, digits_npz: Path,
                                                     fault: SignalFault, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """SIGINT and SIGTERM: their exit code and one line, no OUT and no .partial- folder. SIGKILL (in the
    converter child's lifetime): no OUT, only the hidden work folder left, and no orphaned converter. Then
    the cache is sound and the next build (in process) completes, redoing the interrupted phase."""
    b = Build(tmp_path, _config(tmp_path, tiny_model, digits_npz, fault.extra))
    b.start()
    b.wait_for_log(fault.marker)
    assert b.proc is not None
    workers: list[int] = []
    if fault.sig == signal.SIGKILL:
        end = time.monotonic() + 30
        while not (workers := _children(b.proc.pid)) and time.monotonic() < end:
            time.sleep(0.05)
        assert workers, "the converter child never started"
        time.sleep(1.0)  # inside the conversion
    os.kill(b.proc.pid, fault.sig)
    if fault.exit is None:
        b.proc.wait(timeout=30)
        end = time.monotonic() + 20
        while any(_alive(w) for w in workers) and time.monotonic() < end:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "the converter outlived the killed build"
        # SIGKILL cannot be cleaned up after: what is left is the hidden work folder, never OUT itself
        assert all(p.name.startswith(f".{b.out.name}.partial-") for p in b.partials())
    else:
        rc, err = b.finish()
        assert (rc, err) == fault.exit
        assert b.partials() == []
    assert not b.out.exists(), "no run directory at OUT after a signal"
    assert_cache_sound(b.cache)
    report = _assert_next_build_completes(b, monkeypatch, capsys)
    kind, name = fault.redone
    entry = report[kind][0] if kind == "stages" else report[kind][name]
    assert kind == "targets" or entry["name"] == name
    assert entry["cached"] is False, f"{name} was taken from the cache after the interrupted build"


# ---- damaged cache entries (in process: no kill needed) -----------------------------------------------------

def _export_entry(cache: Path) -> Path:
    entries = [e for e in assert_cache_sound(cache) if (e / "export.json").is_file()]
    assert len(entries) == 1, entries
    return entries[0]


def _build_in_process(cfg: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    rc = main(["--quiet", "build", str(cfg), "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert rc in (0, 1), captured.err
    return json.loads(captured.out)


def _flip_a_byte(entry: Path) -> None:
    """A flipped byte in the cached artifact: the hash check drops the entry."""
    artifact = entry / "model_int8.tflite"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))


def _name_a_file_outside(entry: Path) -> None:
    """A consistent entry (manifest rewritten) whose export.json names a file outside the target folder."""
    meta = json.loads((entry / "export.json").read_text())
    meta["files"].append("../../../escaped.txt")
    (entry / "export.json").write_text(json.dumps(meta))
    _rewrite_manifest(entry)
    assert Cache._intact(entry)


# what a damaged disk or a hand edit can do to a finished entry; each is followed by a build in process
ENTRY_FAULTS: dict[str, Callable[[Path], None]] = {
    "a flipped byte in a cached artifact": _flip_a_byte,
    "a cached export that names a file outside its folder": _name_a_file_outside,
}


def test_damaged_and_tampered_cache_entries_are_rebuilt(tmp_path: Path, tiny_model: Path, digits_npz: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Each fault in turn on the tflite export's entry: the next build exports again (not cached, no error),
    writes nothing outside the run, and the entry is stored again as a fresh export would write it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGEPIPE_CACHE_DIR", str(cache))
    cfg = _config(tmp_path, tiny_model, digits_npz)
    out = tmp_path / "runs" / "run"
    assert _build_in_process(cfg, out, capsys)["targets"]["tflite"]["cached"] is False
    entry = _export_entry(cache)
    fresh = (entry / "export.json").read_text()
    for name, damage in ENTRY_FAULTS.items():
        damage(entry)
        t = _build_in_process(cfg, out, capsys)["targets"]["tflite"]
        assert t["cached"] is False and "error" not in t, (name, t)
        assert _export_entry(cache) == entry and Cache._intact(entry), name
        assert (entry / "export.json").read_text() == fresh, f"{name}: the bad entry was not replaced"
        assert not list(tmp_path.rglob("escaped.txt")), name
        assert (out / "report.json").is_file() and [p.name for p in out.parent.iterdir()] == ["run"], name


def _rewrite_manifest(entry: Path) -> None:
    files = {str(p.relative_to(entry)): file_digest(p) for p in _files(entry)}
    (entry / MANIFEST).write_text(json.dumps({"files": files}))


KEY = "ab" * 32


def _unlisted_file(cache: Cache, src: Path) -> None:
    (cache.put(KEY, src) / "extra.bin").write_bytes(b"x")


def _no_manifest(cache: Cache, src: Path) -> None:
    (cache.put(KEY, src) / MANIFEST).unlink()


def _torn_manifest(cache: Cache, src: Path) -> None:
    (cache.put(KEY, src) / MANIFEST).write_text("{not json")


def _killed_put(cache: Cache, src: Path) -> None:
    """The temp folder a put leaves when it is killed mid-copy (two days old: stale), and no entry."""
    shard = cache.root / KEY[:2]
    shard.mkdir(parents=True)
    stale = shard / f".{KEY[:8]}-killed"
    stale.mkdir()
    (stale / "model.keras").write_bytes(b"half")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)


# what a killed put or a hand edit can leave in the cache; each must read as a miss, never a hit
READ_FAULTS: dict[str, Callable[[Cache, Path], None]] = {
    "an unlisted file": _unlisted_file,
    "a missing manifest": _no_manifest,
    "a torn manifest": _torn_manifest,
    "the temporary folder of a killed cache write": _killed_put,
}


@pytest.mark.parametrize("fault", READ_FAULTS.values(), ids=list(READ_FAULTS))
def test_cache_reads_trust_only_complete_entries(tmp_path: Path, fault: Callable[[Cache, Path], None]) -> None:
    """The fault is a miss; the next put stores an intact entry that reads back, and leaves nothing else in
    the shard (the damaged entry replaced, a stale temp folder swept)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.keras").write_bytes(b"weights" * 100)
    cache = Cache(tmp_path / "cache")
    fault(cache, src)
    assert cache.get(KEY) is None
    entry = cache.put(KEY, src)
    assert cache.get(KEY) == entry and (entry / "model.keras").read_bytes() == b"weights" * 100
    assert [p.name for p in entry.parent.iterdir()] == [KEY]


# counted from the tables the tests above run, so that the docs' number cannot drift from them
INJECTED_FAULTS = len(SIGNAL_FAULTS) + len(ENTRY_FAULTS) + len(READ_FAULTS)


def test_injected_fault_count_matches_the_docs() -> None:
    """docs/how-it-works/guarantees.md ("Interrupted builds leave nothing half-made") quotes this number."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "how-it-works" / "guarantees.md").read_text()
    assert f"**{INJECTED_FAULTS} injected faults**" in page
