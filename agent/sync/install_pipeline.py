"""One model install, from a verified desired target to a terminal state (the steps of
:mod:`edgeserve.protocol.states`' table), for :class:`~.device.DeviceSync`.

Nothing reaches the store before the release signature (pure check, before any byte is
downloaded), the artifact's length and sha256 (while streaming) and every file against the
signed manifest passed. Failure before activation leaves the old version serving; a failed
health check after activation activates the previous version again (ROLLED_BACK).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edgeserve.agent.sync.agent_adapter import Installer
from edgeserve.agent.sync.download import DownloadLimits, download_artifact

from edgeserve.bundle import unpack_bundle
from edgeserve.bundle.manifest import Manifest
from edgeserve.errors import BundleError, EdgeServeError, StorageError, TransportError
from edgeserve.protocol import Artifact, InstallEvent, InstallMachine, InstallState, ModelTarget
from edgeserve.trust import (
    DigestMismatchError,
    Keyring,
    VerificationError,
    reason_code,
    verify_bundle_files,
    verify_release,
)

if TYPE_CHECKING:
    import httpx
    from edgeserve.agent.sync.http_client import HTTPClient

__all__ = ["InstallPipeline", "Outcome"]

log = logging.getLogger(__name__)
S = InstallState
E = InstallEvent
Outcome = tuple[InstallState, "str | None", "str | None"]  # (state, error, reason_code)


class InstallPipeline:
    """Downloads, verifies, installs, activates and health-checks one model's target.

    Args:
        installer: the store and runtime.
        http: the shared HTTP client.
        limits: download bounds.
        downloads: where ``.part``/``.tar`` files and unpacked bundles live.
        clock_slack_s: tolerated clock error for expiry checks.
        server_url: resolves artifact URLs given as ``/paths``.
        cancel: set to abort a running download (the device is stopping).
        keep_previous: after a successful install, remove versions other than the active
            one, the one it replaced and the split arms (False: keep everything).
    """

    def __init__(
        self,
        installer: Installer,
        http: httpx.Client | HTTPClient,
        limits: DownloadLimits,
        downloads: Path,
        *,
        clock_slack_s: float = 0.0,
        server_url: str = "",
        cancel: threading.Event | None = None,
        keep_previous: bool = True,
    ) -> None:
        self.keep_previous = keep_previous
        self.server_url = server_url
        self.cancel = cancel
        self.installer = installer
        self.http = http
        self.limits = limits
        self.downloads = downloads
        self.clock_slack_s = clock_slack_s
        # called with (name, version, previous) just before a version replaces another, so
        # the owner can persist that an unchecked activation is under way
        self.on_activating: Callable[[str, int, int], None] | None = None

    def run(
        self,
        name: str,
        target: ModelTarget,
        m: InstallMachine,
        *,
        active: int | None,
        keyring: Keyring | None,
        now: datetime,
    ) -> Outcome:
        """Take one model from a terminal state through the install to a terminal state.

        Args:
            name: the model.
            target: what the desired state asks for.
            m: the model's state machine (advanced here, from a terminal state).
            active: the version serving now (rollback check, health-check fallback).
            keyring: the trusted keyring.
            now: reference time for expiry checks.

        Returns:
            ``(state, error, reason_code)``: ACTIVE, FAILED, REJECTED or ROLLED_BACK.
        """
        if not m.state.terminal:  # an attempt that died mid-way (machine from a past run)
            m.handle(E.ERROR)
        m.handle(E.START)
        try:
            if keyring is None:
                raise VerificationError("no trusted keyring")
            wanted = [(target.version, target.artifact, target.release)]
            if target.split is not None:
                sp = target.split
                wanted.append((sp.b_version, sp.b_artifact, sp.b_release))
            parts = [
                (
                    version,
                    artifact,
                    verify_release(
                        release,
                        keyring,
                        now=now,
                        installed_version=active,
                        allow_downgrade=target.allow_downgrade,
                        expected_name=name,
                        expected_version=version,
                        clock_slack_s=self.clock_slack_s,
                    ),
                )
                for version, artifact, release in wanted
            ]
            staged = [self._fetch(name, v, art, man) for v, art, man in parts]
            m.handle(E.DOWNLOADED)
            for bundle_dir in staged:
                if bundle_dir is not None:
                    verify_bundle_files(bundle_dir, _manifest_of(parts, bundle_dir))
            m.handle(E.VERIFIED)
            for bundle_dir in staged:
                if bundle_dir is not None:
                    self.installer.install(bundle_dir)
                    shutil.rmtree(bundle_dir, ignore_errors=True)
            m.handle(E.STORED)
            self._cleanup_downloads()
            return self._activate(name, target, m, active)
        except Exception as exc:
            return self._failed(name, target, m, exc)

    def _failed(self, name: str, target: ModelTarget, m: InstallMachine, exc: Exception) -> Outcome:
        """End the install from whatever state it is in (every state has an error transition):
        REJECTED for a trust or bundle check, FAILED (retryable) for anything else."""
        stage = m.state.value
        if isinstance(exc, BundleError):  # VerificationError included
            m.handle(E.REJECT)
            self._cleanup_downloads()
            code = reason_code(exc) if isinstance(exc, VerificationError) else "bad_bundle"
            return S.REJECTED, str(exc)[:500], code
        if isinstance(exc, (TransportError, StorageError)):
            code = "download" if isinstance(exc, TransportError) else "storage"
            message = str(exc)
        elif isinstance(exc, EdgeServeError):
            code, message = "install", str(exc)
        else:  # a bug or an unexpected library error: keep the old version, say so
            log.exception("fleet sync: installing %s v%s failed in %s", name, target.version, stage)
            code, message = "internal", f"internal error in {stage}: {exc}"
        m.handle(E.ERROR)
        return S.FAILED, message[:500], code

    def _activate(
        self, name: str, target: ModelTarget, m: InstallMachine, active: int | None
    ) -> Outcome:
        if active is None:
            # Nothing to roll back to: check the first version before it serves anything.
            try:
                self.installer.health_check(name, target.version)
            except Exception as exc:
                m.handle(E.ERROR)
                return S.FAILED, f"health check failed: {exc}"[:500], "health_check"
        if active is not None and active != target.version and self.on_activating is not None:
            self.on_activating(name, target.version, active)
        try:
            self.installer.activate(name, target.version)
        except Exception as exc:  # the installer keeps the old version serving
            m.handle(E.ERROR)
            return S.FAILED, f"activation failed: {exc}"[:500], "activation"
        failed = self._check_or_roll_back(name, target, m, active)
        if failed is not None:
            return failed
        sp = target.split
        try:
            if sp is not None:
                self.installer.set_split(
                    name, sp.a_version, sp.b_version, sp.weight_b, target.experiment
                )
            elif self.installer.current_split(name) is not None:
                self.installer.clear_split(name)
        except Exception as exc:
            m.handle(E.ERROR)
            return S.FAILED, f"split failed: {exc}"[:500], "split"
        m.handle(E.HEALTHY)
        # bound the disk: keep what serves, the rollback target and the split arms; after an
        # operator-signed downgrade (a revert) the version left behind was rejected, so it is
        # not kept as a rollback target
        rejected = target.allow_downgrade and active is not None and active > target.version
        previous = [] if active is None or rejected else [active]
        self.prune(name, target, {target.version, *previous})
        return S.ACTIVE, None, None

    def prune(self, name: str, target: ModelTarget, keep: set[int]) -> None:
        """With ``prune = true``, remove installed versions of ``name`` outside ``keep`` and
        the target's split arms (a failure is logged: pruning never fails an install)."""
        if not self.keep_previous:
            return
        if target.split is not None:
            keep = keep | {target.split.a_version, target.split.b_version}
        try:
            removed = self.installer.prune(name, keep)
            if removed:
                log.info("fleet sync: removed %s versions %s", name, removed)
        except Exception:
            log.exception("fleet sync: pruning %s failed", name)

    def _check_or_roll_back(
        self, name: str, target: ModelTarget, m: InstallMachine, active: int | None
    ) -> Outcome | None:
        """Health-check the activated version(s); on failure activate ``active`` again.
        None when healthy."""
        try:
            self.installer.health_check(name, target.version)
            if target.split is not None:
                self.installer.health_check(name, target.split.b_version)
        except Exception as exc:
            if active is not None and active != target.version:
                try:
                    self.installer.activate(name, active)
                except Exception:
                    log.exception("fleet sync: rollback of %s to v%s failed", name, active)
                m.handle(E.ROLL_BACK)
                return S.ROLLED_BACK, f"health check failed: {exc}"[:500], "health_check"
            m.handle(E.ERROR)  # re-installing the active version failed its check
            return S.FAILED, f"health check failed: {exc}"[:500], "health_check"
        return None

    def recheck(self, name: str, target: ModelTarget, previous: int, m: InstallMachine) -> Outcome:
        """Finish an activation the agent died in: ``target.version`` is active but was never
        health-checked. Check it now; on failure activate ``previous`` again.

        Args:
            name: the model.
            target: the desired target whose version is active, unchecked.
            previous: the version it replaced (the rollback target).
            m: the model's state machine, in WARMING.

        Returns:
            ``(ACTIVE, None, None)`` or ``(ROLLED_BACK | FAILED, error, "health_check")``.
        """
        try:
            failed = self._check_or_roll_back(name, target, m, previous)
        except Exception as exc:
            return self._failed(name, target, m, exc)
        if failed is not None:
            return failed
        m.handle(E.HEALTHY)
        return S.ACTIVE, None, None

    def split_ok(self, name: str, target: ModelTarget) -> bool:
        """True when the installer's A/B split of ``name`` is what ``target`` asks for."""
        current = self.installer.current_split(name)
        if target.split is None:
            return current is None
        sp = target.split
        return current == (sp.a_version, sp.b_version, sp.weight_b)

    def _fetch(
        self, name: str, version: int, artifact: Artifact, manifest: Manifest
    ) -> Path | None:
        """Download and unpack one version; None when it is already installed."""
        if version in self.installer.installed_versions(name):
            return None
        if artifact.url.startswith("/"):
            if not self.server_url:
                raise TransportError(f"artifact path {artifact.url} but no [fleet] server_url")
            artifact = replace(artifact, url=self.server_url.rstrip("/") + artifact.url)
        tar = download_artifact(
            self.http, artifact, self.downloads, self.limits, cancel=self.cancel
        )
        dest = self.downloads / f"unpack-{artifact.sha256[:16]}"
        shutil.rmtree(dest, ignore_errors=True)
        try:
            # files are checked once, against the signed manifest, in the VERIFYING step
            bundle = unpack_bundle(tar, dest, check=False)
        except BundleError as exc:
            # the tar matched the signed artifact hash yet is not a sound bundle: its content
            # is not what the release key signed (arbitrary artifact)
            raise DigestMismatchError(f"artifact is not the signed bundle: {exc}") from exc
        finally:
            tar.unlink(missing_ok=True)
        return bundle.path

    def _cleanup_downloads(self) -> None:
        for entry in self.downloads.glob("unpack-*") if self.downloads.is_dir() else []:
            shutil.rmtree(entry, ignore_errors=True)


def _manifest_of(parts: list[tuple[int, Artifact, Manifest]], bundle_dir: Path) -> Manifest:
    for _version, artifact, manifest in parts:
        if bundle_dir.name == f"unpack-{artifact.sha256[:16]}":
            return manifest
    raise BundleError(f"{bundle_dir}: not one of this install's bundles")  # pragma: no cover
