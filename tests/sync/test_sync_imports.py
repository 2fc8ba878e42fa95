"""Fleet sync imports what it uses when it uses it: no HTTP client (httpx) until a download
starts, and never httpx's command-line client (rich, pygments) in the agent."""

from __future__ import annotations

import subprocess
import sys

import pytest
from edgeserve.agent.sync.http_client import LazyClient


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


def test_lazy_client_loads_httpx_without_its_command_line_client() -> None:
    out = _python(
        "import sys\n"
        "from edgeserve.agent.sync.http_client import LazyClient\n"
        "client = LazyClient()\n"
        "before = 'httpx' in sys.modules\n"
        "try:\n"
        "    with client.stream('GET', 'http://127.0.0.1:9/') as resp:\n"
        "        pass\n"
        "except Exception as exc:\n"
        "    kind = type(exc).__name__\n"
        "client.close()\n"
        "print(before, kind, 'rich' in sys.modules, 'pygments' in sys.modules,"
        " 'httpx._main' in sys.modules)"
    )
    # a real request was attempted (refused: nothing listens on port 9)
    assert out == "False ConnectError False False False"


def test_lazy_client_refuses_requests_once_closed() -> None:
    client = LazyClient()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.stream("GET", "http://127.0.0.1:9/")
