"""The operator API over real HTTP: bad requests get 4xx with {"error": ...}, artifacts answer
Range requests, releases are verified and immutable, malformed MQTT payloads are counted."""

from __future__ import annotations

import subprocess
import tarfile
import time
from pathlib import Path

import httpx
import pytest
from support.broker import Mosquitto
from support.fleet import TOKEN, FleetServerProcess, signed_release_tar

from edgeserve.errors import BundleError, ConfigError, NotFoundError
from edgeserve.trust import generate_key

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _err(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]
    return body["error"]


def test_bad_requests_get_4xx_with_a_message(fleet_server: FleetServerProcess) -> None:
    url = fleet_server.url
    assert "token" in _err(httpx.get(f"{url}/api/v1/devices"), 401)
    assert "token" in _err(
        httpx.get(f"{url}/api/v1/devices", headers={"Authorization": "Bearer nope"}), 401
    )
    assert "JSON" in _err(
        httpx.post(f"{url}/api/v1/devices", headers=AUTH, content=b"{not json"), 400
    )
    assert "id" in _err(
        httpx.post(f"{url}/api/v1/devices", headers=AUTH, json={"id": "bad/id"}), 400
    )
    assert "unknown fields" in _err(
        httpx.post(f"{url}/api/v1/devices", headers=AUTH, json={"id": "ok", "colour": 1}), 400
    )
    assert httpx.post(f"{url}/api/v1/devices", headers=AUTH, json={"id": "d1"}).status_code == 201
    assert "already" in _err(
        httpx.post(f"{url}/api/v1/devices", headers=AUTH, json={"id": "d1"}), 409
    )
    assert "no rollout" in _err(httpx.get(f"{url}/api/v1/rollouts/99", headers=AUTH), 404)
    assert "integer" in _err(httpx.get(f"{url}/api/v1/rollouts/abc", headers=AUTH), 400)
    assert "true or false" in _err(
        httpx.get(f"{url}/api/v1/rollouts/1?devices=some", headers=AUTH), 400
    )
    assert "no release" in _err(
        httpx.post(f"{url}/api/v1/rollouts", headers=AUTH, json={"model": "digits", "version": 7}),
        404,
    )
    assert "phases" in _err(
        httpx.post(
            f"{url}/api/v1/rollouts",
            headers=AUTH,
            json={"model": "digits", "version": 1, "phases": [50, 25]},
        ),
        400,
    )
    assert "soak" in _err(
        httpx.post(
            f"{url}/api/v1/rollouts",
            headers=AUTH,
            json={"model": "digits", "version": 1, "soak": "ten minutes"},
        ),
        400,
    )
    assert "no experiment" in _err(
        httpx.get(f"{url}/api/v1/experiments/5/report", headers=AUTH), 404
    )
    _err(httpx.get(f"{url}/api/v1/nothing-here", headers=AUTH), 404)
    _err(httpx.delete(f"{url}/api/v1/devices", headers=AUTH), 405)


def test_releases_are_verified_immutable_and_monotonic(
    fleet_server: FleetServerProcess, fleet_keys: Path, tmp_path: Path
) -> None:
    with fleet_server.client() as client:
        garbage = tmp_path / "garbage.tar"
        garbage.write_bytes(b"this is not a tar" * 100)
        with pytest.raises(BundleError, match="not a valid bundle tar"):
            client.upload_release(garbage)

        # signed by a key the keyring does not list
        rogue = tmp_path / "rogue"
        rogue.mkdir()
        (rogue / "rogue.key").write_bytes(b"")
        generate_key().save(rogue / "rogue.key")
        tar = signed_release_tar(tmp_path / "r", rogue, key="rogue.key")
        with pytest.raises(BundleError, match=r"(?i)signature|signer|threshold"):
            client.upload_release(tar)

        good = signed_release_tar(tmp_path / "g", fleet_keys, version=2)
        result = client.upload_release(good)
        assert (result["model"], result["version"]) == ("digits", 2)
        again = signed_release_tar(tmp_path / "g2", fleet_keys, version=2, seed=1)
        with pytest.raises(ConfigError, match="not above"):
            client.upload_release(again)
        older = signed_release_tar(tmp_path / "g3", fleet_keys, version=1)
        with pytest.raises(ConfigError, match="not above"):
            client.upload_release(older)
        with pytest.raises(NotFoundError):
            client.rollout(1)

    # tampered after signing: the model bytes differ from the signed manifest
    tampered = signed_release_tar(tmp_path / "t", fleet_keys, version=3)
    unpacked = tmp_path / "t-unpacked"
    with tarfile.open(tampered) as tar:
        tar.extractall(unpacked, filter="data")
    model = unpacked / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    bad = tmp_path / "tampered.tar"
    with tarfile.open(bad, "w") as tar:
        for f in sorted(unpacked.iterdir()):
            tar.add(f, arcname=f.name)
    r = httpx.post(f"{fleet_server.url}/api/v1/releases", headers=AUTH, content=bad.read_bytes())
    assert "model.onnx" in _err(r, 422)


