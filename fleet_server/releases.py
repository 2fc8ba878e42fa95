"""Releases: accept an uploaded, signed bundle ``.tar``, verify it, store it immutably.

The server checks what a device will check before anything is stored: every file's size and
sha256 (:func:`edgeserve.bundle.unpack_bundle`), the release signature against the keyring's
release keys and threshold (:func:`edgeserve.trust.verify_release`), and that the bundle's
manifest is the signed one (:func:`edgeserve.trust.verify_bundle_files`). Versions are
monotonic per model and a release is never replaced (Mender and TUF both treat published
artifacts as immutable). The tar is kept as uploaded under ``artifacts/<model>/<version>.tar``.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeserve.bundle import SIGNATURE_NAME, file_sha256, pack_bundle, unpack_bundle
from edgeserve.errors import BundleError, ConfigError, StorageError, VerificationError
from edgeserve.trust import Keyring, SigningKey, sign_release, verify_bundle_files, verify_release

from .store import Store

__all__ = ["ingest_release", "prepare_release"]


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


def ingest_release(store: Store, artifacts: Path, upload: Path, keyring: Keyring) -> dict[str, Any]:
    """Verify an uploaded tar and store it as a new release.

    Args:
        store: the fleet store.
        artifacts: the artifact directory.
        upload: the uploaded tar (moved into ``artifacts`` on success, else left to the caller).
        keyring: the keyring whose release keys must have signed it.

    Returns:
        ``{"model", "version", "sha256", "size"}``.

    Raises:
        BundleError: not a valid bundle tar.
        VerificationError: unsigned, wrongly signed, or the manifest is not the signed one.
        ConfigError: the version is not above the latest release of the model.
    """
    with tempfile.TemporaryDirectory(prefix="edgeserve-release-", dir=artifacts) as tmp:
        # files are checked once, against the signed manifest, by verify_bundle_files below
        bundle = unpack_bundle(upload, Path(tmp) / "bundle", check=False)
        sig = bundle.path / SIGNATURE_NAME
        if not sig.is_file():
            raise VerificationError(
                f"{bundle.manifest.name} v{bundle.manifest.version} is not signed "
                "(edgeserve fleet release signs it with --key)"
            )
        envelope_bytes = sig.read_bytes()
        signed = verify_release(
            envelope_bytes,
            keyring,
            now=datetime.now(timezone.utc),
            installed_version=None,
            expected_name=bundle.manifest.name,
            expected_version=bundle.manifest.version,
        )
        verify_bundle_files(bundle.path, signed)
        envelope = json.loads(envelope_bytes)
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
        raise ConfigError(
            f"{model} v{version} already has an artifact; releases are immutable"
        ) from None
    except OSError as exc:
        raise StorageError(f"cannot store artifact {target}: {exc.strerror or exc}") from exc
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
