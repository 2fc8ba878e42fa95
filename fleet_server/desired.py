"""Desired-state documents: built from the store's targets, signed with the fleet key.

One document per device holds every model it should run (:class:`edgeserve.protocol.
DesiredState`); it is signed (:func:`edgeserve.trust.sign_canonical`, kind ``desired``) and
published retained at QoS 1 on the device's ``desired`` topic, so a device that connects later
still gets it (MQTT 5.0 §3.3.1.3, Retain). Its ``seq`` is incremented and persisted before the
publish, so a device never sees a number twice for different content, even across restarts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from edgeserve.bundle.manifest import canonical_json, canonical_members
from edgeserve.errors import NotFoundError
from edgeserve.protocol import (
    MAX_PAYLOAD_BYTES,
    Artifact,
    DesiredState,
    ModelTarget,
    ProtocolError,
    Split,
)
from edgeserve.trust import SigningKey, format_time, sign_canonical

from .store import Store, Target
from .store.records import to_json

__all__ = ["DesiredBuilder"]

_TARGETS_CACHED = 1024  # distinct targets (model, version, split, experiment) kept encoded


class DesiredBuilder:
    """Turns a device's targets into a signed payload.

    Args:
        store: the fleet store.
        fleet_key: the key that signs desired state (the keyring's fleet key).
        fleet: fleet name.
        base_url: where devices download artifacts (``<base_url>/artifacts/<m>/<v>.tar``).
        ttl_s: how long a document stays valid.
        keyrings: keyring envelopes, oldest first, shipped in every document so that a device
            pinned to an older root can walk a rotation.
    """

    def __init__(
        self,
        store: Store,
        fleet_key: SigningKey,
        fleet: str,
        base_url: str,
        ttl_s: int,
        keyrings: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.store = store
        self.fleet_key = fleet_key
        self.fleet = fleet
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self.keyrings = tuple(keyrings)
        self._releases: dict[tuple[str, int], dict[str, Any]] = {}
        # (target, its canonical JSON) by the store's target; the keyrings' canonical JSON
        self._targets: dict[tuple[Any, ...], tuple[ModelTarget, bytes]] = {}
        self._keyrings: tuple[tuple[dict[str, Any], ...] | None, bytes] = (None, b"")

    def _release(self, model: str, version: int) -> dict[str, Any]:
        # Releases are immutable, so caching them forever is safe (and saves a query and a
        # JSON parse per device when 1,000 devices get the same version).
        key = (model, version)
        if key not in self._releases:
            self._releases[key] = self.store.release(model, version)
        return self._releases[key]

    def artifact(self, model: str, version: int) -> Artifact:
        """The artifact reference of a release."""
        rel = self._release(model, version)
        return Artifact(
            f"{self.base_url}/artifacts/{model}/{version}.tar", rel["sha256"], rel["size"]
        )

    def _target(self, t: Target) -> ModelTarget:
        split = None
        if t.split:
            b = int(t.split["b_version"])
            split = Split(
                a_version=t.version,
                b_version=b,
                weight_b=int(t.split["weight_b"]),
                b_artifact=self.artifact(t.model, b),
                b_release=self._release(t.model, b)["envelope"],
            )
        return ModelTarget(
            version=t.version,
            artifact=self.artifact(t.model, t.version),
            release=self._release(t.model, t.version)["envelope"],
            allow_downgrade=t.allow_downgrade,
            split=split,
            experiment=t.experiment,
        )

    def build(
        self, devices: Sequence[str], now: datetime | None = None
    ) -> Iterator[tuple[str, tuple[int, bytes] | Exception]]:
        """Assign each device its next ``seq`` and yield ``(device, (seq, signed payload))``,
        with its current targets from the store (read with the ``seq``), or ``(device,
        error)`` where its document cannot be made: an unknown device (NotFoundError), a
        target naming a release that does not exist (NotFoundError), a document that would be
        invalid or too large (ProtocolError). Give one chunk at a time: every ``seq`` is
        assigned before the first payload is signed.
        """
        now = now or datetime.now(timezone.utc)
        expires = now + timedelta(seconds=self.ttl_s)
        assigned = self.store.next_desired(devices, expires.timestamp())
        for device in devices:
            if device not in assigned:
                yield device, NotFoundError(f"no device {device!r}")
                continue
            seq, targets = assigned[device]
            try:
                yield device, (seq, self.sign(device, targets, seq, now))
            except Exception as exc:  # one bad document never stops the others
                yield device, exc

    def sign(self, device: str, targets: Sequence[Target], seq: int, issued: datetime) -> bytes:
        """The signed payload of ``device``'s document number ``seq`` issued at ``issued``,
        without assigning a new ``seq``: the same bytes as :meth:`build` gave for them while the
        targets and the fleet key are unchanged (the encoding is canonical, Ed25519 signatures
        are deterministic, and times are written in whole seconds).

        Raises:
            NotFoundError: a target names a release that does not exist.
            ProtocolError: the document would be invalid or too large.
        """
        encoded = [self._encoded_target(t) for t in targets]
        doc = DesiredState(  # validates the document
            fleet=self.fleet,
            device=device,
            seq=seq,
            issued=format_time(issued),
            expires=format_time(issued + timedelta(seconds=self.ttl_s)),
            models={t.model: target for t, (target, _) in zip(targets, encoded, strict=True)},
            keyrings=self.keyrings,
        )
        # canonical_json(doc.to_dict()), with the release envelopes and keyrings, most of the
        # bytes and the same in every document, encoded once
        members = {
            k: canonical_json(v)
            for k, v in doc.to_dict().items()
            if k not in ("models", "keyrings")
        }
        members["models"] = canonical_members(
            {t.model: data for t, (_, data) in zip(targets, encoded, strict=True)}
        )
        members["keyrings"] = self._encoded_keyrings()
        payload = sign_canonical(canonical_members(members), [self.fleet_key])
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ProtocolError(f"message of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}")
        return payload

    def _encoded_target(self, t: Target) -> tuple[ModelTarget, bytes]:
        key = (t.model, t.version, t.allow_downgrade, to_json(t.split), t.experiment)
        if key not in self._targets:
            if len(self._targets) >= _TARGETS_CACHED:
                self._targets.clear()
            target = self._target(t)
            self._targets[key] = (target, canonical_json(target.to_dict()))
        return self._targets[key]

    def _encoded_keyrings(self) -> bytes:
        # the server swaps in a new tuple when it reloads rotated keys
        if self._keyrings[0] is not self.keyrings:
            self._keyrings = (self.keyrings, canonical_json(list(self.keyrings)))
        return self._keyrings[1]
