"""The in-process control API fleet sync uses: Agent.activate / health_check / set_split /
active_versions / telemetry, driven from another thread with run_threadsafe while the agent's
loop serves real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from edgeserve.agent.config import load_config
from edgeserve.agent.runner import serve
from edgeserve.agent.serving.core import Agent
from edgeserve.agent.serving.telemetry import TelemetryBuffer
from edgeserve.agent.store import ModelStore
from support.broker import free_port
from support.models import make_linear_bundle

from edgeserve.bundle import write_bundle
from edgeserve.errors import ConfigError, ModelError, NotFoundError

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


class Served:
    """An agent served by ``runner.serve`` on a thread, as ``edgeserve agent run`` does."""

    def __init__(self, state: Path, **overrides: object) -> None:
        self.port = free_port()
        self.config = load_config(
            None,
            {
                "state_dir": str(state),
                "server.port": self.port,
                "telemetry.interval_s": 0.2,
                **overrides,
            },
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready = threading.Event()
        self.agent: Agent | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("agent did not start")

    def _run(self) -> None:
        def on_ready(agent: Agent, port: int) -> None:
            self.agent = agent
            self.ready.set()

        asyncio.set_event_loop(self.loop)
        self.main = self.loop.create_task(serve(self.config, on_ready=on_ready))
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.main)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.main.cancel)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture
def served(tmp_path: Path, state_dir: Path) -> Iterator[Served]:
    store = ModelStore(state_dir)
    store.install(make_linear_bundle(tmp_path / "b2", version=2, seed=1).path, activate=False)
    s = Served(state_dir)
    yield s
    s.stop()


def test_agent_control_activate_rollback_and_health_check(served: Served) -> None:
    agent = served.agent
    assert agent is not None
    assert agent.active_versions() == {"linear": 1}
    agent.run_threadsafe(agent.health_check("linear", 2))  # not loaded: loads temporarily
    agent.run_threadsafe(agent.activate("linear", 2))
    assert agent.active_versions() == {"linear": 2}
    assert agent.store.previous_active("linear") == 1
    resp = httpx.post(f"{served.url}/v2/models/linear/infer", json=BODY)
    assert resp.json()["model_version"] == "2"
    agent.run_threadsafe(agent.health_check("linear", 2))  # loaded: runs in place
    # rollback is an activate of the previous version
    agent.run_threadsafe(agent.activate("linear", agent.store.previous_active("linear")))
    assert agent.active_versions() == {"linear": 1}
    with pytest.raises(NotFoundError):
        agent.run_threadsafe(agent.activate("linear", 9))
    with pytest.raises(NotFoundError):
        agent.run_threadsafe(agent.health_check("linear", 9))


def test_agent_control_broken_version_fails_health_and_activation(
    tmp_path: Path, served: Served
) -> None:
    agent = served.agent
    assert agent is not None
    good = make_linear_bundle(tmp_path / "src3", version=3)
    broken = write_bundle(
        tmp_path / "b3", good.manifest, {"model.onnx": (b"\x08\x01garbage", "model")}
    )
    agent.store.install(broken.path, activate=False)
    with pytest.raises(ModelError):
        agent.run_threadsafe(agent.health_check("linear", 3))
    with pytest.raises(ModelError, match="failed to load"):
        agent.run_threadsafe(agent.activate("linear", 3))
    # the old version kept serving and the store pointer was put back
    assert agent.active_versions() == {"linear": 1}
    assert agent.store.active_version("linear") == 1
    assert agent.store.previous_active("linear") is None  # both pointers as before
    assert httpx.post(f"{served.url}/v2/models/linear/infer", json=BODY).status_code == 200


def test_agent_control_split_and_telemetry(served: Served) -> None:
    agent = served.agent
    assert agent is not None
    agent.run_threadsafe(agent.set_split("linear", 1, 2, 0.5))
    with pytest.raises(ConfigError):
        agent.run_threadsafe(agent.set_split("linear", 1, 2, 1.5))
    seen = set()
    with httpx.Client() as http:
        for i in range(40):
            r = http.post(
                f"{served.url}/v2/models/linear/infer",
                json=BODY,
                headers={"x-request-key": f"user-{i}"},
            )
            seen.add(r.json()["model_version"])
    assert seen == {"1", "2"}
    agent.run_threadsafe(agent.clear_split("linear"))
    # telemetry summaries land in the buffer every telemetry.interval_s (0.2 s here)
    buffer: TelemetryBuffer = agent.telemetry
    by_version: dict[int, int] = {}
    for _ in range(50):
        records = [r for _, r in buffer.pending(1000) if r["kind"] == "summary"]
        by_version = {}
        for r in records:
            by_version[r["version"]] = by_version.get(r["version"], 0) + r["requests"]
        if sum(by_version.values()) >= 40:
            break
        threading.Event().wait(0.1)
    assert sum(by_version.values()) == 40
    assert set(by_version) == {1, 2}  # each arm is summarised separately
    sample = records[0]
    assert sample["model"] == "linear" and sample["latency_ms"]["p50"] > 0
    assert sample["batch_max"] >= 1 and sample["error_count"] == 0
    np.testing.assert_array_less(0, [sample["latency_ms"]["p99"]])


@pytest.mark.parametrize("delay_us", [0, 3000], ids=["no-delay", "queued-at-swap"])
def test_agent_control_activate_under_load_drops_nothing(
    tmp_path: Path, state_dir: Path, delay_us: int
) -> None:
    # with a queue delay, requests are always waiting on the old version when it is swapped
    ModelStore(state_dir).install(
        make_linear_bundle(tmp_path / "b2", version=2, seed=1).path, activate=False
    )
    served = Served(state_dir, **{"batching.max_queue_delay_us": delay_us})
    try:
        _swap_under_load(served)
    finally:
        served.stop()


def _swap_under_load(served: Served) -> None:
    agent = served.agent
    assert agent is not None
    stop = threading.Event()
    results: list[tuple[int, str]] = []

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            for _ in range(100_000):  # bounded; ends when the swaps are done
                if stop.is_set():
                    return
                r = http.post(f"{served.url}/v2/models/linear/infer", json=BODY)
                results.append((r.status_code, r.json().get("model_version", "")))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for version in (2, 1, 2):
            threading.Event().wait(0.2)
            agent.run_threadsafe(agent.activate("linear", version))
        threading.Event().wait(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert results and {status for status, _ in results} == {200}
    assert {v for _, v in results} == {"1", "2"}
    assert agent.loaded_versions() == {"linear": [2]}
