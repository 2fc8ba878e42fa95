"""A bundle as one uncompressed ``.tar``: pack a checked directory, unpack with bounds.

Only regular files with safe relative paths are extracted, and sizes are bounded while
reading (:class:`~edgeserve.bundle.directory.BundleLimits`), so a hostile tar cannot write
outside its directory or fill the disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from edgeserve.bundle.directory import (
    CHUNK_BYTES,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Bundle,
    BundleLimits,
    check_bundle,
    read_bundle,
)
from edgeserve.bundle.manifest import check_relative_path
from edgeserve.errors import BundleError, StorageError

__all__ = ["open_bundle", "pack_bundle", "unpack_bundle"]

_DEFAULT_LIMITS: Final = BundleLimits()


def pack_bundle(directory: str | os.PathLike[str], tar_path: str | os.PathLike[str]) -> Path:
    """Write a checked bundle directory as one uncompressed ``.tar`` (atomically).

    Raises:
        BundleError: the directory is not a valid bundle.
        StorageError: the tar cannot be written.
    """
    # here, not at the top: a serving agent that installs nothing never needs them (tempfile
    # and shutil, with the bz2 and lzma modules shutil loads, cost 0.65 MB of its RSS)
    import tarfile
    import tempfile

    bundle = check_bundle(directory)
    target = Path(tar_path)
    names = [MANIFEST_NAME, *(f.path for f in bundle.manifest.files)]
    if (bundle.path / SIGNATURE_NAME).is_file():
        names.append(SIGNATURE_NAME)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    os.close(fd)
    try:
        with tarfile.open(tmp_name, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                tar.add(bundle.path / name, arcname=name, recursive=False)
        os.replace(tmp_name, target)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def unpack_bundle(
    tar_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    limits: BundleLimits = _DEFAULT_LIMITS,
    check: bool = True,
) -> Bundle:
    """Extract a bundle ``.tar`` into ``dest`` (which must not exist) and check it.

    Only regular files with safe relative paths are accepted; sizes are bounded while reading.
    ``check=False`` parses the manifest but hashes no file: for a caller whose very next step
    checks the files itself (against a signed manifest, or its own copy), so that a model is
    not hashed twice in a row.

    Raises:
        BundleError: not a tar, unsafe members, over the bounds, or an invalid bundle.
    """
    import shutil  # see pack_bundle
    import tarfile

    out = Path(dest)
    out.mkdir(parents=True)
    total = 0
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for member in tar:
                if member.isdir():
                    continue
                # a sparse member declares more bytes than the tar holds: refuse it from its
                # header rather than write its holes out as zeros
                if not member.isfile() or member.issparse():
                    raise BundleError(f"{tar_path}: member {member.name!r} is not a regular file")
                check_relative_path(member.name)
                total += member.size
                if member.size > limits.max_file_bytes or total > limits.max_total_bytes:
                    raise BundleError(f"{tar_path}: over the bundle size limit")
                target = out / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - isfile() guarantees a stream
                    raise BundleError(f"{tar_path}: cannot read {member.name!r}")
                with src, open(target, "xb") as fh:
                    shutil.copyfileobj(src, fh, CHUNK_BYTES)
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{tar_path}: not a valid bundle tar ({exc})") from exc
    except FileExistsError as exc:
        raise BundleError(f"{tar_path}: duplicate member {exc.filename}") from exc
    return check_bundle(out, limits=limits) if check else read_bundle(out, limits=limits)


@contextmanager
def open_bundle(
    path: str | os.PathLike[str], *, limits: BundleLimits = _DEFAULT_LIMITS, check: bool = True
) -> Iterator[Bundle]:
    """Yield a checked bundle from a directory or a ``.tar`` (extracted to a temp dir).

    ``check=False``: the manifest only, no file hashed (see :func:`unpack_bundle`).

    Raises:
        BundleError: not a bundle, or a check failed.
    """
    source = Path(path)
    if source.is_dir():
        yield check_bundle(source, limits=limits) if check else read_bundle(source, limits=limits)
        return
    if not source.is_file():
        raise BundleError(f"{source}: no such bundle")
    import tempfile  # see pack_bundle

    with tempfile.TemporaryDirectory(prefix="edgeserve-bundle-") as tmp:
        yield unpack_bundle(source, Path(tmp) / "bundle", limits=limits, check=check)
