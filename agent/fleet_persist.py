"""What a device reloads from ``<state>/fleet/`` when fleet sync starts: the trusted keyring
and the last accepted desired state (install outcomes: :mod:`.fleet_outcomes`).

Both were verified before they were written; they are verified again on load because the disk
is not trusted more than the network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeserve.errors import StorageError
from edgeserve.protocol import DesiredState, ProtocolError
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

__all__ = ["keyring_version", "load_desired", "load_keyring"]

log = logging.getLogger(__name__)


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


def keyring_version(envelope: Any) -> int | None:
    """The ``version`` of a keyring envelope (dict or bytes), None when it has none."""
    if isinstance(envelope, Mapping) and isinstance(envelope.get("signed"), Mapping):
        version = envelope["signed"].get("version")
        return version if isinstance(version, int) else None
    try:
        return json.loads(envelope)["signed"]["version"]
    except (ValueError, KeyError, TypeError):
        return None
