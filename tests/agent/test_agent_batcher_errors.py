"""The batcher's failure modes are exception types, and metrics name them by type."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from edgeserve.agent.serving.batcher import Batcher, RunFn
from edgeserve.agent.serving.loaded import _reason

from edgeserve.errors import (
    DeadlineExceededError,
    InferenceInputError,
    ModelError,
    ModelUnloadingError,
    NotReadyError,
    QueueFullError,
    UnavailableError,
)


def _batcher(run: RunFn, executor: ThreadPoolExecutor, **overrides: int) -> Batcher:
    settings = {
        "max_batch_size": 8,
        "max_queue_delay_us": 0,
        "max_queue_size": 8,
        "timeout_ms": 5000,
        "instances": 1,
    }
    settings.update(overrides)
    return Batcher(run, executor, batching=True, **settings)


def _feeds(value: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 2), value, dtype=np.float32)}


def test_batcher_full_queue_raises_queue_full_error() -> None:
    gate = threading.Event()

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate.wait(5)
        return {"y": feeds["x"]}

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = _batcher(run, pool, max_queue_size=1)
            running = asyncio.ensure_future(batcher.submit(_feeds(1), 1))
            await asyncio.sleep(0.05)  # executing: the queue is empty again
            queued = asyncio.ensure_future(batcher.submit(_feeds(2), 1))
            await asyncio.sleep(0)
            with pytest.raises(QueueFullError, match="queue full"):
                await batcher.submit(_feeds(3), 1)
            gate.set()
            await asyncio.gather(running, queued)

    asyncio.run(main())


def test_batcher_request_past_its_deadline_raises_deadline_exceeded_error() -> None:
    gate = threading.Event()

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate.wait(5)
        return {"y": feeds["x"]}

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = _batcher(run, pool)
            running = asyncio.ensure_future(batcher.submit(_feeds(1), 1))
            await asyncio.sleep(0.02)
            with pytest.raises(DeadlineExceededError, match="timed out after 50 ms"):
                await batcher.submit(_feeds(2), 1, timeout_s=0.05)
            gate.set()
            await running

    asyncio.run(main())


def test_batcher_closed_raises_model_unloading_error() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = _batcher(lambda feeds: {"y": feeds["x"]}, pool)
            batcher.closed = True
            with pytest.raises(ModelUnloadingError, match="unloading"):
                await batcher.submit(_feeds(1), 1)

    asyncio.run(main())


def test_batcher_one_bad_request_fails_alone_and_the_rest_get_their_rows() -> None:
    gate = threading.Event()

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate.wait(5)
        if (feeds["x"] < 0).any():
            raise ModelError("negative input")
        return {"y": feeds["x"] * 2}

    async def main() -> list[object]:
        with ThreadPoolExecutor(1) as pool:
            batcher = _batcher(run, pool)
            first = asyncio.ensure_future(batcher.submit(_feeds(0), 1))
            await asyncio.sleep(0.02)
            rest = [asyncio.ensure_future(batcher.submit(_feeds(v), 1)) for v in (1, -1, 3)]
            await asyncio.sleep(0.02)
            gate.set()
            return await asyncio.gather(first, *rest, return_exceptions=True)

    zero, one, bad, three = asyncio.run(main())
    assert isinstance(bad, InferenceInputError) and "negative input" in str(bad)
    for result, value in ((zero, 0), (one, 1), (three, 3)):
        assert not isinstance(result, BaseException), result
        np.testing.assert_array_equal(result.outputs["y"], _feeds(value * 2)["x"])  # type: ignore[attr-defined]
        assert result.queue_s >= 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (InferenceInputError("x"), "bad_input"),
        (QueueFullError("x"), "queue_full"),
        (DeadlineExceededError("x"), "timeout"),
        (ModelUnloadingError("x"), "unavailable"),
        (NotReadyError("x"), "unavailable"),
        (UnavailableError("queue full, timed out"), "unavailable"),  # the text means nothing
        (ModelError("x"), "model_error"),
    ],
)
def test_failure_reason_follows_the_error_type(exc: Exception, reason: str) -> None:
    assert _reason(exc) == reason  # type: ignore[arg-type]


_UNAVAILABLE = ("QueueFullError", "DeadlineExceededError", "ModelUnloadingError", "NotReadyError",
                "NotStartedError")  # fmt: skip


def test_every_unavailable_failure_mode_is_503_and_grpc_unavailable() -> None:
    # in a process of its own: tritonclient's stubs, imported by other test modules, register
    # the same protobuf package name in the default descriptor pool as the agent's
    code = (
        "import edgeserve.errors as e\n"
        "from edgeserve.agent.grpc.service import status_code\n"
        f"for name in {_UNAVAILABLE!r}:\n"
        "    exc = getattr(e, name)('x')\n"
        "    print(name, exc.http_status, status_code(exc).name)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:-1] == [f"{n} 503 UNAVAILABLE" for n in _UNAVAILABLE]
