"""Edge bundles: a model, its manifest and the files that travel with it to a device.

Modules, in the order a converted model becomes something a device can check and run:

- ``manifest``: :class:`Manifest` (``manifest.json``): what the model is, how it was made,
  which files make it up; strict parsing and the canonical JSON that gets signed.
- ``sample``: the ``sample`` file's format, inputs for warm-up and health checks and the
  reference outputs recorded at conversion, with their tolerance.
- ``directory``: a bundle directory: written atomically, read with bounds, every file checked
  against the manifest.
- ``archive``: the same bundle as one ``.tar``, packed and unpacked with bounds.

This ``__init__`` re-exports the public API; ``edgeserve bundle`` is
:mod:`edgeserve.bundle_cli`, signatures are :mod:`edgeserve.trust`.
"""

from __future__ import annotations

from edgeserve.bundle.archive import open_bundle, pack_bundle, unpack_bundle
from edgeserve.bundle.directory import (
    LABELS_MAX_BYTES,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Bundle,
    BundleLimits,
    check_bundle,
    file_sha256,
    read_bundle,
    read_labels,
    write_bundle,
)
from edgeserve.bundle.manifest import FileEntry, Manifest, TensorSpec

__all__ = [
    "LABELS_MAX_BYTES",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "Bundle",
    "BundleLimits",
    "FileEntry",
    "Manifest",
    "TensorSpec",
    "check_bundle",
    "file_sha256",
    "open_bundle",
    "pack_bundle",
    "read_bundle",
    "read_labels",
    "unpack_bundle",
    "write_bundle",
]
