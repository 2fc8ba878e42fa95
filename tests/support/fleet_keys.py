"""Keys and keyrings for tests (made once per session, never fetched).

Use the ``fleet_keys`` fixture by importing it into an area's ``conftest.py``::

    from support.fleet_keys import fleet_keys_fixture  # noqa: F401  (fixture "fleet_keys")

or call :func:`make_fleet_keys` for a fresh set in a temp directory.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeserve.bundle import Bundle
from edgeserve.bundle.manifest import canonical_json
from edgeserve.trust import Keyring, SigningKey, TrustAnchor
from edgeserve.trust.keydir import init_keys, load_keyring_chain


@dataclass(frozen=True)
class FleetKeys:
    """A keys directory as ``edgeserve keys init`` writes it, loaded.

    Attributes:
        directory: holds root.key, release.key, fleet.key, keyring.json, root.json.
        root / release / fleet: the signing keys.
        keyring: keyring v1 (root 1-of-1, release 1-of-1, fleet 1-of-1).
        keyring_bytes: its envelope, canonical JSON.
        anchor: the trust anchor a device pins (``directory / "root.json"``).
    """

    directory: Path
    root: SigningKey
    release: SigningKey
    fleet: SigningKey
    keyring: Keyring
    keyring_bytes: bytes
    anchor: TrustAnchor

    @property
    def anchor_path(self) -> Path:
        """``root.json``."""
        return self.directory / "root.json"

    @property
    def keyring_path(self) -> Path:
        """``keyring.json``."""
        return self.directory / "keyring.json"


def make_fleet_keys(directory: Path) -> FleetKeys:
    """Run ``init_keys`` into ``directory`` and load everything back."""
    keyring = init_keys(directory)
    chain = load_keyring_chain(directory)
    return FleetKeys(
        directory=directory,
        root=SigningKey.load(directory / "root.key"),
        release=SigningKey.load(directory / "release.key"),
        fleet=SigningKey.load(directory / "fleet.key"),
        keyring=keyring,
        keyring_bytes=canonical_json(chain[-1]),
        anchor=TrustAnchor.load(directory / "root.json"),
    )


@pytest.fixture(scope="session", name="fleet_keys")
def fleet_keys_fixture(tmp_path_factory: pytest.TempPathFactory) -> FleetKeys:
    """One key set for the whole session (treat as read-only; rotate a copy)."""
    return make_fleet_keys(tmp_path_factory.mktemp("fleet-keys"))


def make_signed_bundle(
    directory: Path,
    keys: Sequence[SigningKey],
    *,
    name: str = "linear",
    version: int = 1,
    seed: int = 0,
    with_sample: bool = True,
    validation: dict[str, object] | None = None,
    sample: object = None,
) -> Bundle:
    """A real ONNX bundle (model + sample inputs) with ``signature.json`` by ``keys``."""
    import numpy as np

    from edgeserve.bundle import read_bundle
    from edgeserve.trust import sign_release
    from support.models import make_linear_bundle

    files: dict[str, tuple[Path | bytes, str]] = {}
    if with_sample:
        buf = io.BytesIO()
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((2, 4)).astype(np.float32) if sample is None else sample
        np.savez(buf, x=x)
        files["sample.npz"] = (buf.getvalue(), "sample")
    make_linear_bundle(
        directory, name=name, version=version, seed=seed, validation=validation, extra_files=files
    )
    sign_release(directory, keys)
    return read_bundle(directory)
