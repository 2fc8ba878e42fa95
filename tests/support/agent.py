"""Start a real ``edgeserve agent run`` process on a free loopback port and wait until ready.

Usage::

    from support.agent import start_agent

    agent = start_agent(tmp_path / "state", config={"batching": {"max_batch_size": 8}})
    try:
        httpx.get(f"{agent.url}/v2/health/ready")
    finally:
        agent.stop()

``config`` is written as ``agent.toml`` (nested dicts -> TOML tables; ``[fleet]`` included);
``extra_args`` go to ``edgeserve agent run``. The process's output is kept in
``<state_dir>/agent-<port>.log`` and shown in the error when it does not become ready.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from edgeserve.bundle import Bundle, write_bundle
from edgeserve.bundle.manifest import Manifest, TensorSpec
from support.broker import free_port

__all__ = ["AgentProcess", "linear_reference", "make_fp16_bundle", "start_agent", "write_toml"]

# The console script beside the interpreter (the venv's); `python -c` keeps it importable
# even where the script is missing.
_EDGESERVE = [sys.executable, "-c", "from edgeserve.cli import main; main()"]


@dataclass
class AgentProcess:
    """A running agent process.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        port: its port.
        state_dir: its state directory.
        process: the Popen handle.
        log_path: its combined stdout/stderr.
    """

    url: str
    port: int
    state_dir: Path
    process: subprocess.Popen
    log_path: Path
    token: str | None = None
    _closed: bool = field(default=False, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header when a token is configured."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def log(self) -> str:
        """What the process printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout`` s); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL (``kill -9``) and reap."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/v2/health/ready`` until 200.

        Raises:
            RuntimeError: the process exited or did not become ready in time (with its log).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"agent exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"agent not ready after {timeout} s:\n{self.log()}")

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_toml(path: Path, config: Mapping[str, Any]) -> Path:
    """Write a nested mapping as TOML (enough for agent.toml: scalars, lists, tables)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, Mapping):
            return "{" + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + "}"
        escaped = str(v).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'

    def table(prefix: str, mapping: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in mapping.items() if not _is_table(v)}
        if prefix and (scalars or not mapping):
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f'"{k}" = {value(v)}')
        for k, v in mapping.items():
            if _is_table(v):
                table(f'{prefix}."{k}"' if prefix else f'"{k}"', v)

    table("", config)
    path.write_text("\n".join(lines) + "\n")
    return path


def _is_table(v: Any) -> bool:
    """A mapping of only scalars is written inline (``labels = {stable = 1}``); others are
    tables."""
    if not isinstance(v, Mapping):
        return False
    return (
        not v
        or any(isinstance(x, Mapping) for x in v.values())
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in v.values())
    )


def start_agent(
    state_dir: Path,
    port: int | None = None,
    config: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    *,
    wait: bool = True,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> AgentProcess:
    """Start ``edgeserve agent run --state state_dir`` on 127.0.0.1.

    Args:
        state_dir: the agent's state directory (created).
        port: a port, or None for a free one.
        config: written to ``<state_dir>/agent.toml`` and passed with ``--config``.
        extra_args: more ``agent run`` arguments.
        wait: wait for ``/v2/health/ready``.
        timeout: seconds to wait for readiness.
        env: extra environment variables.

    Returns:
        The running process; call ``.stop()`` (or use it as a context manager).
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [*_EDGESERVE, "agent", "run", "--state", str(state_dir), "--port", str(port)]
    token = None
    if config:
        cfg = dict(config)
        token = (cfg.get("server") or {}).get("token") or None
        args += ["--config", str(write_toml(state_dir / "agent.toml", cfg))]
    args += list(extra_args)
    if "--token" in extra_args:
        token = extra_args[list(extra_args).index("--token") + 1]
    log_path = state_dir / f"agent-{port}.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed when the process is reaped
    proc_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=proc_env)
    log_file.close()
    agent = AgentProcess(f"http://127.0.0.1:{port}", port, state_dir, process, log_path, token)
    if wait:
        agent.wait_ready(timeout)
    return agent


def linear_reference(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """What ``make_linear_bundle(seed=seed)`` computes, in numpy: softmax(x @ W + b)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    logits = x.astype(np.float32) @ w + b
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def make_fp16_bundle(directory: Path, name: str = "half", version: int = 1) -> Bundle:
    """An ONNX model y = 2 * x on FP16 tensors [-1, 4] (for the binary FP16 path)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 4])],
        [numpy_helper.from_array(np.array(2, dtype=np.float16), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory.parent / f".{name}.onnx"
    directory.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    manifest = Manifest(
        name=name,
        version=version,
        format="onnx",
        precision="fp16",
        target="onnx-cpu-fp16",
        providers=("CPUExecutionProvider",),
        inputs=(TensorSpec("x", "FP16", (-1, 4)),),
        outputs=(TensorSpec("y", "FP16", (-1, 4)),),
    )
    return write_bundle(directory, manifest, {"model.onnx": (path, "model")})
