"""Which desired-state documents a device accepts: a sans-I/O tracker of the trusted keyring and
the last accepted ``seq``.

:class:`DesiredTracker` holds the rules a device applies to a signed desired-state payload, and
nothing else: no network, no files, no clock of its own. :meth:`DesiredTracker.decide` takes
the payload's bytes and ``now`` and returns a :class:`Decision`:

- the keyring chain the document carries is walked first, from the trusted keyring (or the
  pinned anchor); a newer keyring that verifies is trusted from then on, even when the
  document itself is refused, and a chain that does not verify is ignored (the trusted
  keyring stays);
- the document must verify against the (new) keyring, be for this fleet and device
  (:class:`~edgeserve.trust.MixAndMatchError` otherwise) and carry a ``seq`` above the last
  accepted one: the same ``seq`` is a duplicate (a redelivery of the retained message), a
  lower one a :class:`~edgeserve.trust.ReplayError`.

The caller persists what the decision says is new (the keyring link, the accepted payload)
and then calls :meth:`DesiredTracker.commit`, so a failed write leaves the tracker where the
disk is.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgeserve.errors import EdgeServeError
from edgeserve.protocol.desired import DesiredState
from edgeserve.protocol.fields import MAX_PAYLOAD_BYTES
from edgeserve.protocol.topics import ProtocolError
from edgeserve.trust import (
    Keyring,
    MixAndMatchError,
    ReplayError,
    TrustAnchor,
    VerificationError,
    parse_envelope,
    update_keyring,
    verify_document,
)

__all__ = ["Decision", "DesiredTracker", "Verdict", "keyring_version"]


class Verdict(enum.Enum):
    """What became of one desired-state payload."""

    ACCEPTED = "accepted"  # new and now current
    DUPLICATE = "duplicate"  # the seq already accepted
    REJECTED = "rejected"  # see Decision.error


@dataclass(frozen=True)
class Decision:
    """The outcome of :meth:`DesiredTracker.decide`.

    Attributes:
        verdict: accepted, duplicate or rejected.
        desired: the accepted document (ACCEPTED only).
        error: why it was rejected (REJECTED only): a
            :class:`~edgeserve.trust.VerificationError` subclass for a document that does not
            verify or is a replay, :class:`~edgeserve.protocol.ProtocolError` for a verified
            document that is malformed.
        keyring: a newer trusted keyring from the document's chain, or None.
        keyring_link: the envelope of ``keyring`` (to persist), or None.
        keyring_error: why the document's keyring chain was refused, or None.
    """

    verdict: Verdict
    desired: DesiredState | None = None
    error: VerificationError | ProtocolError | None = None
    keyring: Keyring | None = None
    keyring_link: Mapping[str, Any] | None = None
    keyring_error: EdgeServeError | None = None


class DesiredTracker:
    """The trusted keyring and last accepted desired state of one device.

    Args:
        fleet: the device's fleet.
        device: the device id.
        anchor: the pinned trust anchor (starts a keyring chain when none is trusted yet).
        keyring: the trusted keyring, or None until a document delivers one.
        last_seq: the highest desired ``seq`` accepted so far.
        desired: the last accepted document, or None.
        clock_slack_s: tolerated clock error for expiry checks.
    """

    def __init__(
        self,
        fleet: str,
        device: str,
        anchor: TrustAnchor | None,
        keyring: Keyring | None,
        *,
        last_seq: int = 0,
        desired: DesiredState | None = None,
        clock_slack_s: float = 0.0,
    ) -> None:
        self.fleet = fleet
        self.device = device
        self.anchor = anchor
        self.keyring = keyring
        self.last_seq = last_seq
        self.desired = desired
        self.clock_slack_s = clock_slack_s

    def decide(self, payload: bytes, now: datetime) -> Decision:
        """Judge one desired-state payload; changes nothing (see :meth:`commit`).

        Raises:
            VerificationError: the payload is not even a structurally valid envelope (callers
                check that on arrival, with :func:`~edgeserve.trust.parse_envelope`).
        """
        signed, _ = parse_envelope(payload, max_bytes=MAX_PAYLOAD_BYTES)
        keyring, link, keyring_error = self._walk(signed.get("keyrings"), now)
        trusted = keyring or self.keyring
        try:
            if trusted is None:
                raise VerificationError("no trusted keyring yet; cannot verify desired state")
            doc = verify_document(
                payload, trusted, now, "desired", clock_slack_s=self.clock_slack_s
            )
            desired = DesiredState.from_dict(doc)
            if desired.device != self.device or desired.fleet != self.fleet:
                raise MixAndMatchError(
                    f"desired state is for {desired.fleet}/{desired.device}, "
                    f"not {self.fleet}/{self.device}"
                )
            if desired.seq == self.last_seq:
                return Decision(Verdict.DUPLICATE, None, None, keyring, link, keyring_error)
            if desired.seq < self.last_seq:
                raise ReplayError(
                    f"desired seq {desired.seq} is older than applied {self.last_seq}"
                )
        except (VerificationError, ProtocolError) as exc:
            return Decision(Verdict.REJECTED, None, exc, keyring, link, keyring_error)
        return Decision(Verdict.ACCEPTED, desired, None, keyring, link, keyring_error)

    def commit(self, decision: Decision) -> None:
        """Take a decision's new keyring and accepted document as current (once persisted)."""
        if decision.keyring is not None:
            self.keyring = decision.keyring
        if decision.verdict is Verdict.ACCEPTED and decision.desired is not None:
            self.last_seq = decision.desired.seq
            self.desired = decision.desired

    def _walk(
        self, chain: Any, now: datetime
    ) -> tuple[Keyring | None, Mapping[str, Any] | None, EdgeServeError | None]:
        """``(newer keyring, its envelope, None)``, ``(None, None, why refused)``, or all None
        when the chain brings nothing newer."""
        if not isinstance(chain, list) or not chain:
            return None, None, None
        try:
            newer = update_keyring(
                chain, self.keyring, self.anchor, now=now, clock_slack_s=self.clock_slack_s
            )
        except EdgeServeError as exc:
            return None, None, exc
        if self.keyring is not None and newer.version <= self.keyring.version:
            return None, None, None
        link = next(e for e in chain if keyring_version(e) == newer.version)
        return newer, link, None


def keyring_version(envelope: Any) -> int | None:
    """The ``version`` of a keyring envelope (dict or bytes), None when it has none."""
    if isinstance(envelope, Mapping) and isinstance(envelope.get("signed"), Mapping):
        version = envelope["signed"].get("version")
        return version if isinstance(version, int) else None
    try:
        return json.loads(envelope)["signed"]["version"]
    except (ValueError, KeyError, TypeError):
        return None
