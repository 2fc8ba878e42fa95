"""edgeserve: take a trained model from a laptop to a fleet of edge devices and keep it serving.

The public API of the core; components live in ``edgeserve.converter``, ``edgeserve.agent``
and ``edgeserve.fleet_server``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from edgeserve.bundle import (
    Bundle,
    BundleLimits,
    check_bundle,
    open_bundle,
    pack_bundle,
    read_bundle,
    unpack_bundle,
    write_bundle,
)
from edgeserve.bundle.manifest import FileEntry, Manifest, TensorSpec
from edgeserve.errors import (
    BundleError,
    ConfigError,
    ConversionError,
    EdgeServeError,
    InferenceInputError,
    ModelError,
    NotFoundError,
    StorageError,
    TransportError,
    UnavailableError,
    UnsupportedOpError,
    VerificationError,
)

__all__ = [
    "Bundle",
    "BundleError",
    "BundleLimits",
    "ConfigError",
    "ConversionError",
    "EdgeServeError",
    "FileEntry",
    "InferenceInputError",
    "Manifest",
    "ModelError",
    "NotFoundError",
    "StorageError",
    "TensorSpec",
    "TransportError",
    "UnavailableError",
    "UnsupportedOpError",
    "VerificationError",
    "__version__",
    "check_bundle",
    "open_bundle",
    "pack_bundle",
    "read_bundle",
    "unpack_bundle",
    "write_bundle",
]
