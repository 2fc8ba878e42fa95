"""Resumable, size-capped, hash-checked artifact downloads over HTTP.

A download goes to ``<dir>/<sha256>.part`` and is renamed to ``<sha256>.tar`` only once its
length and sha256 match the (fleet-signed) artifact, so a ``kill -9`` leaves a ``.part`` that the
next attempt resumes with an HTTP Range request (RFC 9110 section 14.2; a server that ignores
Range answers 200 and we start over). Bytes beyond ``artifact.size`` abort the download at once
(:class:`~edgeserve.trust.EndlessDataError`); the hash is computed while streaming.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from edgeserve.agent.sync.http_client import HTTPClient, HTTPFailure

from edgeserve.errors import StorageError, TransportError
from edgeserve.protocol import Artifact
from edgeserve.trust import DigestMismatchError, EndlessDataError

if TYPE_CHECKING:
    import httpx

__all__ = ["DownloadLimits", "download_artifact"]

log = logging.getLogger(__name__)
_RETRYABLE_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class DownloadLimits:
    """Bounds for one download.

    Attributes:
        max_bytes: refuse artifacts larger than this (whatever the desired state says).
        retries: attempts in total, each resuming where the last stopped.
        backoff_s / backoff_max_s: retry delay, doubled per attempt, with jitter.
        timeout_s: connect and read timeout per request.
    """

    max_bytes: int = 2 * 1024**3  # bytes
    retries: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    timeout_s: float = 30.0


def download_artifact(
    client: httpx.Client | HTTPClient,
    artifact: Artifact,
    directory: Path,
    limits: DownloadLimits = DownloadLimits(),
    *,
    sleep: Callable[[float], None] = time.sleep,
    cancel: threading.Event | None = None,
) -> Path:
    """Download ``artifact`` into ``directory``; return the verified ``.tar`` path.

    Raises:
        EndlessDataError: the artifact is over ``limits.max_bytes`` or the server sends more
            than ``artifact.size`` bytes.
        DigestMismatchError: the complete download hashes differently (arbitrary artifact).
        TransportError: the server kept failing, answered 4xx, or ``cancel`` was set (the
            ``.part`` file stays for the next attempt).
        StorageError: the local disk failed.
    """
    if artifact.size > limits.max_bytes:
        raise EndlessDataError(
            f"artifact of {artifact.size} bytes is over the {limits.max_bytes} byte limit"
        )
    final = directory / f"{artifact.sha256}.tar"
    part = directory / f"{artifact.sha256}.part"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if final.is_file() and final.stat().st_size == artifact.size:
            return final  # named by its hash, written only after the hash matched
    except OSError as exc:
        raise StorageError(f"cannot use {directory}: {exc.strerror or exc}") from exc
    progress = _Progress()
    last: Exception | None = None
    for attempt in range(limits.retries):
        if attempt:
            delay = min(limits.backoff_s * 2 ** (attempt - 1), limits.backoff_max_s)
            sleep(delay * (0.5 + random.random()))
        try:
            if _fetch(client, artifact, part, limits, progress, cancel):
                break
        except _retryable() as exc:
            last = exc
            log.info("download %s: attempt %d failed: %s", artifact.url, attempt + 1, exc)
            continue
    else:
        raise TransportError(
            f"download {artifact.url}: gave up after {limits.retries} attempts: {last}"
        )
    digest = progress.digest(part, artifact.size)
    if digest != artifact.sha256:
        part.unlink(missing_ok=True)
        raise DigestMismatchError(
            f"artifact {artifact.url}: sha256 {digest[:16]}... is not the signed "
            f"{artifact.sha256[:16]}..."
        )
    try:
        os.replace(part, final)
    except OSError as exc:
        raise StorageError(f"cannot write {final}: {exc.strerror or exc}") from exc
    return final


class _Retry(Exception):
    """A retryable HTTP answer (5xx, 429, a short body)."""


def _retryable() -> tuple[type[Exception], ...]:
    """What a retry may cure: a retryable answer, or the client's network failures (the
    agent's :class:`HTTPClient`, or httpx's when a caller, like the simulator, passes one)."""
    httpx = sys.modules.get("httpx")
    return (_Retry, HTTPFailure) + ((httpx.TransportError,) if httpx is not None else ())


class _Progress:
    """The running sha256 of ``part``'s first ``length`` bytes, so the hash is computed while
    streaming; a resumed download hashes the bytes it already has once, then continues."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.length = 0

    def catch_up(self, part: Path, offset: int) -> None:
        if self.length == offset:
            return
        self.hasher, self.length = hashlib.sha256(), 0
        if offset:
            with open(part, "rb") as fh:
                while self.length < offset:
                    chunk = fh.read(min(1 << 20, offset - self.length))
                    if not chunk:
                        break
                    self.hasher.update(chunk)
                    self.length += len(chunk)

    def digest(self, part: Path, size: int) -> str:
        try:
            self.catch_up(part, size)
        except OSError as exc:
            raise StorageError(f"cannot read {part}: {exc.strerror or exc}") from exc
        return self.hasher.hexdigest()


def _fetch(
    client: httpx.Client | HTTPClient,
    artifact: Artifact,
    part: Path,
    limits: DownloadLimits,
    progress: _Progress,
    cancel: threading.Event | None,
) -> bool:
    """One request; True when ``part`` holds exactly ``artifact.size`` bytes."""
    offset = part.stat().st_size if part.exists() else 0
    if offset > artifact.size:
        part.unlink()
        offset = 0
    if offset == artifact.size:
        return True
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with client.stream("GET", artifact.url, headers=headers, timeout=limits.timeout_s) as resp:
        if resp.status_code in _RETRYABLE_STATUS:
            raise _Retry(f"HTTP {resp.status_code}")
        if resp.status_code == 416:  # our range starts past the end: start over
            part.unlink(missing_ok=True)
            raise _Retry("HTTP 416")
        if resp.status_code == 206 and offset:
            if not resp.headers.get("content-range", "").startswith(f"bytes {offset}-"):
                part.unlink(missing_ok=True)
                raise _Retry("Content-Range does not match the requested range")
            mode = "ab"
        elif resp.status_code == 200:
            offset, mode = 0, "wb"  # the server ignored Range: start over
        else:
            raise TransportError(f"download {artifact.url}: HTTP {resp.status_code}")
        try:
            progress.catch_up(part, offset)
        except OSError as exc:
            raise StorageError(f"cannot read {part}: {exc.strerror or exc}") from exc
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and offset + int(declared) > artifact.size:
            raise EndlessDataError(
                f"artifact {artifact.url}: server announces {offset + int(declared)} bytes, "
                f"the signed size is {artifact.size}"
            )
        try:
            with open(part, mode) as fh:
                for chunk in resp.iter_bytes():  # as received: a cut keeps every byte so far
                    offset += len(chunk)
                    if offset > artifact.size:
                        fh.close()
                        part.unlink(missing_ok=True)
                        raise EndlessDataError(
                            f"artifact {artifact.url}: more than the signed {artifact.size} bytes"
                        )
                    fh.write(chunk)
                    progress.hasher.update(chunk)
                    if cancel is not None and cancel.is_set():
                        progress.length += len(chunk)
                        raise TransportError(f"download {artifact.url}: cancelled")
                    progress.length += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise StorageError(f"cannot write {part}: {exc.strerror or exc}") from exc
    if offset < artifact.size:
        raise _Retry(f"short body: {offset} of {artifact.size} bytes")
    return True
