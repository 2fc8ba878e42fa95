"""A small real HTTP artifact server on 127.0.0.1 with Range support and fault injection,
standing in for the fleet server's artifact endpoint in sync tests."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Fault:
    """What to do wrong for one path.

    Attributes:
        cut_after: close the connection after this many body bytes (once per request).
        cut_times: how many requests get cut (then serve normally).
        extra: bytes appended past the real body (endless data), with no Content-Length.
        ignore_range: answer 200 with the whole body even when a Range is asked.
        status: answer this status instead (e.g. 503), ``status_times`` times.
        rate: send at most this many body bytes per second (a slow link), ``rate_times``
            requests.
        redirect: answer 302 with this ``Location`` instead.
    """

    cut_after: int | None = None
    cut_times: int = 1
    extra: int = 0
    ignore_range: bool = False
    status: int | None = None
    status_times: int = 1
    rate: int | None = None
    rate_times: int = 1
    redirect: str | None = None


@dataclass
class ArtifactServer:
    """Serves ``files`` (path -> bytes). ``requests`` logs (path, Range header or None)."""

    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def start(self) -> ArtifactServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                owner.requests.append((path, rng))
                body = owner.files.get(path)
                fault = owner.faults.get(path, Fault())
                if body is None:
                    self.send_error(404)
                    return
                if fault.redirect is not None:
                    self.send_response(302)
                    self.send_header("Location", fault.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault.status is not None and fault.status_times > 0:
                    fault.status_times -= 1
                    self.send_response(fault.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if match and not fault.ignore_range:
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                if fault.extra:
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(chunk + b"\0" * fault.extra)
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if fault.cut_after is not None and fault.cut_times > 0:
                    fault.cut_times -= 1
                    self.wfile.write(chunk[: fault.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if fault.rate is not None and fault.rate_times > 0:
                    fault.rate_times -= 1
                    step = max(1, fault.rate // 20)
                    try:
                        for i in range(0, len(chunk), step):
                            self.wfile.write(chunk[i : i + step])
                            self.wfile.flush()
                            time.sleep(0.05)
                    except OSError:  # the client went away (killed)
                        self.close_connection = True
                    return
                self.wfile.write(chunk)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
