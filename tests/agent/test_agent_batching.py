"""Dynamic batching over real HTTP: every request gets its own rows; limits answer 503."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import numpy as np
from edgeserve.agent.store import ModelStore
from support.agent import linear_reference, start_agent
from support.models import make_onnx_linear

from edgeserve.bundle import write_bundle
from edgeserve.bundle.manifest import Manifest, TensorSpec


def _body(x: np.ndarray) -> dict:
    return {
        "inputs": [
            {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }


def _metric(text: str, name: str, version: str = "1") -> float:
    pattern = rf'^{name}{{model="linear",version="{version}"}} ([0-9.e+]+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_agent_batching_32_concurrent_clients_each_get_their_rows(state_dir: Path) -> None:
    config = {"batching": {"max_batch_size": 16, "max_queue_delay_us": 2000}}
    with start_agent(state_dir, config=config) as agent:

        async def client(i: int, http: httpx.AsyncClient) -> int:
            rng = np.random.default_rng(i)
            checked = 0
            for _ in range(8):
                x = rng.standard_normal((int(rng.integers(1, 4)), 4)).astype(np.float32)
                resp = await http.post(f"{agent.url}/v2/models/linear/infer", json=_body(x))
                assert resp.status_code == 200, resp.text
                out = resp.json()["outputs"][0]
                assert out["shape"] == [x.shape[0], 3]
                got = np.reshape(out["data"], out["shape"])
                np.testing.assert_allclose(got, linear_reference(x), rtol=1e-5, atol=1e-7)
                checked += 1
            return checked

        async def main() -> list[int]:
            limits = httpx.Limits(max_connections=32)
            async with httpx.AsyncClient(limits=limits, timeout=30) as http:
                return await asyncio.gather(*(client(i, http) for i in range(32)))

        assert sum(asyncio.run(main())) == 32 * 8
        metrics = httpx.get(f"{agent.url}/metrics").text
        requests = _metric(metrics, "edgeserve_inference_request_success_total")
        executions = _metric(metrics, "edgeserve_inference_exec_count_total")
        rows = _metric(metrics, "edgeserve_inference_count_total")
        assert requests == 32 * 8
        assert executions < requests  # requests were batched together
        assert rows > requests  # rows, not requests, are counted as inferences


def test_agent_batching_queue_full_and_timeout_are_503(state_dir: Path) -> None:
    config = {
        "batching": {
            "max_batch_size": 64,
            "max_queue_delay_us": 1_500_000,
            "max_queue_size": 1,
            "timeout_ms": 5000,
        },
    }
    x = np.ones((1, 4), np.float32)
    with start_agent(state_dir, config=config) as agent:

        async def main() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as http:
                first = asyncio.create_task(
                    http.post(f"{agent.url}/v2/models/linear/infer", json=_body(x))
                )
                await asyncio.sleep(0.3)  # the first one now waits in the queue
                second = await http.post(f"{agent.url}/v2/models/linear/infer", json=_body(x))
                return await first, second

        first, second = asyncio.run(main())
        assert first.status_code == 200
        assert second.status_code == 503 and "queue full" in second.json()["error"]
        metrics = httpx.get(f"{agent.url}/metrics").text
        assert 'reason="queue_full"' in metrics

    config["batching"].update(max_queue_size=8, timeout_ms=200)
    with start_agent(state_dir, config=config) as agent:
        started = time.monotonic()
        resp = httpx.post(f"{agent.url}/v2/models/linear/infer", json=_body(x), timeout=30)
        assert resp.status_code == 503 and "timed out after 200 ms" in resp.json()["error"]
        assert time.monotonic() - started < 1.4


def test_agent_batching_is_off_without_a_batch_dimension(tmp_path: Path) -> None:
    model = make_onnx_linear(tmp_path / "fixed.onnx")
    manifest = Manifest(
        name="fixed",
        version=1,
        format="onnx",
        precision="fp32",
        target="onnx-cpu-fp32",
        providers=("CPUExecutionProvider",),
        inputs=(TensorSpec("x", "FP32", (1, 4)),),
        outputs=(TensorSpec("y", "FP32", (1, 3)),),
    )
    bundle = write_bundle(tmp_path / "fixed", manifest, {"model.onnx": (model, "model")})
    state = tmp_path / "state"
    ModelStore(state).install(bundle.path)
    with start_agent(state) as agent:
        config = httpx.get(f"{agent.url}/v2/models/fixed/config").json()
        # Triton's config for a model without a batch dimension: full dims, no batcher
        assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
        assert config["input"][0]["dims"] == [1, 4]

        async def main() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as http:
                xs = [np.full((1, 4), i, np.float32) for i in range(16)]
                resps = await asyncio.gather(
                    *(http.post(f"{agent.url}/v2/models/fixed/infer", json=_body(x)) for x in xs)
                )
                for x, r in zip(xs, resps, strict=True):
                    got = np.reshape(r.json()["outputs"][0]["data"], (1, 3))
                    np.testing.assert_allclose(got, linear_reference(x), rtol=1e-5)
                return resps

        assert all(r.status_code == 200 for r in asyncio.run(main()))
        two = httpx.post(f"{agent.url}/v2/models/fixed/infer", json=_body(np.ones((2, 4))))
        assert two.status_code == 400


def _slow_bundle(directory: Path) -> Path:
    """A model that takes a while: 60 chained 256x256 MatMuls with Tanh."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(60):
        inits.append(
            numpy_helper.from_array(
                (rng.standard_normal((256, 256)) / 16).astype(np.float32), f"w{i}"
            )
        )
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]))
        prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 256])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory.parent / "slow.onnx"
    onnx.save(model, str(path))
    manifest = Manifest(
        name="slow",
        version=1,
        format="onnx",
        precision="fp32",
        target="onnx-cpu-fp32",
        providers=("CPUExecutionProvider",),
        inputs=(TensorSpec("x", "FP32", (-1, 256)),),
        outputs=(TensorSpec("y", "FP32", (-1, 256)),),
    )
    return write_bundle(directory, manifest, {"model.onnx": (path, "model")}).path


