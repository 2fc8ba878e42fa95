"""Hostile payloads: whatever JSON (or bytes) arrives, parsing fails only with the protocol's
or the verifier's own error - never a crash of the network thread (hypothesis)."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeserve.bundle.manifest import canonical_json
from edgeserve.protocol import DesiredState, ProtocolError, Reported, Telemetry, decode
from edgeserve.trust import VerificationError, parse_envelope

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
DESIRED_KEYS = ["kind", "fleet", "device", "seq", "issued", "expires", "models", "keyrings"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(DESIRED_KEYS), json_values, max_size=8))
def test_sync_fuzz_desired_parsing_raises_only_protocol_error(obj: dict) -> None:
    with contextlib.suppress(ProtocolError):
        DesiredState.from_dict(obj)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_sync_fuzz_reported_and_telemetry_decode(obj: object) -> None:
    payload = json.dumps(obj).encode()
    for kind in (Reported, Telemetry):
        with contextlib.suppress(ProtocolError):
            decode(payload, kind)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: canonical_json(v)))
def test_sync_fuzz_envelope_parsing_raises_only_verification_error(payload: bytes) -> None:
    with contextlib.suppress(VerificationError):
        parse_envelope(payload)


def _valid_desired() -> dict:
    target = {
        "version": 2,
        "artifact": {"url": "http://127.0.0.1:1/a.tar", "sha256": "a" * 64, "size": 10},
        "release": {"signed": {}, "signatures": []},
        "allow_downgrade": False,
        "split": {
            "a_version": 2,
            "b_version": 3,
            "weight_b": 10,
            "b_artifact": {"url": "http://127.0.0.1:1/b.tar", "sha256": "b" * 64, "size": 9},
            "b_release": {"signed": {}, "signatures": []},
        },
        "experiment": "e1",
    }
    return {
        "kind": "desired",
        "fleet": "lab",
        "device": "d1",
        "seq": 3,
        "issued": "t",
        "expires": "t",
        "models": {"m": target},
        "keyrings": [],
    }


PATHS = [
    ("seq",),
    ("models", "m", "version"),
    ("models", "m", "artifact", "size"),
    ("models", "m", "artifact", "url"),
    ("models", "m", "split", "weight_b"),
    ("models", "m", "split", "b_artifact"),
    ("models", "m", "release"),
    ("models", "m", "allow_downgrade"),
    ("models", "m", "experiment"),
    ("keyrings",),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATHS), json_values)
def test_sync_fuzz_desired_field_mutations(path: tuple[str, ...], value: object) -> None:
    doc = _valid_desired()
    DesiredState.from_dict(doc)  # the base is valid
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with contextlib.suppress(ProtocolError):
        DesiredState.from_dict(doc)
