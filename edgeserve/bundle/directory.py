"""A bundle directory: write atomically, read with bounds, check every file against the manifest.

A bundle is a directory holding ``manifest.json``, the files it lists and, once released,
``signature.json`` (the signed envelope, see :mod:`edgeserve.trust`); its one-file ``.tar``
form is :mod:`edgeserve.bundle.archive`.

Every size read from an untrusted bundle is bounded (:class:`BundleLimits`) and enforced while
streaming.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from edgeserve.bundle.manifest import MANIFEST_MAX_BYTES, FileEntry, Manifest, check_relative_path
from edgeserve.errors import BundleError, StorageError

__all__ = [
    "CHUNK_BYTES",
    "LABELS_MAX_BYTES",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "Bundle",
    "BundleLimits",
    "check_bundle",
    "file_sha256",
    "read_bundle",
    "read_labels",
    "write_bundle",
]

MANIFEST_NAME: Final = "manifest.json"
SIGNATURE_NAME: Final = "signature.json"
CHUNK_BYTES: Final = 1 << 20  # bytes read per hashing step
LABELS_MAX_BYTES: Final = 4 * 1024 * 1024  # bytes; bound of a ``labels`` file


@dataclass(frozen=True)
class BundleLimits:
    """Upper bounds for an untrusted bundle.

    Attributes:
        max_total_bytes: all files together.
        max_file_bytes: any one file.
        max_manifest_bytes: ``manifest.json``.
    """

    max_total_bytes: int = 4 * 1024**3  # bytes
    max_file_bytes: int = 2 * 1024**3  # bytes
    max_manifest_bytes: int = MANIFEST_MAX_BYTES  # bytes


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its parsed manifest (not necessarily checked; see check_bundle)."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        """Absolute path of the model file."""
        return self.path / self.manifest.model_file.path

    def file_path(self, role: str) -> Path | None:
        """Path of the first file with ``role`` (``sample``, ``labels``), or None."""
        entry = self.manifest.file(role)
        return None if entry is None else self.path / entry.path


def file_sha256(path: Path, *, max_bytes: int | None = None) -> tuple[str, int]:
    """Stream a file and return ``(sha256 hex, size in bytes)``.

    Raises:
        BundleError: the file grows past ``max_bytes`` while being read (endless data).
        StorageError: the file cannot be read.
    """
    # Imported here, not at the top: importing hashlib sets up OpenSSL's digests (0.7 MB of
    # RSS), and a serving agent hashes nothing (its store checked every file on install).
    import hashlib

    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK_BYTES):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise BundleError(f"{path.name}: more than {max_bytes} bytes")
                digest.update(chunk)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest(), size


def _read_manifest(directory: Path, limits: BundleLimits) -> Manifest:
    path = directory / MANIFEST_NAME
    try:
        with open(path, "rb") as fh:
            data = fh.read(limits.max_manifest_bytes + 1)
    except FileNotFoundError:
        raise BundleError(f"{directory}: no {MANIFEST_NAME}; not a bundle") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory") from None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > limits.max_manifest_bytes:
        raise BundleError(f"{path}: over the {limits.max_manifest_bytes} byte limit")
    return Manifest.from_json(data)


def read_bundle(path: str | os.PathLike[str], *, limits: BundleLimits = BundleLimits()) -> Bundle:
    """Read and validate the manifest of a bundle directory. Files are not hashed.

    Raises:
        BundleError: not a bundle directory, or its manifest is invalid.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise BundleError(f"{directory}: not a bundle directory")
    return Bundle(directory, _read_manifest(directory, limits))


