"""edgeserve: take a trained model from a laptop to a fleet of edge devices and keep it serving.

The core, which every component uses and which imports none of them:

- ``bundle``: what the converter writes and a device runs: the manifest, the bundle directory
  and its ``.tar`` form, the sample file with reference outputs;
- ``runtimes``: ONNX Runtime and TFLite behind one interface; ``datatypes`` maps tensor types;
- ``trust``: keys, the root-signed keyring, release and fleet signatures over bundles and
  documents;
- ``protocol``: the fleet wire protocol, sans I/O (topics, desired and reported documents,
  the install state machine); ``mqtt`` moves its bytes;
- ``tables``: the typed TOML loader every config file uses; ``devices``: device profiles;
  ``fsutil``: durable writes; ``errors``: the one exception tree;
- ``cli``, ``bundle_cli``, ``keys_cli``: the ``edgeserve`` command and its core groups.

A release travels bundle -> trust (signed) -> protocol (desired state over mqtt) -> the
device, which verifies it with trust and runs it with runtimes. The components live in
``edgeserve.converter``, ``edgeserve.agent``, ``edgeserve.fleet_server`` and
``edgeserve.quickstart``; this module re-exports the core's public API.
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
