"""The core's public API is deliberate: pin what ``edgeserve`` exports."""

from __future__ import annotations

import edgeserve


def test_all_exports_exist_and_are_pinned() -> None:
    assert sorted(edgeserve.__all__) == sorted(
        [
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
    )
    for name in edgeserve.__all__:
        assert hasattr(edgeserve, name), name


def test_errors_share_one_root() -> None:
    for name in edgeserve.__all__:
        obj = getattr(edgeserve, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, edgeserve.EdgeServeError), name
