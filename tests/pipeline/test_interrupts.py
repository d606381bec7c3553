"""Injected faults: a build interrupted (SIGINT, SIGTERM) or killed (SIGKILL) mid-phase, and cache entries
damaged or tampered with on disk. No fault may leave a corrupt cache entry that is trusted, a run directory
at OUT that is half written, or stop the next build from completing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
    """`edgepipe build` in a child process with its own cache and temp folder."""

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

    def run(self, timeout: float = 300) -> tuple[int, str]:
        self.start()
        return self.finish(timeout)


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


def _assert_next_build_completes(b: Build) -> dict:
    rc, err = b.run()
    assert rc in (0, 1), err
    report = json.loads((b.out / "report.json").read_text())
    assert "error" not in report["targets"]["tflite"], report["targets"]["tflite"]
    assert assert_cache_sound(b.cache), "the completed build cached nothing: the soundness check saw no entry"
    return report


def test_sigint_during_training_exits_130_and_leaves_nothing(tmp_path: Path, tiny_model: Path,
                                                             digits_npz: Path) -> None:
    cfg = _config(tmp_path, tiny_model, digits_npz,
                  '[distill]\nstudent = "width:0.5"\nepochs = 8\npatience = 8\n')
    b = Build(tmp_path, cfg)
    b.start()
    b.wait_for_log(" epoch 1: ")  # the distill stage is training (8 epochs)
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGINT)
    rc, err = b.finish()
    assert rc == 130 and err == "edgepipe: interrupted\n", (rc, err)
    assert not b.out.exists() and b.partials() == []
    assert_cache_sound(b.cache)
    report = _assert_next_build_completes(b)
    assert report["stages"][0]["name"] == "distill" and report["stages"][0]["cached"] is False


def test_sigkill_during_conversion_leaves_no_run_and_no_orphan(tmp_path: Path, tiny_model: Path,
                                                               digits_npz: Path) -> None:
    b = Build(tmp_path, _config(tmp_path, tiny_model, digits_npz))
    b.start()
    b.wait_for_log("start: tflite: converting")
    assert b.proc is not None
    end = time.monotonic() + 30
    while not (workers := _children(b.proc.pid)) and time.monotonic() < end:
        time.sleep(0.05)
    assert workers, "the converter child never started"
    time.sleep(1.0)  # inside the conversion
    os.kill(b.proc.pid, signal.SIGKILL)
    b.proc.wait(timeout=30)
    end = time.monotonic() + 20
    while any(_alive(w) for w in workers) and time.monotonic() < end:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "the converter outlived the killed build"
    assert not b.out.exists(), "no run directory at OUT after a kill"
    # SIGKILL cannot be cleaned up after: what is left is the hidden work folder, never OUT itself
    assert all(p.name.startswith(f".{b.out.name}.partial-") for p in b.partials())
    assert_cache_sound(b.cache)
    report = _assert_next_build_completes(b)
    assert report["targets"]["tflite"]["cached"] is False


def test_sigterm_during_a_stage_cleans_up(tmp_path: Path, tiny_model: Path, digits_npz: Path) -> None:
    cfg = _config(tmp_path, tiny_model, digits_npz, "[prune]\nsparsity = 0.5\nepochs = 40\nbatch_size = 16\n")
    b = Build(tmp_path, cfg)
    b.start()
    b.wait_for_log(" epoch 1: ")
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGTERM)
    rc, err = b.finish()
    assert rc == 128 + signal.SIGTERM and err == "edgepipe: terminated\n", (rc, err)
    assert not b.out.exists() and b.partials() == []
    assert_cache_sound(b.cache)


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


def test_damaged_and_tampered_cache_entries_are_rebuilt(tmp_path: Path, tiny_model: Path, digits_npz: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGEPIPE_CACHE_DIR", str(cache))
    cfg = _config(tmp_path, tiny_model, digits_npz)
    out = tmp_path / "runs" / "run"
    assert _build_in_process(cfg, out, capsys)["targets"]["tflite"]["cached"] is False

    # 1. a flipped byte in the artifact: the hash check drops the entry, the target is built again
    entry = _export_entry(cache)
    artifact = entry / "model_int8.tflite"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    report = _build_in_process(cfg, out, capsys)
    assert report["targets"]["tflite"]["cached"] is False and "error" not in report["targets"]["tflite"]
    assert _export_entry(cache) == entry  # stored again, intact

    # 2. a consistent entry (manifest rewritten) whose export.json points outside the target folder
    meta = json.loads((entry / "export.json").read_text())
    meta["files"].append("../../../escaped.txt")
    (entry / "export.json").write_text(json.dumps(meta))
    _rewrite_manifest(entry)
    assert Cache._intact(entry)
    report = _build_in_process(cfg, out, capsys)
    assert report["targets"]["tflite"]["cached"] is False and "error" not in report["targets"]["tflite"]
    assert not list(tmp_path.rglob("escaped.txt"))
    assert "escaped" not in (_export_entry(cache) / "export.json").read_text(), "the bad entry is replaced"
    assert (out / "report.json").is_file() and [p.name for p in out.parent.iterdir()] == ["run"]


def _rewrite_manifest(entry: Path) -> None:
    files = {str(p.relative_to(entry)): file_digest(p) for p in _files(entry)}
    (entry / MANIFEST).write_text(json.dumps({"files": files}))


def test_cache_reads_trust_only_complete_entries(tmp_path: Path) -> None:
    """What a killed put or a hand edit can leave: each is a miss, never a hit."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.keras").write_bytes(b"weights" * 100)
    cache = Cache(tmp_path / "cache")
    entry = cache.put("ab" * 32, src)
    assert cache.get("ab" * 32) == entry
    (entry / "extra.bin").write_bytes(b"x")  # a file the manifest does not list
    assert cache.get("ab" * 32) is None and not entry.exists()
    entry = cache.put("ab" * 32, src)
    (entry / MANIFEST).unlink()  # no manifest
    assert cache.get("ab" * 32) is None
    entry = cache.put("ab" * 32, src)
    (entry / MANIFEST).write_text("{not json")  # a torn manifest
    assert cache.get("ab" * 32) is None
    stale = entry.parent / ".abababab-killed"  # the temp folder of a put killed mid-copy
    stale.mkdir()
    (stale / "model.keras").write_bytes(b"half")
    assert cache.get("ab" * 32) is None
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    cache.put("ab" * 32, src)  # the next put into that shard sweeps it
    assert not stale.exists() and cache.get("ab" * 32) is not None


# SIGINT, SIGKILL, SIGTERM, flipped byte, tampered export.json, extra file, missing manifest, torn
# manifest, stale temp folder of a killed put
INJECTED_FAULTS = 9


def test_injected_fault_count_matches_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"**{INJECTED_FAULTS} injected faults**" in readme
