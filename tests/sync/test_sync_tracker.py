"""The sans-I/O desired-state tracker on plain bytes: one test per attack, each asserting the
specific error; plus the seq, duplicate and keyring-walk rules and that nothing changes before
``commit``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from support.fleet_keys import FleetKeys
from support.fleet_sync import FLEET, signed_desired

from edgeserve.bundle.manifest import canonical_json
from edgeserve.protocol import Artifact, ModelTarget, ProtocolError
from edgeserve.protocol.tracker import DesiredTracker, Verdict, keyring_version
from edgeserve.trust import (
    ExpiredError,
    MixAndMatchError,
    ReplayError,
    SignatureError,
    VerificationError,
    WrongSignerError,
    generate_key,
    make_keyring,
    sign_document,
    sign_keyring,
)

NOW = datetime.now(timezone.utc)
MODELS = {
    "linear": ModelTarget(
        1,
        Artifact("/artifacts/linear-1.tar", "0" * 64, 1),
        {"signed": {}, "signatures": []},  # shape only; releases are verified at install
    )
}


def _tracker(keys: FleetKeys, *, last_seq: int = 0, with_keyring: bool = True) -> DesiredTracker:
    return DesiredTracker(
        FLEET,
        "dev1",
        keys.anchor,
        keys.keyring if with_keyring else None,
        last_seq=last_seq,
        clock_slack_s=5,
    )


def _doc(keys: FleetKeys, seq: int, **kw: Any) -> bytes:
    return signed_desired(keys, kw.pop("device", "dev1"), MODELS, seq=seq, now=NOW, **kw)


def _rotated_chain(keys: FleetKeys, **changes: Any) -> list[dict[str, Any]]:
    fields: dict[str, Any] = dict(
        version=2,
        expires=NOW + timedelta(days=1),
        root_keys=[keys.root],
        release_keys=[keys.release],
        fleet_keys=[keys.fleet],
    )
    fields.update(changes)
    return [json.loads(keys.keyring_bytes), sign_keyring(make_keyring(**fields), [keys.root])]


def test_tracker_accepts_a_newer_seq_only_once_committed(fleet_keys: FleetKeys) -> None:
    tracker = _tracker(fleet_keys)
    decision = tracker.decide(_doc(fleet_keys, 3), NOW)
    assert decision.verdict is Verdict.ACCEPTED and decision.error is None
    assert decision.desired is not None and decision.desired.seq == 3
    assert tracker.last_seq == 0 and tracker.desired is None  # the caller persists first
    tracker.commit(decision)
    assert tracker.last_seq == 3 and tracker.desired == decision.desired


def test_tracker_redelivered_seq_is_a_duplicate(fleet_keys: FleetKeys) -> None:
    tracker = _tracker(fleet_keys)
    payload = _doc(fleet_keys, 3)
    tracker.commit(tracker.decide(payload, NOW))
    decision = tracker.decide(payload, NOW)
    assert decision.verdict is Verdict.DUPLICATE and decision.error is None
    assert decision.desired is None


def test_tracker_attack_replayed_old_desired_state_raises_replay(fleet_keys: FleetKeys) -> None:
    tracker = _tracker(fleet_keys, last_seq=5)
    decision = tracker.decide(_doc(fleet_keys, 4), NOW)
    assert decision.verdict is Verdict.REJECTED
    assert isinstance(decision.error, ReplayError)
    tracker.commit(decision)
    assert tracker.last_seq == 5


def test_tracker_attack_mix_and_match_other_device_raises_mix_and_match(
    fleet_keys: FleetKeys,
) -> None:
    decision = _tracker(fleet_keys).decide(_doc(fleet_keys, 1, device="dev2"), NOW)
    assert decision.verdict is Verdict.REJECTED
    assert isinstance(decision.error, MixAndMatchError)


def test_tracker_attack_mix_and_match_other_fleet_raises_mix_and_match(
    fleet_keys: FleetKeys,
) -> None:
    decision = _tracker(fleet_keys).decide(_doc(fleet_keys, 1, fleet="other"), NOW)
    assert isinstance(decision.error, MixAndMatchError)


def test_tracker_attack_wrong_signer_desired_state_raises_wrong_signer(
    fleet_keys: FleetKeys,
) -> None:
    payload = _doc(fleet_keys, 1, signer=[fleet_keys.release])
    decision = _tracker(fleet_keys).decide(payload, NOW)
    assert decision.verdict is Verdict.REJECTED
    assert isinstance(decision.error, WrongSignerError)


def test_tracker_attack_freeze_expired_desired_state_raises_expired(
    fleet_keys: FleetKeys,
) -> None:
    payload = _doc(fleet_keys, 1, expires_in_s=60)
    decision = _tracker(fleet_keys).decide(payload, NOW + timedelta(hours=1))
    assert decision.verdict is Verdict.REJECTED
    assert isinstance(decision.error, ExpiredError)


def test_tracker_attack_tampered_document_raises_bad_signature(fleet_keys: FleetKeys) -> None:
    envelope = json.loads(_doc(fleet_keys, 1))
    envelope["signed"]["seq"] = 99  # the signature covers seq 1
    decision = _tracker(fleet_keys).decide(canonical_json(envelope), NOW)
    assert decision.verdict is Verdict.REJECTED
    assert isinstance(decision.error, SignatureError)


def test_tracker_without_a_keyring_rejects_every_document(fleet_keys: FleetKeys) -> None:
    decision = _tracker(fleet_keys, with_keyring=False).decide(_doc(fleet_keys, 1), NOW)
    assert decision.verdict is Verdict.REJECTED
    assert type(decision.error) is VerificationError


def test_tracker_verified_document_that_is_not_desired_state_is_a_protocol_error(
    fleet_keys: FleetKeys,
) -> None:
    doc = {"kind": "desired", "fleet": FLEET, "device": "dev1", "seq": "one"}
    payload = canonical_json(sign_document(doc, [fleet_keys.fleet]))
    decision = _tracker(fleet_keys).decide(payload, NOW)
    assert decision.verdict is Verdict.REJECTED
    assert isinstance(decision.error, ProtocolError)


def test_tracker_rotated_keyring_is_trusted_even_when_the_document_is_refused(
    fleet_keys: FleetKeys,
) -> None:
    tracker = _tracker(fleet_keys, last_seq=5)
    chain = _rotated_chain(fleet_keys)
    decision = tracker.decide(_doc(fleet_keys, 2, keyrings=chain), NOW)
    assert isinstance(decision.error, ReplayError)
    assert decision.keyring is not None and decision.keyring.version == 2
    assert decision.keyring_link is not None and keyring_version(decision.keyring_link) == 2
    assert tracker.keyring is not None and tracker.keyring.version == 1
    tracker.commit(decision)
    assert tracker.keyring.version == 2
    # the same chain again brings nothing newer
    again = tracker.decide(_doc(fleet_keys, 6, keyrings=chain), NOW)
    assert (
        again.verdict is Verdict.ACCEPTED and again.keyring is None and again.keyring_error is None
    )


def test_tracker_attack_rotated_out_fleet_key_raises_wrong_signer(fleet_keys: FleetKeys) -> None:
    new_fleet = generate_key()
    chain = _rotated_chain(fleet_keys, fleet_keys=[new_fleet])
    # signed by the old fleet key, which the keyring delivered with it no longer trusts
    decision = _tracker(fleet_keys).decide(_doc(fleet_keys, 1, keyrings=chain), NOW)
    assert isinstance(decision.error, WrongSignerError)
    resigned = _doc(fleet_keys, 1, keyrings=chain, signer=[new_fleet])
    assert _tracker(fleet_keys).decide(resigned, NOW).verdict is Verdict.ACCEPTED


def test_tracker_attack_forged_keyring_is_ignored(fleet_keys: FleetKeys) -> None:
    evil_root = generate_key()
    forged = make_keyring(
        version=2,
        expires=NOW + timedelta(days=1),
        root_keys=[evil_root],
        release_keys=[evil_root],
        fleet_keys=[evil_root],
    )
    chain = [json.loads(fleet_keys.keyring_bytes), sign_keyring(forged, [evil_root])]
    tracker = _tracker(fleet_keys)
    decision = tracker.decide(_doc(fleet_keys, 1, keyrings=chain, signer=[evil_root]), NOW)
    assert isinstance(decision.keyring_error, VerificationError)
    assert decision.keyring is None and decision.keyring_link is None
    # judged on the trusted keyring, which does not know the forger's key
    assert isinstance(decision.error, WrongSignerError)
    tracker.commit(decision)
    assert tracker.keyring is not None and tracker.keyring.version == 1


@pytest.mark.parametrize(
    ("envelope", "version"),
    [({"signed": {"version": 3}}, 3), (b'{"signed": {"version": 4}}', 4), ({"x": 1}, None)],
)
def test_keyring_version_of_an_envelope(envelope: Any, version: int | None) -> None:
    assert keyring_version(envelope) == version
