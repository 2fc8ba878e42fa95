"""The local model store: ``<state>/models/<name>/<version>/`` with atomic install and activation.

Layout::

    <state>/models/.lock                  flock held while the store is changed
    <state>/models/<name>/<version>/      an installed, checked bundle (immutable)
    <state>/models/<name>/state.json      {"active": N, "previous": M, "labels": {...}}
    <state>/models/<name>/.install-*      a copy in progress (removed by :meth:`recover`)

Crash safety (temp in the same directory, fsync, ``os.replace``): an install copies the bundle
into a temp directory beside its final place, fsyncs every file, checks the copy's hashes, then
renames it into place; activation rewrites ``state.json`` the same way. A ``kill -9`` at any
point therefore leaves either the old or the new state, never a half-written version or pointer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeserve.agent.names import is_label, is_model_name

from edgeserve.bundle import MANIFEST_NAME, Bundle, check_bundle, open_bundle, read_bundle
from edgeserve.bundle.manifest import Manifest
from edgeserve.errors import BundleError, ConfigError, NotFoundError, StorageError
from edgeserve.fsutil import fsync_path, write_atomic

__all__ = ["InstalledVersion", "ModelStore"]

_STATE = "state.json"
_TMP_PREFIXES = (".install-", ".trash-", ".state-")


@dataclass(frozen=True)
class InstalledVersion:
    """One installed model version.

    Attributes:
        name: model name.
        version: version number.
        path: the version's directory in the store.
        manifest: its manifest.
        copied: False when :meth:`ModelStore.install` found this version already installed
            and the given bundle identical to it (checked file by file), so nothing was copied.
    """

    name: str
    version: int
    path: Path
    manifest: Manifest
    copied: bool = True


class ModelStore:
    """Installed model versions and which one is active, on disk under ``state_dir``.

    Safe to use from several threads and several processes (changes hold an ``flock``).
    """

    def __init__(self, state_dir: Path) -> None:
        """Open (and create) the store under ``state_dir``.

        Raises:
            StorageError: the directory cannot be created.
        """
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "models"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {self.root}: {exc.strerror or exc}") from exc
        self._thread_lock = threading.RLock()

    # -- locking ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the store lock: a thread lock plus an ``flock`` for other processes."""
        with self._thread_lock:
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock; a killed process releases it too

    # -- queries ---------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of models with at least one installed version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and self.versions(p.name)
        )

    def versions(self, name: str) -> list[int]:
        """Installed versions of ``name``, ascending ([] for an unknown model)."""
        if not is_model_name(name):  # never a path from text that is not a model name
            return []
        directory = self.root / name
        if not directory.is_dir():
            return []
        found = []
        for entry in directory.iterdir():
            if entry.name.isdigit() and (entry / MANIFEST_NAME).is_file():
                found.append(int(entry.name))
        return sorted(found)

    def active_version(self, name: str) -> int | None:
        """The active version of ``name``, or None when none is active."""
        active = self._read_state(name).get("active")
        return active if isinstance(active, int) and active in self.versions(name) else None

    def previous_active(self, name: str) -> int | None:
        """The version that was active before the current one (the rollback target), or None."""
        previous = self._read_state(name).get("previous")
        return previous if isinstance(previous, int) and previous in self.versions(name) else None

    def labels(self, name: str) -> dict[str, int]:
        """Labels (``stable``, ``canary``) -> version kept in the store for ``name``."""
        labels = self._read_state(name).get("labels", {})
        return {k: v for k, v in labels.items() if isinstance(v, int)}

    def get(self, name: str, version: int) -> InstalledVersion:
        """An installed version.

        Raises:
            NotFoundError: it is not installed.
        """
        path = self.path(name, version)
        try:
            bundle = read_bundle(path)
        except BundleError:
            raise NotFoundError(f"model {name!r} version {version} is not installed") from None
        return InstalledVersion(name, version, path, bundle.manifest)

    def bundle(self, name: str, version: int) -> Bundle:
        """The installed version as a :class:`~edgeserve.bundle.Bundle` (manifest read, not
        re-hashed: it was checked on install)."""
        item = self.get(name, version)
        return Bundle(item.path, item.manifest)

    def path(self, name: str, version: int) -> Path:
        """Directory of a version (whether or not it exists)."""
        if not is_model_name(name):
            raise NotFoundError(f"model {name[:128]!r} is not installed (not a model name)")
        return self.root / name / str(int(version))

    # -- changes ---------------------------------------------------------------------------

    def install(self, bundle: Path, *, activate: bool = True) -> InstalledVersion:
        """Check a bundle (directory or ``.tar``) and add it to the store.

        The copy is checked (every file's size and sha256) before it is renamed into place,
        so a version is visible only once complete. For a version that is already installed
        the given bundle is checked in full (every file against its manifest) and compared
        with the installed one: identical, nothing is copied (``copied=False``, then activated
        if asked); corrupt or different, it is refused and the store is left as it was.

        Args:
            bundle: bundle directory or ``.tar``.
            activate: make it the active version once installed.

        Returns:
            The installed version.

        Raises:
            BundleError: the bundle is invalid, or this version is installed with other
                contents.
            StorageError: the disk failed.
        """
        # The source is not hashed here: _copy_in checks the store's own copy, which is what
        # will be served, and catches everything a check of the source would.
        with open_bundle(bundle, check=False) as source, self._locked():
            manifest = source.manifest
            final = self.path(manifest.name, manifest.version)
            copied = not (final / MANIFEST_NAME).is_file()
            if copied:
                self._copy_in(source, final)
            else:
                # Nothing will be copied, so nothing else would read the given files: check
                # them here, or a corrupt copy of an installed version would pass as installed.
                check_bundle(source.path)
                existing = read_bundle(final).manifest
                if existing.to_dict() != manifest.to_dict():
                    raise BundleError(
                        f"{manifest.name} version {manifest.version} is already installed "
                        "with different contents; versions are immutable, use a new number"
                    )
            installed = InstalledVersion(
                manifest.name, manifest.version, final, manifest, copied=copied
            )
            if activate:
                self._activate_locked(manifest.name, manifest.version)
            return installed

    def _copy_in(self, source: Bundle, final: Path) -> None:
        # shutil here and below, not at the top: its import (with the bz2 and lzma modules it
        # loads) is 0.6 MB of RSS that an agent which only serves never needs
        import shutil

        parent = final.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = parent / f".install-{final.name}-{os.getpid()}-{threading.get_ident()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            names = [MANIFEST_NAME, *(f.path for f in source.manifest.files)]
            signature = source.path / "signature.json"
            if signature.is_file():
                names.append("signature.json")
            for rel in names:
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source.path / rel, dest)
                fsync_path(dest)
            try:
                check_bundle(tmp)  # the copy is what will be served: it must be intact
            except BundleError as exc:  # name the bundle the user gave, not our temp copy
                raise BundleError(f"{source.path}: {str(exc).removeprefix(f'{tmp}: ')}") from None
            fsync_path(tmp)
            os.replace(tmp, final)
            fsync_path(parent)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _storage(exc, f"cannot install into {parent}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def activate(self, name: str, version: int) -> None:
        """Make ``version`` the active version of ``name`` (atomic pointer swap on disk).

        The previously active version is remembered for :meth:`previous_active`. A running
        agent notices the change (same process: :meth:`Agent.activate` also hot-swaps at once;
        other processes: within ``poll_interval_s``).

        Raises:
            NotFoundError: the version is not installed.
        """
        with self._locked():
            self._activate_locked(name, version)

    def _activate_locked(self, name: str, version: int) -> None:
        if version not in self.versions(name):
            raise NotFoundError(f"model {name!r} version {version} is not installed")
        state = self._read_state(name)
        if state.get("active") != version:
            state["previous"] = state.get("active")
            state["active"] = version
            self._write_state(name, state)

    def restore(self, name: str, active: int | None, previous: int | None) -> None:
        """Put both pointers back as they were (undoes an activation whose version failed).

        Raises:
            NotFoundError: ``active`` is not installed.
        """
        with self._locked():
            if active is not None and active not in self.versions(name):
                raise NotFoundError(f"model {name!r} version {active} is not installed")
            state = self._read_state(name)
            state["active"], state["previous"] = active, previous
            self._write_state(name, state)

    def set_label(self, name: str, label: str, version: int | None) -> None:
        """Point ``label`` at ``version`` (None removes the label).

        Raises:
            NotFoundError: the version is not installed.
            ConfigError: the label is not a simple word.
        """
        if not is_label(label):
            raise ConfigError(
                f"bad label {label[:64]!r}: at most 64 letters, digits, '-' or '_', not a number"
            )
        with self._locked():
            if version is not None and version not in self.versions(name):
                raise NotFoundError(f"model {name!r} version {version} is not installed")
            state = self._read_state(name)
            labels = dict(state.get("labels", {}))
            if version is None:
                labels.pop(label, None)
            else:
                labels[label] = version
            state["labels"] = labels
            self._write_state(name, state)

    def remove(self, name: str, version: int) -> None:
        """Delete an installed version that is not active.

        Raises:
            NotFoundError: not installed.
            ConfigError: it is the active version (activate another one first).
        """
        with self._locked():
            if version not in self.versions(name):
                raise NotFoundError(f"model {name!r} version {version} is not installed")
            if self._read_state(name).get("active") == version:
                raise ConfigError(
                    f"model {name!r} version {version} is active; activate another version first"
                )
            path = self.path(name, version)
            trash = path.parent / f".trash-{version}-{os.getpid()}"
            import shutil

            try:
                os.replace(path, trash)  # disappears atomically, then is deleted
                fsync_path(path.parent)
                shutil.rmtree(trash, ignore_errors=True)
            except OSError as exc:
                raise _storage(exc, f"cannot remove {path}") from exc

    def recover(self) -> list[Path]:
        """Remove leftovers of killed installs, removals and state writes.

        Returns:
            The paths removed.
        """
        removed: list[Path] = []
        with self._locked():
            for model_dir in self.root.iterdir() if self.root.is_dir() else []:
                if not model_dir.is_dir() or model_dir.name.startswith("."):
                    continue
                for entry in model_dir.iterdir():
                    if entry.name.startswith(_TMP_PREFIXES):
                        if entry.is_dir():
                            import shutil

                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink(missing_ok=True)
                        removed.append(entry)
        return removed

    def state_signature(self) -> tuple[tuple[str, float, int], ...]:
        """A cheap fingerprint of the store (names, state mtimes, version counts) that changes
        whenever another process installs, activates or removes something."""
        out = []
        if self.root.is_dir():
            for model_dir in sorted(self.root.iterdir()):
                if not model_dir.is_dir() or model_dir.name.startswith("."):
                    continue
                try:
                    mtime = (model_dir / _STATE).stat().st_mtime_ns
                except OSError:
                    mtime = 0
                out.append((model_dir.name, mtime, model_dir.stat().st_mtime_ns))
        return tuple(out)

    # -- state file ------------------------------------------------------------------------

    def _read_state(self, name: str) -> dict:
        if not is_model_name(name):
            return {}
        try:
            data = json.loads((self.root / name / _STATE).read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # os.replace makes a torn state file impossible; an unreadable one is corruption
            raise StorageError(f"{self.root / name / _STATE}: unreadable store state") from None
        return data if isinstance(data, dict) else {}

    def _write_state(self, name: str, state: dict) -> None:
        # the rename must be on disk before an activation is reported done: sync the directory
        write_atomic(
            self.root / name / _STATE, json.dumps(state, sort_keys=True).encode(), sync_dir=True
        )


def _storage(exc: OSError, what: str) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"{what}: disk full")
    return StorageError(f"{what}: {exc.strerror or exc}")
