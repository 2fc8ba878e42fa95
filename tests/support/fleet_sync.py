"""Test-side stand-in for the fleet server's MQTT half: releases bundles onto a real HTTP
artifact server, signs and publishes desired state, collects what devices report."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edgeserve.bundle import SIGNATURE_NAME, Bundle, pack_bundle
from edgeserve.bundle.manifest import canonical_json
from edgeserve.mqtt import MqttClient, MqttConfig
from edgeserve.protocol import (
    Artifact,
    DesiredState,
    ModelTarget,
    Reported,
    Split,
    decode,
    fleet_filter,
    parse_topic,
    topics,
)
from edgeserve.trust import SigningKey, format_time, sign_document
from support.artifact_server import ArtifactServer
from support.fleet_keys import FleetKeys

FLEET = "lab"


class Release:
    """A packed, signed bundle served by the artifact server."""

    def __init__(self, bundle: Bundle, server: ArtifactServer, workdir: Path, key: str) -> None:
        name, version = bundle.manifest.name, bundle.manifest.version
        tar = pack_bundle(bundle.path, workdir / f"{key}.tar")
        self.data = tar.read_bytes()
        self.path = f"artifacts/{key}.tar"
        server.files[self.path] = self.data
        self.artifact = Artifact(
            server.url(self.path), hashlib.sha256(self.data).hexdigest(), len(self.data)
        )
        self.release = json.loads((bundle.path / SIGNATURE_NAME).read_bytes())
        self.version = version
        self.name = name

    def target(self, **kw: Any) -> ModelTarget:
        return ModelTarget(self.version, self.artifact, self.release, **kw)

    def split_to(self, b: Release, weight_b: int) -> ModelTarget:
        return self.target(split=Split(self.version, b.version, weight_b, b.artifact, b.release))


def signed_desired(
    keys: FleetKeys,
    device: str,
    models: dict[str, ModelTarget],
    *,
    seq: int,
    expires_in_s: float = 3600,
    keyrings: Sequence[dict[str, Any]] = (),
    signer: Sequence[SigningKey] | None = None,
    now: datetime | None = None,
    fleet: str = FLEET,
) -> bytes:
    """A desired-state payload for ``device`` as the fleet server publishes it (signed by the
    fleet key unless ``signer`` says otherwise)."""
    now = now or datetime.now(timezone.utc)
    doc = DesiredState(
        fleet,
        device,
        seq,
        format_time(now),
        format_time(now + timedelta(seconds=expires_in_s)),
        models,
        tuple(keyrings),
    )
    return canonical_json(sign_document(doc.to_dict(), signer or [keys.fleet]))


class FleetDriver:
    """Publishes signed desired state and records reports, over a real broker."""

    def __init__(self, broker_url: str, keys: FleetKeys, prefix: str = "es/") -> None:
        self.keys = keys
        self.prefix = prefix
        self.reports: dict[str, list[Reported]] = {}
        self.raw: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.client = MqttClient(MqttConfig(broker_url, "test-fleet-driver"))
        self.client.subscribe(fleet_filter(prefix, FLEET, "reported"), self._on_report)
        self.client.start()
        self.client.wait_connected()
        self.seq = 0

    def _on_report(self, topic: str, payload: bytes, retained: bool) -> None:
        _fleet, device, _kind = parse_topic(self.prefix, topic)
        with self._cond:
            self.raw.append((device, payload))
            self.reports.setdefault(device, []).append(decode(payload, Reported))  # type: ignore[arg-type]
            self._cond.notify_all()

    def desired(
        self,
        device: str,
        models: dict[str, ModelTarget],
        *,
        seq: int | None = None,
        expires_in_s: float = 3600,
        keyrings: Sequence[dict[str, Any]] = (),
        signer: Sequence[SigningKey] | None = None,
        now: datetime | None = None,
    ) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return signed_desired(
            self.keys,
            device,
            models,
            seq=seq,
            expires_in_s=expires_in_s,
            keyrings=keyrings,
            signer=signer,
            now=now,
        )

    def publish(self, device: str, payload: bytes) -> None:
        done = threading.Event()
        self.client.publish(
            topics(self.prefix, FLEET, device).desired, payload, retain=True, on_ack=done.set
        )
        assert done.wait(5), "desired not acknowledged by the broker"

    def wait_report(
        self, device: str, pred: Callable[[Reported], bool], timeout_s: float = 20.0
    ) -> Reported:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for rep in reversed(self.reports.get(device, [])):
                    if pred(rep):
                        return rep
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no matching report from {device}; got "
                        f"{[r.to_dict() for r in self.reports.get(device, [])][-3:]}"
                    )
                self._cond.wait(left)

    def count(self, device: str) -> int:
        with self._cond:
            return len(self.reports.get(device, []))

    def close(self) -> None:
        self.client.stop()


def model_state(name: str, state: str, active: int | None = None) -> Callable[[Reported], bool]:
    """Predicate: ``name`` is in ``state`` (and serves ``active`` when given)."""

    def pred(rep: Reported) -> bool:
        st = rep.models.get(name)
        return (
            st is not None and st.state.value == state and (active is None or st.active == active)
        )

    return pred
