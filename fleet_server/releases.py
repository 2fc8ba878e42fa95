"""Releases: accept an uploaded, signed bundle ``.tar``, verify it, store it immutably.

The server checks what a device will check before anything is stored, without unpacking the
tar (:func:`verify_upload`): the release signature against the keyring's release keys and
threshold (:func:`edgeserve.trust.verify_release`), that the bundle's manifest is the signed
one, and every file's size and sha256, read from the tar at most to its signed length. So an
upload never makes the server write more than the upload itself (a sparse member declaring
500 MiB in 10 KiB is refused from its header). Versions are
monotonic per model and a release is never replaced (Mender and TUF both treat published
artifacts as immutable). The tar is kept as uploaded under ``artifacts/<model>/<version>.tar``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeserve.bundle import MANIFEST_NAME, SIGNATURE_NAME, file_sha256, pack_bundle
from edgeserve.bundle.manifest import (
    MANIFEST_MAX_BYTES,
    Manifest,
    canonical_json,
    check_relative_path,
)
from edgeserve.errors import (
    BundleError,
    ConfigError,
    ConflictError,
    StorageError,
    VerificationError,
)
from edgeserve.trust import Keyring, SigningKey, sign_release, verify_release
from edgeserve.trust.errors import DigestMismatchError, MixAndMatchError

from .store import Store

__all__ = ["ingest_release", "prepare_release", "verify_upload"]

log = logging.getLogger(__name__)
_CHUNK = 1 << 20  # bytes hashed per read


def prepare_release(bundle_dir: Path, key: SigningKey, out_dir: Path) -> Path:
    """Operator side: sign a bundle directory with the release key and pack it as a ``.tar``.

    Args:
        bundle_dir: the bundle directory (``signature.json`` is written into it).
        key: the release key.
        out_dir: where the tar goes.

    Returns:
        The tar path.

    Raises:
        BundleError: not a valid bundle.
        StorageError: cannot write.
    """
    if not bundle_dir.is_dir():
        raise BundleError(
            f"{bundle_dir}: not a bundle directory (release a directory, it gets signed)"
        )
    sign_release(bundle_dir, [key])
    return pack_bundle(bundle_dir, out_dir / f"{bundle_dir.name}.tar")


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo, what: str) -> bytes:
    if member.size > MANIFEST_MAX_BYTES:
        raise BundleError(f"upload: {what} is {member.size} bytes, over {MANIFEST_MAX_BYTES}")
    src = tar.extractfile(member)
    if src is None:  # pragma: no cover - a regular file always has a stream
        raise BundleError(f"upload: cannot read {what}")
    with src:
        return src.read(member.size)


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Headers only (tarfile skips the data): regular, non-sparse files with safe paths."""
    members: dict[str, tarfile.TarInfo] = {}
    for m in tar:
        if m.isdir():
            continue
        # a sparse member declares far more bytes than the tar holds (10 KiB -> 500 MiB)
        if not m.isfile() or m.issparse():
            kind = "a sparse file" if m.issparse() else "not a regular file"
            raise BundleError(f"upload: member {m.name!r} is {kind}")
        check_relative_path(m.name)
        if m.name in members:
            raise BundleError(f"upload: duplicate member {m.name!r}")
        members[m.name] = m
    return members


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo, size: int) -> str:
    """sha256 of a member's data, reading at most ``size`` bytes (its signed length)."""
    src = tar.extractfile(member)
    if src is None:  # pragma: no cover
        raise BundleError(f"upload: cannot read {member.name!r}")
    digest = hashlib.sha256()
    left = size
    with src:
        while left > 0:
            chunk = src.read(min(_CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    if left:
        raise DigestMismatchError(
            f"upload: {member.name!r} is shorter than its signed {size} bytes"
        )
    return digest.hexdigest()


def verify_upload(
    upload: Path, keyring: Keyring, *, now: datetime | None = None
) -> tuple[Manifest, dict[str, Any]]:
    """Verify an uploaded release tar in place, writing nothing.

    Order (so that a hostile tar costs at most its own size): tar headers (regular files, safe
    paths, no sparse members); the release signature over the manifest, against the keyring's
    release keys and threshold; the tar's ``manifest.json`` is the signed manifest; every
    member is listed with its signed size; only then each member's data is hashed, reading at
    most its signed length.

    Args:
        upload: the tar as uploaded.
        keyring: whose release keys must have signed it.
        now: reference time for expiry (default: now).

    Returns:
        ``(signed manifest, signature envelope as a dict)``.

    Raises:
        BundleError: not a tar, unsafe or sparse members, unreadable manifest.
        VerificationError: unsigned, wrongly signed, not the signed manifest, sizes or hashes
            that differ from the signed ones, unlisted or missing files.
    """
    try:
        with tarfile.open(upload, "r:") as tar:
            members = _members(tar)
            sig, man = members.get(SIGNATURE_NAME), members.get(MANIFEST_NAME)
            if man is None:
                raise BundleError(f"upload: no {MANIFEST_NAME}; not a bundle tar")
            manifest = Manifest.from_json(_read_small(tar, man, MANIFEST_NAME))
            if sig is None:
                raise VerificationError(
                    f"{manifest.name} v{manifest.version} is not signed "
                    "(edgeserve fleet release signs it with --key)"
                )
            envelope_bytes = _read_small(tar, sig, SIGNATURE_NAME)
            signed = verify_release(
                envelope_bytes,
                keyring,
                now=now or datetime.now(timezone.utc),
                installed_version=None,
                expected_name=manifest.name,
                expected_version=manifest.version,
            )
            if canonical_json(manifest.to_dict()) != canonical_json(signed.to_dict()):
                raise MixAndMatchError(
                    f"upload: {MANIFEST_NAME} ({manifest.name} v{manifest.version}) is not the "
                    f"signed manifest ({signed.name} v{signed.version})"
                )
            declared = {f.path: f for f in signed.files}
            extra = set(members) - set(declared) - {MANIFEST_NAME, SIGNATURE_NAME}
            if extra:
                raise DigestMismatchError(f"upload: files not in the manifest: {sorted(extra)}")
            for path, entry in declared.items():
                member = members.get(path)
                if member is None:
                    raise DigestMismatchError(f"upload: {path!r} is missing")
                if member.size != entry.size:
                    raise DigestMismatchError(
                        f"upload: {path!r} holds {member.size} bytes, the manifest signs "
                        f"{entry.size}"
                    )
            for path, entry in declared.items():
                if _hash_member(tar, members[path], entry.size) != entry.sha256:
                    raise DigestMismatchError(f"upload: {path!r} does not match its sha256")
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"upload: not a valid bundle tar ({exc})") from exc
    return signed, json.loads(envelope_bytes)


def ingest_release(store: Store, artifacts: Path, upload: Path, keyring: Keyring) -> dict[str, Any]:
    """Verify an uploaded tar (:func:`verify_upload`) and store it as a new release.

    Args:
        store: the fleet store.
        artifacts: the artifact directory.
        upload: the uploaded tar (linked into ``artifacts`` on success; the caller removes it).
        keyring: the keyring whose release keys must have signed it.

    Returns:
        ``{"model", "version", "sha256", "size"}``.

    Raises:
        BundleError: not a valid bundle tar.
        VerificationError: unsigned, wrongly signed, or the files are not the signed ones.
        ConfigError: the version is not above the latest release of the model.
        ConflictError: another upload stored this version first.
        StorageError: the artifact cannot be stored (the message names the release, the log
            the path).
    """
    signed, envelope = verify_upload(upload, keyring)
    model, version = signed.name, signed.version
    sha256, size = file_sha256(upload)
    latest = store.latest_version(model)
    if version <= latest:
        raise ConfigError(
            f"{model} version {version} is not above the latest release {latest}; "
            "releases are immutable and versions monotonic"
        )
    target = artifacts / model / f"{version}.tar"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(upload, target)  # exclusive: fails if another upload got there first
    except FileExistsError:
        raise ConflictError(
            f"{model} v{version} already has an artifact; releases are immutable"
        ) from None
    except OSError as exc:
        log.error("cannot store artifact %s: %s", target, exc)
        raise StorageError(
            f"cannot store {model} v{version}: {exc.strerror or 'storage error'}"
        ) from exc
    try:
        store.add_release(model, version, sha256, size, signed.to_dict(), envelope, str(target))
    except Exception:
        target.unlink(missing_ok=True)
        raise
    store.audit(
        "operator",
        "release.add",
        f"release:{model}:{version}",
        "signed upload verified",
        {"sha256": sha256, "size": size},
    )
    return {"model": model, "version": version, "sha256": sha256, "size": size}
