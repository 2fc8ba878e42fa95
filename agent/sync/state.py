"""Everything fleet sync keeps on disk, in ``<state>/fleet/``, and reloads when it starts.

- ``keyring.json``: the trusted keyring (the newest link of the chain that verified).
- ``last_seq`` and ``desired.json``: the last accepted desired state; the seq is written first
  so that after a crash between the two writes a replay is still refused.
- ``outcomes.json``: install outcomes that must survive an agent restart, two entries per
  model keyed by the desired ``seq`` and version they belong to:

  - WARMING, written just before a version with a predecessor is activated: if the agent dies
    between the switch and the health check, the restarted agent finds the new version active
    and must not take it as healthy; fleet sync runs the check then (and rolls back to the
    recorded previous version on failure).
  - ROLLED_BACK: a version rolled back after failing its health check is not activated again
    when the agent restarts with the same desired state (``systemd`` restarting a crashing
    agent would otherwise serve the bad version for a moment on every start); the device
    reports the saved status until a new desired state arrives.

The keyring and desired state were verified before they were written; they are verified again
on load because the disk is not trusted more than the network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeserve.bundle.manifest import canonical_json
from edgeserve.errors import EdgeServeError, StorageError
from edgeserve.protocol import DesiredState, InstallState, ModelStatus, ProtocolError
from edgeserve.trust import (
    Keyring,
    TrustAnchor,
    VerificationError,
    parse_envelope,
    verify_document,
    verify_envelope,
    verify_keyring,
    write_atomic,
)

__all__ = [
    "current_outcomes",
    "load_desired",
    "load_keyring",
    "load_outcomes",
    "record_outcome",
    "save_desired",
    "save_keyring",
    "save_outcome",
]

log = logging.getLogger(__name__)
OUTCOMES_NAME = "outcomes.json"


def load_keyring(
    fleet_dir: Path,
    initial: Path | None,
    anchor: TrustAnchor | None,
    *,
    now: datetime,
    clock_slack_s: float,
) -> Keyring | None:
    """The trusted keyring: the saved one, else ``initial`` (``[fleet] keyring``) verified
    against the pinned anchor and saved, else None (wait for one in desired state).

    Raises:
        StorageError: ``initial`` cannot be read or the keyring cannot be saved.
        VerificationError: the saved or initial keyring does not verify.
    """
    saved = fleet_dir / "keyring.json"
    if saved.is_file():
        data = saved.read_bytes()
        signed, _ = parse_envelope(data)
        ring = Keyring.from_dict(signed)
        # written only after verification; re-check it is intact (self-signed root)
        verify_envelope(data, ring.root_keys, ring.root_threshold, role="root (saved)")
        return ring
    if initial is not None:
        try:
            data = initial.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read keyring {initial}: {exc}") from exc
        ring = verify_keyring(data, None, anchor, now=now, clock_slack_s=clock_slack_s)
        write_atomic(saved, data)
        return ring
    return None


def load_desired(
    fleet_dir: Path,
    keyring: Keyring | None,
    *,
    now: datetime,
    clock_slack_s: float,
    device: str,
) -> tuple[int, DesiredState | None]:
    """``(last accepted seq, saved desired state or None)``; a saved document that no longer
    verifies (expired, keyring rotated) is logged and ignored, the seq is kept.

    Raises:
        StorageError: ``last_seq`` is unreadable.
    """
    try:
        last_seq = int((fleet_dir / "last_seq").read_text().strip())
    except FileNotFoundError:
        last_seq = 0
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {fleet_dir / 'last_seq'}: {exc}") from exc
    saved = fleet_dir / "desired.json"
    if not saved.is_file() or keyring is None:
        return last_seq, None
    try:
        doc = verify_document(
            saved.read_bytes(), keyring, now, "desired", clock_slack_s=clock_slack_s
        )
        return last_seq, DesiredState.from_dict(doc)
    except (VerificationError, ProtocolError) as exc:
        log.warning("fleet sync %s: saved desired state not usable: %s", device, exc)
        return last_seq, None


def save_keyring(fleet_dir: Path, link: Mapping[str, Any]) -> None:
    """Save ``link`` (a verified keyring envelope) as the trusted keyring.

    Raises:
        StorageError: the file cannot be written.
    """
    write_atomic(fleet_dir / "keyring.json", canonical_json(link))


def save_desired(fleet_dir: Path, seq: int, payload: bytes) -> None:
    """Save an accepted desired-state payload: the seq first, so that after a crash between
    the two writes a replay is still refused.

    Raises:
        StorageError: a file cannot be written.
    """
    write_atomic(fleet_dir / "last_seq", f"{seq}\n".encode())
    write_atomic(fleet_dir / "desired.json", payload)


def load_outcomes(fleet_dir: Path) -> dict[str, tuple[int, int, ModelStatus]]:
    """Saved outcomes: model -> ``(seq, version, status)``. An unreadable file is ignored
    (logged): the worst case is one more install attempt, never a wrong version served."""
    path = fleet_dir / OUTCOMES_NAME
    try:
        raw: Any = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("fleet sync: ignoring unreadable %s: %s", path, exc)
        return {}
    out: dict[str, tuple[int, int, ModelStatus]] = {}
    if not isinstance(raw, dict):
        return out
    for name, entry in raw.items():
        try:
            seq, version = entry["seq"], entry["version"]
            if not isinstance(seq, int) or not isinstance(version, int):
                raise ProtocolError("seq and version must be integers")
            out[name] = (seq, version, ModelStatus.from_dict(entry["status"]))
        except (KeyError, TypeError, ProtocolError) as exc:
            log.warning("fleet sync: ignoring saved outcome of %s: %s", name, exc)
    return out


def save_outcome(fleet_dir: Path, name: str, seq: int, version: int, status: ModelStatus) -> None:
    """Record ``status`` as the outcome of installing ``name`` v``version`` for desired
    ``seq`` (atomically; entries of other models are kept).

    Raises:
        StorageError: the file cannot be written.
    """
    current = {
        n: {"seq": s, "version": v, "status": st.to_dict()}
        for n, (s, v, st) in load_outcomes(fleet_dir).items()
    }
    current[name] = {"seq": seq, "version": version, "status": status.to_dict()}
    fleet_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(fleet_dir / OUTCOMES_NAME, json.dumps(current, sort_keys=True).encode())


def record_outcome(fleet_dir: Path, name: str, seq: int, version: int, status: ModelStatus) -> None:
    """:func:`save_outcome`, logging instead of raising: losing the record costs at most one
    more install attempt, which must not fail the install itself."""
    try:
        save_outcome(fleet_dir, name, seq, version, status)
    except EdgeServeError as exc:
        log.error("fleet sync: outcome of %s v%s not saved: %s", name, version, exc)


def current_outcomes(
    fleet_dir: Path, desired: DesiredState
) -> tuple[dict[str, ModelStatus], dict[str, tuple[int, int, int]]]:
    """Saved outcomes that belong to ``desired`` (same seq and target version).

    Returns:
        ``(rolled back: model -> saved status, activations never checked: model ->
        (seq, version, previous version))``.
    """
    rolled_back: dict[str, ModelStatus] = {}
    unchecked: dict[str, tuple[int, int, int]] = {}
    for name, (seq, version, status) in load_outcomes(fleet_dir).items():
        target = desired.models.get(name)
        if seq != desired.seq or target is None or target.version != version:
            continue
        if status.state is InstallState.WARMING and status.active is not None:
            unchecked[name] = (seq, version, status.active)
        elif status.state is InstallState.ROLLED_BACK:
            rolled_back[name] = status
    return rolled_back, unchecked
