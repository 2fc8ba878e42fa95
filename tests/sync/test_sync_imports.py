"""Fleet sync imports what it uses: downloads go through the standard library, so httpx (and
its command-line client's rich and pygments) never load in the agent, before or after one."""

from __future__ import annotations

import subprocess
import sys

import pytest
from edgeserve.agent.sync.http_client import HTTPClient


def _python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_sync_imports_no_http_client_before_a_download() -> None:
    out = _python(
        "import sys\n"
        "import edgeserve.agent.runner, edgeserve.agent.sync, edgeserve.agent.sync.device\n"
        "print(sorted(m for m in ('httpx', 'rich', 'pygments', 'bcrypt') if m in sys.modules))"
    )
    assert out == "[]"


def test_http_client_requests_without_httpx() -> None:
    out = _python(
        "import sys\n"
        "from edgeserve.agent.sync.http_client import HTTPClient\n"
        "client = HTTPClient()\n"
        "try:\n"
        "    with client.stream('GET', 'http://127.0.0.1:9/') as resp:\n"
        "        pass\n"
        "except Exception as exc:\n"
        "    kind = type(exc).__name__\n"
        "client.close()\n"
        "print(kind, [m for m in ('httpx', 'rich', 'pygments') if m in sys.modules])"
    )
    # a real request was attempted (refused: nothing listens on port 9)
    assert out == "HTTPFailure []"


def test_http_client_refuses_requests_once_closed() -> None:
    client = HTTPClient()
    client.close()
    with pytest.raises(RuntimeError, match="closed"), client.stream("GET", "http://127.0.0.1:9/"):
        pass
