"""The agent's HTTP client for artifact downloads: httpx, imported and connected on first use.

An agent following a fleet downloads only when a new release arrives, so the client (and httpx
itself) is made when the first download starts, not when fleet sync starts.

httpx imports its command-line client at import time when its optional dependencies are
installed (``httpx/__init__.py``: ``from ._main import main``), and they are: ``rich`` is a core
dependency of this project and brings ``pygments``. Measured in the agent process
(``benchmarks/agent.py``): +6.2 MB RSS for ``import httpx`` that way, +1.2 MB without the
command-line client, which the agent never runs. :func:`load_httpx` makes that import fail the
way httpx expects when the extras are missing, so httpx keeps its stub ``main``.
"""

from __future__ import annotations

import importlib
import sys
import threading
from contextlib import AbstractContextManager
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["LazyClient", "load_httpx"]


def load_httpx() -> ModuleType:
    """``import httpx`` without its command-line client (rich, pygments).

    Returns:
        The httpx module.
    """
    if "httpx" not in sys.modules:
        # a None entry makes `from ._main import main` raise ImportError (the import system's
        # documented behaviour), which httpx catches; the entry is removed right after
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
        try:
            importlib.import_module("httpx")
        finally:
            if sys.modules.get("httpx._main", 0) is None:
                del sys.modules["httpx._main"]
    return sys.modules["httpx"]


class LazyClient:
    """An ``httpx.Client(follow_redirects=True)`` made on the first request (thread-safe).

    Only the methods the downloader uses: :meth:`stream` and :meth:`close`.
    """

    def __init__(self) -> None:
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _get(self) -> httpx.Client:
        with self._lock:
            if self._closed:
                raise RuntimeError("the HTTP client is closed")
            if self._client is None:
                self._client = load_httpx().Client(follow_redirects=True)
            return self._client

    def stream(
        self, method: str, url: str, **kwargs: Any
    ) -> AbstractContextManager[httpx.Response]:
        """``httpx.Client.stream``.

        Args:
            method: the HTTP method.
            url: the URL.
            **kwargs: passed to httpx (headers, timeout, ...).

        Returns:
            httpx's streaming response context manager.
        """
        return self._get().stream(method, url, **kwargs)

    def close(self) -> None:
        """Close the underlying client, if one was made."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()
