"""The sans-I/O protocol: topics, strict messages, the install state table, coalescing."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from support.fleet_keys import FleetKeys

from edgeserve.bundle.manifest import canonical_json
from edgeserve.protocol import (
    MAX_PAYLOAD_BYTES,
    TRANSITIONS,
    Artifact,
    DesiredState,
    IllegalTransitionError,
    InstallEvent,
    InstallMachine,
    InstallState,
    ModelStatus,
    ModelTarget,
    ProtocolError,
    ReportCoalescer,
    Reported,
    Split,
    Telemetry,
    decode,
    encode,
    fleet_filter,
    parse_topic,
    topics,
)
from edgeserve.trust import sign, sign_document, verify_document

S = InstallState
E = InstallEvent
SHA = "a" * 64


def _target(version: int = 2, **kw: object) -> ModelTarget:
    release = {"signed": {"version": version}, "signatures": []}
    return ModelTarget(
        version=version,
        artifact=Artifact(f"http://127.0.0.1:1/a/{version}.tar", SHA, 1234),
        release=release,
        **kw,  # type: ignore[arg-type]
    )


def test_sync_topics_layout_and_parse() -> None:
    t = topics("es/", "lab", "pi-01")
    assert t.desired == "es/lab/dev/pi-01/desired"
    assert t.presence == "es/lab/dev/pi-01/presence"
    assert fleet_filter("es/", "lab", "reported") == "es/lab/dev/+/reported"
    assert parse_topic("es/", t.telemetry) == ("lab", "pi-01", "telemetry")
    for bad in ("a/b", "x+", "#", ""):
        with pytest.raises(ProtocolError):
            topics("es/", "lab", bad)
    with pytest.raises(ProtocolError):
        parse_topic("es/", "es/lab/x/pi/desired")


def test_sync_desired_signed_roundtrip_between_two_ends(
    fleet_keys: FleetKeys,
) -> None:
    """Server end: build + sign + encode. Device end: verify + parse. Plain bytes between."""
    now = datetime.now(timezone.utc)
    split = Split(
        2,
        3,
        25,
        Artifact("http://127.0.0.1:1/b.tar", SHA, 99),
        sign({"v": 3}, [fleet_keys.release]),
    )
    desired = DesiredState(
        fleet="lab",
        device="pi-01",
        seq=7,
        issued="2026-01-01T00:00:00Z",
        expires=(now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        models={"digits": _target(2, split=split, experiment="exp1")},
    )
    wire = encode(sign_document(desired.to_dict(), [fleet_keys.fleet]))
    signed = verify_document(wire, fleet_keys.keyring, now, "desired")
    assert DesiredState.from_dict(signed) == desired


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(extra=1),
        lambda d: d.update(seq=0),
        lambda d: d.update(seq=True),
        lambda d: d["models"]["m"].update(version="2"),
        lambda d: d["models"]["m"]["artifact"].update(size=-1),
        lambda d: d["models"]["m"]["artifact"].update(url="file:///etc/passwd"),
        lambda d: d["models"]["m"]["artifact"].update(sha256="XYZ"),
        lambda d: d["models"]["m"].update(release={"signed": {}}),
        lambda d: d.update(device="../x"),
        lambda d: d.update(kind="reported"),
    ],
    ids=[
        "unknown-key",
        "seq-zero",
        "seq-bool",
        "version-str",
        "size-neg",
        "file-url",
        "bad-sha",
        "release-shape",
        "device-name",
        "kind",
    ],
)
def test_sync_desired_strict_parsing_rejects(mutate) -> None:  # type: ignore[no-untyped-def]
    desired = DesiredState("lab", "pi", 1, "t", "t", {"m": _target()})
    obj = json.loads(canonical_json(desired.to_dict()))
    mutate(obj)
    with pytest.raises(ProtocolError):
        DesiredState.from_dict(obj)


def test_sync_reported_and_telemetry_roundtrip() -> None:
    rep = Reported(
        "pi-01",
        7,
        "2026-01-01T00:00:00Z",
        {"m": ModelStatus(S.REJECTED, 1, 2, None, "bad sig", "bad_signature")},
        "0.1.0",
    )
    assert decode(encode(rep), Reported) == rep
    tel = Telemetry("pi-01", "t", ({"model": "m", "count": 3},), dropped=2)
    assert decode(encode(tel), Telemetry) == tel
    for bad in (b"{", b"[]", b'{"kind": "reported"}', b"x" * (MAX_PAYLOAD_BYTES + 1)):
        with pytest.raises(ProtocolError):
            decode(bad, Reported)


def test_sync_install_machine_follows_the_table() -> None:
    m = InstallMachine()
    for event, state in (
        (E.START, S.DOWNLOADING),
        (E.DOWNLOADED, S.VERIFYING),
        (E.VERIFIED, S.STAGED),
        (E.STORED, S.WARMING),
        (E.HEALTHY, S.ACTIVE),
        (E.START, S.DOWNLOADING),
        (E.REJECT, S.REJECTED),
        (E.START, S.DOWNLOADING),
        (E.DOWNLOADED, S.VERIFYING),
        (E.VERIFIED, S.STAGED),
        (E.STORED, S.WARMING),
        (E.ROLL_BACK, S.ROLLED_BACK),
    ):
        assert m.handle(event) is state
    with pytest.raises(IllegalTransitionError, match="ROLLED_BACK on HEALTHY"):
        m.handle(E.HEALTHY)
    with pytest.raises(IllegalTransitionError):
        InstallMachine(S.DOWNLOADING).handle(E.HEALTHY)  # never active without verification
    with pytest.raises(IllegalTransitionError):
        InstallMachine(S.STAGED).handle(E.START)  # one install at a time
    # only terminal states start a new install
    starters = {state for (state, event) in TRANSITIONS if event is E.START}
    assert starters == {s for s in S if s.terminal}


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.value)
def test_sync_install_machine_has_an_error_transition_from_every_state(state: S) -> None:
    # h11's process_error: whatever step fails, the machine itself never raises
    assert InstallMachine(state).handle(E.ERROR) is S.FAILED
    assert InstallMachine(state).handle(E.REJECT) is S.REJECTED


def test_sync_coalescer_keeps_a_rollout_within_budget() -> None:
    c = ReportCoalescer()
    sent = []
    # target 2: download, verify, stage, warm, fail (retry), download again..., then active
    seq = [
        S.DOWNLOADING,
        S.VERIFYING,
        S.STAGED,
        S.WARMING,
        S.FAILED,
        S.DOWNLOADING,
        S.VERIFYING,
        S.STAGED,
        S.WARMING,
        S.ACTIVE,
        S.ACTIVE,
    ]
    for state in seq:
        status = ModelStatus(state, active=2 if state is S.ACTIVE else 1, target=2)
        if c.should_report("m", status):
            sent.append(state)
    assert sent == [S.DOWNLOADING, S.FAILED, S.ACTIVE]
    # the same failure again (other wording) is not news
    failed = ModelStatus(S.FAILED, active=2, target=3, error="timeout 1", reason_code="download")
    assert c.should_report("m", failed)
    assert not c.should_report("m", replace(failed, error="timeout 2"))
    # a new target reports its start again
    assert c.should_report("m", ModelStatus(S.DOWNLOADING, active=2, target=3))
