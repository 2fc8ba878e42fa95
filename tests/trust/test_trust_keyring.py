"""Keyring verification and rotation (TUF root update, spec 5.3.4-5.3.10), and `keys` CLI."""

from __future__ import annotations

import json
import shutil
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.fleet_keys import FleetKeys

from edgeserve.bundle.manifest import canonical_json
from edgeserve.cli import root as cli_root
from edgeserve.trust import (
    ExpiredError,
    Keyring,
    MalformedEnvelopeError,
    RollbackError,
    TrustAnchor,
    WrongSignerError,
    format_time,
    generate_key,
    make_keyring,
    sign_keyring,
    update_keyring,
    verify_keyring,
)
from edgeserve.trust.keydir import load_keyring, load_keyring_chain, rotate_keys


def _next(keys: FleetKeys, now: datetime, *, version: int = 2, new_root=None) -> Keyring:
    return make_keyring(
        version=version,
        expires=now + timedelta(days=30),
        root_keys=[new_root or keys.root],
        release_keys=[generate_key()],
        fleet_keys=[keys.fleet],
    )


def test_trust_first_keyring_verifies_against_pinned_anchor(
    fleet_keys: FleetKeys, now: datetime
) -> None:
    got = verify_keyring(fleet_keys.keyring_bytes, None, fleet_keys.anchor, now=now)
    assert got == fleet_keys.keyring
    assert got.release_keys == {fleet_keys.release.keyid: fleet_keys.release.public_key_b64}


def test_trust_keyring_signed_by_unpinned_root_raises_wrong_signer(
    fleet_keys: FleetKeys, now: datetime
) -> None:
    impostor = generate_key()
    ring = _next(fleet_keys, now, version=1, new_root=impostor)
    data = canonical_json(sign_keyring(ring, [impostor]))
    with pytest.raises(WrongSignerError, match="root \\(trusted\\)"):
        verify_keyring(data, None, fleet_keys.anchor, now=now)


def test_trust_rotation_signed_by_old_and_new_root_is_accepted(
    fleet_keys: FleetKeys, now: datetime
) -> None:
    new_root = generate_key()
    ring = _next(fleet_keys, now, new_root=new_root)
    data = canonical_json(sign_keyring(ring, [fleet_keys.root, new_root]))
    assert verify_keyring(data, fleet_keys.keyring, now=now) == ring


def test_trust_rotation_signed_only_by_new_root_raises_wrong_signer(
    fleet_keys: FleetKeys, now: datetime
) -> None:
    new_root = generate_key()
    ring = _next(fleet_keys, now, new_root=new_root)
    data = canonical_json(sign_keyring(ring, [new_root]))
    with pytest.raises(WrongSignerError, match="trusted"):
        verify_keyring(data, fleet_keys.keyring, now=now)


def test_trust_rotation_signed_only_by_old_root_raises_wrong_signer(
    fleet_keys: FleetKeys, now: datetime
) -> None:
    new_root = generate_key()
    ring = _next(fleet_keys, now, new_root=new_root)
    data = canonical_json(sign_keyring(ring, [fleet_keys.root]))
    with pytest.raises(WrongSignerError, match="new"):
        verify_keyring(data, fleet_keys.keyring, now=now)


def test_trust_keyring_rollback_raises_rollback_error(fleet_keys: FleetKeys, now: datetime) -> None:
    v2 = _next(fleet_keys, now)
    v2_bytes = canonical_json(sign_keyring(v2, [fleet_keys.root]))
    trusted = verify_keyring(v2_bytes, fleet_keys.keyring, now=now)
    with pytest.raises(RollbackError, match="not newer than trusted 2"):
        verify_keyring(fleet_keys.keyring_bytes, trusted, now=now)
    # the same keyring presented again is not an error: it is what we trust
    assert verify_keyring(v2_bytes, trusted, now=now) is trusted
    other_v2 = canonical_json(sign_keyring(_next(fleet_keys, now), [fleet_keys.root]))
    with pytest.raises(RollbackError):
        verify_keyring(other_v2, trusted, now=now)