def test_artifact_range_requests(
    fleet_server: FleetServerProcess, fleet_keys: Path, tmp_path: Path
) -> None:
    tar = signed_release_tar(tmp_path, fleet_keys)
    with fleet_server.client() as client:
        client.upload_release(tar)
    whole = tar.read_bytes()
    url = f"{fleet_server.url}/artifacts/digits/1.tar"
    full = httpx.get(url)
    assert full.status_code == 200 and full.content == whole
    assert full.headers["accept-ranges"] == "bytes"
    part = httpx.get(url, headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == whole[100:]
    assert part.headers["content-range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
    mid = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert mid.status_code == 206 and mid.content == whole[10:20]
    assert httpx.get(url, headers={"Range": f"bytes={len(whole) + 5}-"}).status_code == 416
    assert "no release" in _err(httpx.get(f"{fleet_server.url}/artifacts/digits/9.tar"), 404)
    keyring = httpx.get(f"{fleet_server.url}/keyring.json")
    assert (
        keyring.status_code == 200 and keyring.content == (fleet_keys / "keyring.json").read_bytes()
    )


def test_malformed_mqtt_payloads_are_dropped_and_counted(
    fleet_server: FleetServerProcess, fleet_broker: Mosquitto
) -> None:
    with fleet_server.client() as client:
        client.add_device("d1", {})
        for topic, payload in [
            ("es/test/dev/d1/reported", "{not json"),
            (
                "es/test/dev/d1/reported",
                '{"kind": "reported", "device": "someone-else", "seq": 1, "ts": "x", "models": {}}',
            ),
            ("es/test/dev/d1/telemetry", '{"kind": "telemetry"}'),
            ("es/test/dev/d1/presence", "maybe"),
            ("es/test/dev/stranger/reported", "{}"),
        ]:
            subprocess.run(
                [
                    "mosquitto_pub",
                    "-p",
                    str(fleet_broker.port),
                    "-t",
                    topic,
                    "-m",
                    payload,
                    "-q",
                    "1",
                ],
                check=True,
                timeout=30,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            dropped = client.stats()["ingest"]["dropped"]
            if dropped.get("malformed") == 4 and dropped.get("unknown_device") == 1:
                break
            time.sleep(0.1)
        assert dropped == {"malformed": 4, "unknown_device": 1}
        assert client.devices()[0]["presence"] == "unknown"  # nothing bad was stored


def test_rotated_release_key_is_used_without_a_restart(
    fleet_broker: Mosquitto, tmp_path: Path
) -> None:
    from edgeserve.trust.keydir import rotate_keys

    server = FleetServerProcess(tmp_path / "server", fleet_broker.url).start()  # its own keys
    try:
        assert server.keys is not None
        with server.client() as client:
            client.upload_release(signed_release_tar(tmp_path / "a", server.keys, version=1))
            old_key = tmp_path / "old-release"
            old_key.mkdir()
            (old_key / "release.key").write_bytes((server.keys / "release.key").read_bytes())
            time.sleep(0.05)  # a later mtime for the rotated keyring
            rotate_keys(server.keys, roles=("release",))
            new = signed_release_tar(tmp_path / "b", server.keys, version=2)
            assert client.upload_release(new)["version"] == 2
            stale = signed_release_tar(tmp_path / "c", old_key, version=3)
            with pytest.raises(BundleError, match=r"(?i)signature|signer|threshold"):
                client.upload_release(stale)
        served = httpx.get(f"{server.url}/keyring.json").json()
        assert served["signed"]["version"] == 2
    finally:
        server.stop()


def test_device_filters_history_and_audit_action_filter(fleet_server: FleetServerProcess) -> None:
    url = fleet_server.url
    for device, hw in (("f-1", "rpi5"), ("f-2", "jetson")):
        body = {"id": device, "tags": {"hw": hw}}
        assert httpx.post(f"{url}/api/v1/devices", headers=AUTH, json=body).status_code == 201
    listed = httpx.get(f"{url}/api/v1/devices?tag=hw=jetson", headers=AUTH).json()["devices"]
    assert [d["id"] for d in listed] == ["f-2"]
    unknown = httpx.get(f"{url}/api/v1/devices?state=unknown", headers=AUTH).json()["devices"]
    assert {d["id"] for d in unknown} == {"f-1", "f-2"}  # never connected
    everyone = httpx.get(f"{url}/api/v1/devices", headers=AUTH).json()["devices"]
    stats = httpx.get(f"{url}/api/v1/stats", headers=AUTH).json()
    assert stats["devices"] == len(everyone) >= 2
    assert httpx.get(f"{url}/api/v1/devices?state=online", headers=AUTH).json()["devices"] == []
    assert "tag" in _err(httpx.get(f"{url}/api/v1/devices?tag=a/b=c", headers=AUTH), 400)
    detail = httpx.get(f"{url}/api/v1/devices/f-1", headers=AUTH).json()
    assert detail["tags"] == {"hw": "rpi5"}
    assert (detail["installs"], detail["failures"], detail["telemetry"]) == ([], [], [])
    entries = httpx.get(f"{url}/api/v1/audit?action=device.", headers=AUTH).json()["entries"]
    assert [e["subject"] for e in entries] == ["device:f-2", "device:f-1"]
    assert httpx.get(f"{url}/api/v1/audit?action=rollout.", headers=AUTH).json()["entries"] == []
