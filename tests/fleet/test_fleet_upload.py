"""Release uploads cannot amplify: a sparse or oversized tar makes the fleet server write at most
what it was sent, and its errors name the upload, never a server path.

The bytes the server process writes are read from Linux's ``/proc/<pid>/io`` (``wchar``: every
byte passed to write(2), files and sockets alike), before and after each upload.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import httpx
import pytest
from support.fleet import TOKEN, FleetServerProcess
from support.models import make_linear_bundle

from edgeserve.trust import SigningKey, sign_release

AUTH = {"Authorization": f"Bearer {TOKEN}"}
DECLARED_SPARSE = 500 * 1024 * 1024  # what the sparse member claims to expand to


def written_bytes(server: FleetServerProcess) -> int:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/<pid>/io")


def signed_bundle(tmp: Path, keys: Path, version: int) -> Path:
    bundle = make_linear_bundle(tmp / f"b{version}", name="digits", version=version)
    sign_release(bundle.path, [SigningKey.load(keys / "release.key")])
    return bundle.path


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def sparse_tar(bundle: Path, out: Path) -> Path:
    """The signed manifest and signature, and model.onnx as a PAX 1.0 sparse member: 512 bytes
    of map and one data byte that unpack to DECLARED_SPARSE bytes."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("manifest.json", "signature.json"):
            add_bytes(tar, name, (bundle / name).read_bytes())
        sparse_map = f"1\n{DECLARED_SPARSE - 1}\n1\n".encode().ljust(512, b"\0")
        info = tarfile.TarInfo("GNUSparseFile.0/model.onnx")
        info.pax_headers = {
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": "model.onnx",
            "GNU.sparse.realsize": str(DECLARED_SPARSE),
        }
        payload = sparse_map + b"x"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with tarfile.open(out) as check:  # it is what it claims to be
        member = check.getmember("model.onnx")
        assert member.issparse() and member.size == DECLARED_SPARSE
    return out


def oversized_tar(bundle: Path, out: Path, extra_bytes: int) -> Path:
    """model.onnx with ``extra_bytes`` more than the manifest signs."""
    with tarfile.open(out, "w") as tar:
        for name in ("manifest.json", "signature.json"):
            add_bytes(tar, name, (bundle / name).read_bytes())
        add_bytes(tar, "model.onnx", (bundle / "model.onnx").read_bytes() + b"\0" * extra_bytes)
    return out


def upload(server: FleetServerProcess, tar: Path) -> tuple[httpx.Response, int]:
    before = written_bytes(server)
    response = httpx.post(
        f"{server.url}/api/v1/releases", headers=AUTH, content=tar.read_bytes(), timeout=60
    )
    return response, written_bytes(server) - before


@pytest.mark.slow
def test_sparse_tar_writes_no_more_than_the_upload(
    fleet_server: FleetServerProcess, fleet_keys: Path, tmp_path: Path
) -> None:
    tar = sparse_tar(signed_bundle(tmp_path, fleet_keys, 1), tmp_path / "sparse.tar")
    response, wrote = upload(fleet_server, tar)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "model.onnx" in error and "sparse" in error
    assert str(fleet_server.workdir) not in error and "/tmp" not in error
    # the upload itself (a few KiB) plus a log line and the answer; nothing unpacked
    assert wrote < tar.stat().st_size + 256 * 1024, wrote


@pytest.mark.slow
def test_oversized_member_is_refused_before_its_data_is_read(
    fleet_server: FleetServerProcess, fleet_keys: Path, tmp_path: Path
) -> None:
    bundle = signed_bundle(tmp_path, fleet_keys, 1)
    signed_size = json.loads((bundle / "manifest.json").read_bytes())["files"][0]["size"]
    tar = oversized_tar(bundle, tmp_path / "big.tar", 8 * 1024 * 1024)
    response, wrote = upload(fleet_server, tar)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert f"the manifest signs {signed_size}" in error
    assert str(fleet_server.workdir) not in error and "/tmp" not in error
    # the body as received is the only copy written: no file data unpacked next to it
    assert wrote < tar.stat().st_size + 256 * 1024, wrote
    with fleet_server.client() as client:
        assert client.releases() == []
    leftovers = list((fleet_server.workdir / "data" / "artifacts").rglob("*"))
    assert leftovers == [], leftovers

    # the same bundle packed honestly is accepted
    good = oversized_tar(bundle, tmp_path / "good.tar", 0)
    response, _ = upload(fleet_server, good)
    assert response.status_code == 201, response.text