def test_trust_freeze_expired_keyring_raises_expired_error(
    fleet_keys: FleetKeys, now: datetime
) -> None:
    ring = make_keyring(
        version=2,
        expires=now - timedelta(hours=2),
        root_keys=[fleet_keys.root],
        release_keys=[fleet_keys.release],
        fleet_keys=[fleet_keys.fleet],
    )
    data = canonical_json(sign_keyring(ring, [fleet_keys.root]))
    with pytest.raises(ExpiredError, match="expired at"):
        verify_keyring(data, fleet_keys.keyring, now=now)
    # a clock without RTC may lag: within the slack it is accepted
    assert verify_keyring(data, fleet_keys.keyring, now=now, clock_slack_s=3 * 3600).version == 2


def test_trust_keyring_chain_walks_two_rotations(fleet_keys: FleetKeys, now: datetime) -> None:
    root2, root3 = generate_key(), generate_key()
    v2 = _next(fleet_keys, now, version=2, new_root=root2)
    v3 = _next(fleet_keys, now, version=3, new_root=root3)
    chain = [
        fleet_keys.keyring_bytes,
        canonical_json(sign_keyring(v2, [fleet_keys.root, root2])),
        canonical_json(sign_keyring(v3, [root2, root3])),
    ]
    assert update_keyring(chain, None, fleet_keys.anchor, now=now) == v3
    assert update_keyring(chain, fleet_keys.keyring, now=now) == v3
    # skipping the middle link breaks the chain: v3 is not signed by root v1
    with pytest.raises(WrongSignerError):
        update_keyring([chain[0], chain[2]], fleet_keys.keyring, now=now)


def test_trust_keyring_with_spoofed_keyid_is_malformed(fleet_keys: FleetKeys) -> None:
    ring = fleet_keys.keyring.to_dict()
    ring["release"]["keys"] = {"0" * 64: fleet_keys.release.public_key_b64}
    with pytest.raises(MalformedEnvelopeError, match="is not its key"):
        Keyring.from_dict(ring)


def test_trust_keys_cli_init_rotate_show(tmp_path: Path, now: datetime) -> None:
    runner = CliRunner()
    out = tmp_path / "keys"
    result = runner.invoke(cli_root, ["keys", "init", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("root.key", "release.key", "fleet.key"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    anchor = TrustAnchor.load(out / "root.json")
    v1 = verify_keyring((out / "keyring.json").read_bytes(), None, anchor, now=now)
    again = runner.invoke(cli_root, ["keys", "init", "--out", str(out)])
    assert again.exit_code != 0 and "already exist" in again.output

    old_release = (out / "release.key").read_bytes()
    result = runner.invoke(cli_root, ["keys", "rotate", "--dir", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "release.key").read_bytes() != old_release
    assert len(list((out / "retired").glob("*.key"))) == 2
    v2 = verify_keyring((out / "keyring.json").read_bytes(), v1, now=now)
    assert v2.version == 2 and v2.root_keys != v1.root_keys
    chain = [canonical_json(e) for e in load_keyring_chain(out)]
    assert update_keyring(chain, None, anchor, now=now) == v2

    shown = runner.invoke(cli_root, ["keys", "show", str(out), "--json"])
    assert shown.exit_code == 0
    assert json.loads(shown.output)["version"] == 2
    assert load_keyring(out / "keyring.json") == v2


def test_trust_keys_rotate_fleet_only_keeps_root(tmp_path: Path, fleet_keys: FleetKeys) -> None:
    directory = tmp_path / "keys"
    shutil.copytree(fleet_keys.directory, directory)
    ring = rotate_keys(directory, roles=("fleet",))
    assert ring.root_keys == fleet_keys.keyring.root_keys
    assert ring.fleet_keys != fleet_keys.keyring.fleet_keys
    assert format_time(datetime.fromisoformat(ring.expires.replace("Z", "+00:00"))) == ring.expires