def test_agent_batching_a_slow_request_does_not_block_others(
    tmp_path: Path, state_dir: Path
) -> None:
    ModelStore(state_dir).install(_slow_bundle(tmp_path / "slow"))
    config = {"batching": {"max_batch_size": 4096}, "runtime": {"workers": 2, "threads": 1}}
    with start_agent(state_dir, config=config) as agent:
        big = np.ones((4096, 256), np.float32)

        async def main() -> tuple[float, list[float]]:
            async with httpx.AsyncClient(timeout=60) as http:
                t0 = time.monotonic()
                slow = asyncio.create_task(
                    http.post(f"{agent.url}/v2/models/slow/infer", json=_body(big))
                )
                await asyncio.sleep(0.05)
                fast_done = []
                while not slow.done() and len(fast_done) < 20:
                    r = await http.post(
                        f"{agent.url}/v2/models/linear/infer", json=_body(np.ones((1, 4)))
                    )
                    assert r.status_code == 200
                    fast_done.append(time.monotonic() - t0)
                resp = await slow
                assert resp.status_code == 200
                return time.monotonic() - t0, fast_done

        slow_time, fast_times = asyncio.run(main())
        assert len(fast_times) >= 5, (slow_time, fast_times)
        assert all(t < slow_time for t in fast_times)


def test_agent_batching_sigterm_lets_queued_requests_finish(state_dir: Path) -> None:
    config = {"batching": {"max_batch_size": 64, "max_queue_delay_us": 800_000}}
    agent = start_agent(state_dir, config=config)
    try:

        async def main() -> httpx.Response:
            async with httpx.AsyncClient(timeout=30) as http:
                pending = asyncio.create_task(
                    http.post(f"{agent.url}/v2/models/linear/infer", json=_body(np.ones((1, 4))))
                )
                await asyncio.sleep(0.3)  # queued, waiting for company
                agent.process.terminate()
                return await pending

        assert asyncio.run(main()).status_code == 200
        assert agent.process.wait(10) == 0
    finally:
        agent.stop()


def test_agent_batching_per_request_timeout_parameter(state_dir: Path) -> None:
    config = {"batching": {"max_batch_size": 64, "max_queue_delay_us": 1_000_000}}
    with start_agent(state_dir, config=config) as agent:
        body = _body(np.ones((1, 4), np.float32))
        body["parameters"] = {"timeout": 100_000}  # µs, as Triton's timeout parameter
        started = time.monotonic()
        resp = httpx.post(f"{agent.url}/v2/models/linear/infer", json=body, timeout=30)
        assert resp.status_code == 503 and "timed out after 100 ms" in resp.json()["error"]
        assert time.monotonic() - started < 0.9
        body["parameters"] = {"timeout": "soon"}
        bad = httpx.post(f"{agent.url}/v2/models/linear/infer", json=body, timeout=30)
        assert bad.status_code == 400 and "parameters.timeout" in bad.json()["error"]


def _two_input_bundle(directory: Path) -> Path:
    """y = a * b on two [-1, 4] inputs."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "b"], ["y"])],
        "mul",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory.parent / "mul.onnx"
    onnx.save(model, str(path))
    manifest = Manifest(
        name="mul",
        version=1,
        format="onnx",
        precision="fp32",
        target="onnx-cpu-fp32",
        providers=("CPUExecutionProvider",),
        inputs=(TensorSpec("a", "FP32", (-1, 4)), TensorSpec("b", "FP32", (-1, 4))),
        outputs=(TensorSpec("y", "FP32", (-1, 4)),),
    )
    return write_bundle(directory, manifest, {"model.onnx": (path, "model")}).path


def test_agent_batching_two_inputs_rows_must_agree(tmp_path: Path, state_dir: Path) -> None:
    ModelStore(state_dir).install(_two_input_bundle(tmp_path / "mul"))

    def body(a: np.ndarray, b: np.ndarray) -> dict:
        return {
            "inputs": [
                {
                    "name": "a",
                    "shape": list(a.shape),
                    "datatype": "FP32",
                    "data": a.ravel().tolist(),
                },
                {
                    "name": "b",
                    "shape": list(b.shape),
                    "datatype": "FP32",
                    "data": b.ravel().tolist(),
                },
            ]
        }

    config = {"batching": {"max_queue_delay_us": 3000}}
    with start_agent(state_dir, config=config) as agent:
        url = f"{agent.url}/v2/models/mul/infer"
        bad = httpx.post(url, json=body(np.ones((2, 4)), np.ones((3, 4))))
        assert bad.status_code == 400 and "different batch sizes [2, 3]" in bad.json()["error"]

        async def main() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                rng = np.random.default_rng(0)
                pairs = [
                    (
                        rng.standard_normal((n, 4)).astype(np.float32),
                        rng.standard_normal((n, 4)).astype(np.float32),
                    )
                    for n in [1, 2, 3] * 8
                ]
                resps = await asyncio.gather(*(http.post(url, json=body(a, b)) for a, b in pairs))
                for (a, b), r in zip(pairs, resps, strict=True):
                    out = r.json()["outputs"][0]
                    np.testing.assert_allclose(
                        np.reshape(out["data"], out["shape"]), a * b, rtol=1e-6
                    )

        asyncio.run(main())
