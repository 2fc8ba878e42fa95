"""Downloads against a real HTTP server, and the ``[fleet]`` config parser."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from edgeserve.agent.sync.config import SyncConfig
from edgeserve.agent.sync.download import DownloadLimits, download_artifact
from edgeserve.agent.sync.http_client import HTTPClient
from support.artifact_server import ArtifactServer, Fault

from edgeserve.errors import ConfigError, TransportError
from edgeserve.protocol import Artifact
from edgeserve.trust import DigestMismatchError, EndlessDataError

DATA = bytes(range(256)) * 400  # 102,400 bytes


def _artifact(server: ArtifactServer, path: str = "a.tar", data: bytes = DATA) -> Artifact:
    server.files[path] = data
    return Artifact(server.url(path), hashlib.sha256(data).hexdigest(), len(data))


FAST = DownloadLimits(retries=3, backoff_s=0.01, timeout_s=5)


def test_sync_download_resumes_a_leftover_part_with_range(
    artifacts: ArtifactServer, tmp_path: Path
) -> None:
    art = _artifact(artifacts)
    (tmp_path / f"{art.sha256}.part").write_bytes(DATA[:40_000])  # what a kill -9 left
    with HTTPClient() as client:
        path = download_artifact(client, art, tmp_path, FAST)
    assert path.read_bytes() == DATA and path.name == f"{art.sha256}.tar"
    assert artifacts.requests == [("a.tar", "bytes=40000-")]
    with HTTPClient() as client:  # already there: no request
        assert download_artifact(client, art, tmp_path, FAST) == path
    assert len(artifacts.requests) == 1


def test_sync_download_starts_over_when_range_is_ignored(
    artifacts: ArtifactServer, tmp_path: Path
) -> None:
    art = _artifact(artifacts)
    artifacts.faults["a.tar"] = Fault(ignore_range=True)
    (tmp_path / f"{art.sha256}.part").write_bytes(b"garbage" * 100)
    with HTTPClient() as client:
        assert download_artifact(client, art, tmp_path, FAST).read_bytes() == DATA


def test_sync_download_errors_name_the_problem(artifacts: ArtifactServer, tmp_path: Path) -> None:
    art = _artifact(artifacts)
    with HTTPClient() as client:
        with pytest.raises(EndlessDataError, match="over the 1000 byte limit"):
            download_artifact(client, art, tmp_path, DownloadLimits(max_bytes=1000))
        assert artifacts.requests == []  # refused before any byte moved
        missing = Artifact(artifacts.url("nope.tar"), "0" * 64, 10)
        with pytest.raises(TransportError, match="HTTP 404"):
            download_artifact(client, missing, tmp_path, FAST)
        wrong = Artifact(art.url, "f" * 64, art.size)
        with pytest.raises(DigestMismatchError, match="is not the signed"):
            download_artifact(client, wrong, tmp_path, FAST)
        assert not list(tmp_path.glob("*")), "nothing unverified is kept"
        artifacts.faults["a.tar"] = Fault(status=503, status_times=5)
        with pytest.raises(TransportError, match="gave up after 3 attempts"):
            download_artifact(client, art, tmp_path, FAST)


def test_sync_download_follows_http_redirects_only(
    artifacts: ArtifactServer, tmp_path: Path
) -> None:
    art = _artifact(artifacts)
    artifacts.files["moved.tar"] = DATA
    artifacts.faults["moved.tar"] = Fault(redirect=art.url)
    moved = Artifact(artifacts.url("moved.tar"), art.sha256, art.size)
    client = HTTPClient()
    assert download_artifact(client, moved, tmp_path, FAST).read_bytes() == DATA
    assert [path for path, _ in artifacts.requests] == ["moved.tar", "a.tar"]
    secret = tmp_path / "secret"
    secret.write_bytes(DATA)
    artifacts.faults["moved.tar"] = Fault(redirect=f"file://{secret}")
    with pytest.raises(TransportError, match="redirect refused"):
        download_artifact(client, moved, tmp_path / "other", FAST)
    with (
        pytest.raises(TransportError, match="not an http"),
        client.stream("GET", f"file://{secret}"),
    ):
        pass
    assert not (tmp_path / "other" / f"{art.sha256}.tar").exists()


def test_sync_download_refused_connection_is_retried_then_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    art = Artifact(f"http://127.0.0.1:{port}/a.tar", "0" * 64, 10)
    with pytest.raises(TransportError, match=r"gave up after 3 attempts: .*refused"):
        download_artifact(HTTPClient(), art, tmp_path, FAST)


def _table(**kw: object) -> dict[str, object]:
    table: dict[str, object] = {
        "broker": "mqtt://127.0.0.1:1883",
        "device": "pi-01",
        "trust_anchor": "/etc/edgeserve/root.json",
    }
    table.update(kw)
    return table


def test_sync_fleet_config_defaults_and_validation() -> None:
    cfg = SyncConfig.from_mapping(_table(keyring="", clock_slack_s=10))
    assert cfg.mqtt_username == "pi-01" and cfg.keyring is None and cfg.prefix == "es/"
    assert cfg.clock_slack_s == 10.0 and isinstance(cfg.trust_anchor, Path)
    for bad, message in [
        ({"brokr": "x"}, "unknown key"),
        ({"device": ""}, "'device' is required"),
        ({"device": "a/b"}, "device"),
        ({"broker": "http://x"}, "mqtt://"),
        ({"keepalive_s": "30"}, "must be a non-negative integer"),
        ({"clock_slack_s": -1}, "must be a non-negative number"),
        ({"telemetry_batch": -5}, "must be a non-negative integer"),
        ({"download_retries": 0}, "at least 1"),
        ({"prefix": "es"}, "must end with"),
    ]:
        with pytest.raises(ConfigError, match=message):
            SyncConfig.from_mapping(_table(**bad))


def test_sync_download_cancel_keeps_the_part_for_later(
    artifacts: ArtifactServer, tmp_path: Path
) -> None:
    import threading

    art = _artifact(artifacts)
    artifacts.faults["a.tar"] = Fault(rate=len(DATA) // 2)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with HTTPClient() as client, pytest.raises(TransportError, match="cancelled"):
        download_artifact(client, art, tmp_path, FAST, cancel=cancel)
    part = tmp_path / f"{art.sha256}.part"
    assert 0 < part.stat().st_size < len(DATA)
    with HTTPClient() as client:  # resumed later
        assert download_artifact(client, art, tmp_path, FAST).read_bytes() == DATA