def check_bundle(path: str | os.PathLike[str], *, limits: BundleLimits = BundleLimits()) -> Bundle:
    """Check a bundle directory completely: manifest schema, every file's size and sha256,
    no symlinks, no unlisted files, the size bounds.

    Returns:
        The bundle, when every check passed.

    Raises:
        BundleError: the first class of problem found; the message lists every bad file.
    """
    bundle = read_bundle(path, limits=limits)
    manifest = bundle.manifest
    if not manifest.files:
        raise BundleError(f"{bundle.path}: manifest lists no files")
    total = sum(f.size for f in manifest.files)
    if total > limits.max_total_bytes:
        raise BundleError(
            f"{bundle.path}: {total} bytes is over the {limits.max_total_bytes} limit"
        )
    problems: list[str] = []
    for entry in manifest.files:
        file = bundle.path / entry.path
        if file.is_symlink() or not file.is_file():
            problems.append(f"{entry.path}: missing or not a regular file")
            continue
        if entry.size > limits.max_file_bytes:
            problems.append(f"{entry.path}: {entry.size} bytes is over the file limit")
            continue
        try:
            digest, size = file_sha256(file, max_bytes=entry.size)
        except BundleError:
            problems.append(f"{entry.path}: longer than the {entry.size} bytes listed")
            continue
        if size != entry.size:
            problems.append(f"{entry.path}: {size} bytes, manifest says {entry.size}")
        elif digest != entry.sha256:
            problems.append(f"{entry.path}: sha256 mismatch")
    listed = {f.path for f in manifest.files} | {MANIFEST_NAME, SIGNATURE_NAME}
    for found in sorted(_walk_files(bundle.path)):
        if found not in listed:
            problems.append(f"{found}: not listed in the manifest")
    if problems:
        raise BundleError(f"{bundle.path}: " + "; ".join(problems))
    return bundle


def read_labels(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class labels from a ``labels`` file: UTF-8, one label per line, in class-index order
    (the format of Triton's ``label_filename``); a trailing newline adds no label.

    Raises:
        BundleError: missing, over :data:`LABELS_MAX_BYTES`, not UTF-8, or empty.
    """
    path = Path(path)
    try:
        if path.stat().st_size > LABELS_MAX_BYTES:
            raise BundleError(f"labels file {path.name} is over {LABELS_MAX_BYTES} bytes")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"labels file {path.name} is not UTF-8") from None
    except OSError as exc:
        raise BundleError(f"cannot read labels file {path}: {exc.strerror or exc}") from exc
    labels = tuple(line.rstrip("\r") for line in text.split("\n"))
    if labels and labels[-1] == "":
        labels = labels[:-1]
    if not labels:
        raise BundleError(f"labels file {path.name} is empty")
    return labels


def _walk_files(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            yield (rel / name).as_posix()


def write_bundle(
    output: str | os.PathLike[str],
    manifest: Manifest,
    files: Mapping[str, tuple[Path | bytes, str]],
    *,
    overwrite: bool = False,
) -> Bundle:
    """Write a bundle directory atomically: a temp directory beside ``output``, then a rename.

    Args:
        output: the bundle directory to create.
        manifest: everything but ``files``, which is computed here.
        files: bundle-relative path -> (source file or bytes, role).
        overwrite: replace an existing ``output``.

    Returns:
        The written bundle.

    Raises:
        BundleError: bad paths or an invalid manifest.
        StorageError: the output exists (without ``overwrite``) or cannot be written.
    """
    # here, not at the top: a serving agent writes no bundle (see archive.pack_bundle)
    import shutil
    import tempfile

    out = Path(output)
    if out.exists() and not overwrite:
        raise StorageError(f"{out}: already exists (use --force to replace it)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise StorageError(f"cannot write to {out.parent}: {exc.strerror or exc}") from exc
    try:
        entries = []
        for rel, (source, role) in files.items():
            check_relative_path(rel)
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                dest.write_bytes(source)
            else:
                shutil.copyfile(source, dest)
            digest, size = file_sha256(dest)
            entries.append(FileEntry(path=rel, sha256=digest, size=size, role=role))
        final = replace(manifest, files=tuple(entries))
        _write_file_synced(tmp / MANIFEST_NAME, _pretty_json(final))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(f"cannot write bundle {out}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle(out, final)


def _pretty_json(manifest: Manifest) -> bytes:
    import json

    return (
        json.dumps(manifest.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
    ).encode()


def _write_file_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
