"""What a device's measurement adds to a report entry: whether the device is emulated (its latency then is
not the board's and is never judged) and how often its top-1 agrees with the host's run of the same artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.report.schema import HostAgreement, TargetEntry, unset
from pipeline.ui import UI
from targets import runner

EMULATED_NOTE = "latency measured under emulation"


def mark_emulated(entry: TargetEntry, device: Any) -> TargetEntry:
    """On an emulated device: `emulated` (what measured), latency marked emulated, a note; else none of them."""
    entry = unset(entry, "emulated")
    notes = [n for n in entry.notes if not n.startswith(EMULATED_NOTE)]
    emulation = None if device is None else getattr(device, "emulated", None)
    lat = entry.latency_ms
    if emulation is None:
        return entry.model_copy(update={"notes": notes, **({} if lat is None else {"latency_ms": unset(lat, "emulated")})})
    notes.append(f"{EMULATED_NOTE} ({emulation.describe()}): not the board's latency, so no latency "
                 "budget is applied; accuracy is the aarch64 kernels' and counts")
    update: dict[str, Any] = {"emulated": emulation.report(), "notes": notes}
    if lat is not None:
        update["latency_ms"] = lat.model_copy(update={"emulated": True})
    return entry.model_copy(update=update)


def host_predictions(artifact: Path, eval_path: Path) -> tuple[list[int], str]:
    """The host's top-1 per sample for the artifact in its own runtime (the exact() session, as on a device)."""
    ev = runner.EvalSet(eval_path)  # several outputs: the metric's, as the device runner reports
    session = runner.open_session(artifact, 1, exact=True)
    return runner.top1(runner.outputs_all(session, ev.x)[ev.output_index]), session.evaluation()


def record_agreement(entry: TargetEntry, m: dict[str, Any], artifact: Path, eval_path: Path | None,
                     device: Any, ui: UI, label: str) -> TargetEntry:
    """`host_agreement`: the share of samples whose top-1 on the device equals the host's (same artifact)."""
    entry = unset(entry, "host_agreement")
    device_top1 = m.get("predictions")
    if device is None or eval_path is None or not device_top1:
        return entry
    try:
        host_top1, host_runtime = host_predictions(artifact, eval_path)
    except Exception as err:  # no runtime for it on the host: the device's numbers stand alone
        return entry.noted(f"no host-versus-device agreement: the host could not run {artifact.name} "
                           f"({type(err).__name__}: {err})")
    n = min(len(host_top1), len(device_top1))
    same = int(sum(1 for a, b in zip(host_top1[:n], device_top1[:n], strict=True) if a == b))
    share = same / n if n else 0.0
    if share < 1.0:
        ui.warn(f"{label}: top-1 agrees with the host's run of the same artifact on {share:.2%} of {n} samples")
    return entry.model_copy(update={"host_agreement": HostAgreement(top1=round(share, 6), samples=n, host=host_runtime)})
