"""The agent's HTTP client for artifact downloads: the standard library's ``urllib``.

A device downloads only when a release arrives: one streaming GET at a time, redirects followed,
the environment's proxy settings honoured (``https_proxy``, ``no_proxy``), TLS verified against
the system's CA store. That is all
:func:`~edgeserve.agent.sync.download.download_artifact` asks of a client, and ``urllib``
does it in less memory than httpx: idle RSS of the agent after a release was installed through
fleet sync, 85.3 MB with httpx, 81.0 MB with this client (``benchmarks/agent.py --rss-only``,
x86_64). Only ``http`` and ``https`` URLs are opened (no
``file:``, ``ftp:`` or ``data:``: the opener has no handler for them, and urllib refuses a
redirect to ``file:`` itself).

:class:`HTTPClient` has the part of ``httpx.Client``'s interface the downloader uses
(``stream(method, url, headers=, timeout=)`` yielding ``status_code``, ``headers`` and
``iter_bytes()``), so the many-device simulator can pass its pooled httpx client instead.
"""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from typing import Final

from edgeserve.errors import TransportError

__all__ = ["HTTPClient", "HTTPFailure", "Response"]

_CHUNK_BYTES: Final = 1 << 16
_SCHEMES: Final = ("http://", "https://")


class HTTPFailure(Exception):
    """The network failed before or while an answer arrived (refused, reset, timeout, TLS,
    a malformed or cut HTTP answer); a retry may succeed."""


class Response:
    """A streamed answer: its status, its headers and its body in chunks as they arrive."""

    def __init__(self, status_code: int, headers: Message, body: http.client.HTTPResponse) -> None:
        self.status_code = status_code
        self.headers = headers  # case-insensitive ``get(name, default)``, like httpx's
        self._body = body

    def iter_bytes(self) -> Iterator[bytes]:
        """The body, each chunk as soon as it is read (a cut keeps every byte received).

        Raises:
            HTTPFailure: the connection failed mid-body.
        """
        while True:
            try:
                chunk = self._body.read1(_CHUNK_BYTES)
            except (http.client.HTTPException, OSError) as exc:
                raise HTTPFailure(f"reading the body: {exc}") from exc
            if not chunk:
                return
            yield chunk


def _opener() -> urllib.request.OpenerDirector:
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPRedirectHandler(),  # refuses redirects to file: and data:
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


class HTTPClient:
    """Streaming GETs over ``urllib``; thread-safe, no connection kept between requests."""

    def __init__(self) -> None:
        self._opener = _opener()
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Iterator[Response]:
        """Send the request; yield the answer whatever its status (4xx and 5xx included).

        Args:
            method: the HTTP method.
            url: an ``http://`` or ``https://`` URL.
            headers: request headers.
            timeout: seconds for the connection and for each read.

        Raises:
            RuntimeError: the client is closed.
            TransportError: not an HTTP URL, or a redirect to one (no retry can help).
            HTTPFailure: no answer (refused, timeout, TLS, a malformed answer).
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the HTTP client is closed")
        if not url.lower().startswith(_SCHEMES):
            raise TransportError(f"not an http:// or https:// URL: {url}")
        request = urllib.request.Request(url, method=method, headers=headers or {})
        try:
            answer = self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:  # an answer with an error status
            if 300 <= exc.code < 400:  # a redirect urllib would not follow (file:, ftp:, ...)
                exc.close()
                raise TransportError(f"{url}: redirect refused ({exc.reason})") from exc
            answer = exc
        except urllib.error.URLError as exc:
            raise HTTPFailure(str(exc.reason)) from exc
        except (http.client.HTTPException, OSError) as exc:
            raise HTTPFailure(str(exc) or type(exc).__name__) from exc
        try:
            yield Response(answer.getcode() or 0, answer.headers, answer)  # type: ignore[arg-type]
        finally:
            answer.close()

    def close(self) -> None:
        """Refuse further requests (nothing is pooled, so nothing else to release)."""
        with self._lock:
            self._closed = True

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
