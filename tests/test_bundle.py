"""Bundle format: write, read, check, tar round trip, and every way a bundle can be bad."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from support.models import make_linear_bundle

from edgeserve.bundle import (
    check_bundle,
    open_bundle,
    pack_bundle,
    read_bundle,
    unpack_bundle,
    write_bundle,
)
from edgeserve.bundle.manifest import Manifest, TensorSpec
from edgeserve.errors import BundleError, InferenceInputError, StorageError
from edgeserve.runtimes import load_runtime
from edgeserve.runtimes.base import check_feeds


def test_written_bundle_checks_and_runs(linear_bundle) -> None:
    bundle = check_bundle(linear_bundle.path)
    assert bundle.manifest.model_file.path == "model.onnx"
    assert bundle.manifest.model_file.size == (bundle.path / "model.onnx").stat().st_size
    runtime = load_runtime(bundle)
    out = runtime.run({"x": np.ones((5, 4), np.float32)})["y"]
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_manifest_round_trips_through_json(linear_bundle) -> None:
    m = linear_bundle.manifest
    assert Manifest.from_json(m.to_json()) == m


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d / "model.onnx").write_bytes(b"tampered"), "bytes, manifest says"),
        (lambda d: _flip_byte(d / "model.onnx"), "sha256 mismatch"),
        (lambda d: (d / "model.onnx").unlink(), "missing"),
        (lambda d: (d / "extra.bin").write_bytes(b"x"), "not listed"),
        (lambda d: _append(d / "model.onnx", b"more"), "longer than"),
    ],
    ids=["truncated", "tampered", "missing", "extra-file", "grown"],
)
def test_check_refuses_changed_files(linear_bundle, mutate, message) -> None:
    mutate(linear_bundle.path)
    with pytest.raises(BundleError, match=message):
        check_bundle(linear_bundle.path)


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"version": 0}, "positive integer"),
        ({"version": True}, "boolean"),
        ({"format": "pickle"}, "must be one of"),
        ({"name": "../etc"}, "not a valid model name"),
        ({"surprise": 1}, "unknown keys"),
        ({"files": [{"path": "../x", "sha256": "0" * 64, "size": 1}]}, "unsafe path"),
        ({"inputs": []}, "at least one input"),
        ({"inputs": [{"name": "x", "datatype": "FP99", "shape": [1]}]}, "unknown datatype"),
    ],
    ids=[
        "version-zero",
        "version-bool",
        "format",
        "name",
        "unknown-key",
        "path-escape",
        "no-inputs",
        "datatype",
    ],
)
def test_manifest_schema_errors_name_the_field(linear_bundle, patch, message) -> None:
    path = linear_bundle.path / "manifest.json"
    obj = json.loads(path.read_text())
    obj.update(patch)
    path.write_text(json.dumps(obj))
    with pytest.raises(BundleError, match=message):
        read_bundle(linear_bundle.path)


def test_manifest_size_is_bounded(linear_bundle) -> None:
    (linear_bundle.path / "manifest.json").write_bytes(b" " * (1_048_576 + 10))
    with pytest.raises(BundleError, match="limit"):
        read_bundle(linear_bundle.path)


def test_not_a_bundle(tmp_path) -> None:
    with pytest.raises(BundleError, match="not a bundle"):
        read_bundle(tmp_path)


def test_tar_round_trip(linear_bundle, tmp_path) -> None:
    tar = pack_bundle(linear_bundle.path, tmp_path / "b.tar")
    with open_bundle(tar) as b:
        assert b.manifest == linear_bundle.manifest
        assert (b.path / "model.onnx").read_bytes() == linear_bundle.model_path.read_bytes()


def test_unpack_refuses_path_traversal(tmp_path) -> None:
    evil = tmp_path / "evil.tar"
    payload = tmp_path / "p"
    payload.write_bytes(b"x")
    with tarfile.open(evil, "w") as tar:
        tar.add(payload, arcname="../../escape")
    with pytest.raises(BundleError, match="unsafe path"):
        unpack_bundle(evil, tmp_path / "out")
    assert not (tmp_path.parent / "escape").exists()


def test_unpack_refuses_symlink_members(tmp_path) -> None:
    evil = tmp_path / "link.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(BundleError, match="not a regular file"):
        unpack_bundle(evil, tmp_path / "out")


def test_not_a_tar(tmp_path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file at all" * 30)
    with pytest.raises(BundleError, match="not a valid bundle tar"), open_bundle(junk):
        pass


def test_write_is_atomic_and_refuses_overwrite(linear_bundle, tmp_path) -> None:
    before = linear_bundle.model_path.read_bytes()
    with pytest.raises(StorageError, match="already exists"):
        write_bundle(linear_bundle.path, linear_bundle.manifest, {"m.onnx": (b"x", "model")})
    assert linear_bundle.model_path.read_bytes() == before
    with pytest.raises(BundleError, match="unsafe path"):
        write_bundle(tmp_path / "new", linear_bundle.manifest, {"../m.onnx": (b"x", "model")})
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new.")]


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({}, "missing input"),
        ({"x": np.ones((1, 4), np.float32), "z": np.ones(1)}, "unknown input"),
        ({"x": np.ones((1, 4), np.float64)}, "datatype FP64"),
        ({"x": np.ones((1, 5), np.float32)}, r"shape \[1, 5\]"),
    ],
    ids=["missing", "extra", "dtype", "shape"],
)
def test_check_feeds_names_the_problem(feeds, message) -> None:
    spec = (TensorSpec("x", "FP32", (-1, 4)),)
    with pytest.raises(InferenceInputError, match=message):
        check_feeds(spec, feeds)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_manifest_refuses_numbers_json_cannot_carry(tmp_path, bad) -> None:
    # a signature covers canonical JSON, which has no NaN/Infinity: refuse when the manifest
    # is made, not later when a release is signed
    with pytest.raises(BundleError, match="validation: not representable as JSON"):
        make_linear_bundle(tmp_path / "b", validation={"max_abs_error": bad})
    assert not (tmp_path / "b").exists()


def test_manifest_json_with_nan_token_is_refused(linear_bundle) -> None:
    path = linear_bundle.path / "manifest.json"
    path.write_text(path.read_text().replace('"validation": {}', '"validation": {"e": NaN}'))
    with pytest.raises(BundleError, match="not representable as JSON"):
        read_bundle(linear_bundle.path)
