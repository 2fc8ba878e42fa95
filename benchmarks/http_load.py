"""Load for the agent benchmarks: wrk with a Lua body script, a raw keep-alive HTTP/1.1 client,
and the bodies of OIP binary and gRPC requests."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import numpy as np


class HttpClient:
    """A minimal keep-alive HTTP/1.1 client on a raw socket: the least client-side work for a
    like-for-like latency comparison with the gRPC client (both Python, both in this process)."""

    def __init__(self, port: int, request: bytes) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._request = request

    def call(self) -> None:
        self._sock.sendall(self._request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self._sock.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        while len(rest) < length:
            rest += self._sock.recv(65536)

    def latency(self, seconds: float) -> dict[str, float]:
        for _ in range(200):
            self.call()
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            self.call()
            times.append((time.perf_counter() - t0) * 1000)
        return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}

    def close(self) -> None:
        self._sock.close()


def grpc_payload(model: str, x: np.ndarray) -> bytes:
    """A serialized ModelInferRequest with ``x`` in raw_input_contents."""
    from edgeserve.agent.grpc import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    return request.SerializeToString()


def binary_header(x: np.ndarray) -> bytes:
    """The JSON header of an OIP v2 binary request with ``x`` as input ``x`` and ``y`` asked
    for as binary (the tensor bytes follow it; ``Inference-Header-Content-Length`` is its size)."""
    import json

    return json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()


def lua_script(body_path: Path, headers: dict[str, str], path: Path) -> Path:
    lines = [
        'wrk.method = "POST"',
        f'local f = io.open("{body_path}", "rb")',
        'wrk.body = f:read("*all")',
        "f:close()",
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ms(value: str) -> float:
    match = re.match(r"([0-9.]+)(us|ms|s)", value)
    if not match:
        return float("nan")
    number, unit = float(match.group(1)), match.group(2)
    return number / 1000 if unit == "us" else number * 1000 if unit == "s" else number


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, float]:
    threads = 1 if connections < 8 else 2
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))}
    for pct in ("50", "99"):
        result[f"p{pct}"] = _ms(re.search(rf"\s{pct}%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result
