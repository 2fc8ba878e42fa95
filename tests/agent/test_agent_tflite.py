"""A TFLite model served by a real agent (LiteRT interpreter), batch dimension resized."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from edgeserve.agent.store import ModelStore
from support.agent import start_agent

from edgeserve.bundle import Bundle, write_bundle
from edgeserve.bundle.manifest import Manifest, TensorSpec

RNG = np.random.default_rng(3)
W = RNG.standard_normal((4, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)


def _reference(x: np.ndarray) -> np.ndarray:
    return np.tanh(x @ W + B)


@pytest.fixture(scope="module")
def tflite_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """y = tanh(x @ W + b) converted with TensorFlow (imported only here)."""
    import tensorflow as tf  # the `convert-tf` extra (in `dev`/`all`); only this fixture

    root = tmp_path_factory.mktemp("tflite")

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def model(x):  # type: ignore[no-untyped-def]
        return {"y": tf.tanh(tf.matmul(x, tf.constant(W)) + tf.constant(B))}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.get_concrete_function()], model
    )
    path = root / "model.tflite"
    path.write_bytes(converter.convert())
    manifest = Manifest(
        name="tiny",
        version=1,
        format="tflite",
        precision="fp32",
        target="tflite-fp32",
        providers=(),
        inputs=(TensorSpec("x", "FP32", (-1, 4)),),
        outputs=(TensorSpec("y", "FP32", (-1, 3)),),
    )
    return write_bundle(root / "bundle", manifest, {"model.tflite": (path, "model")})


def test_agent_tflite_serves_json_binary_and_batches(tmp_path: Path, tflite_bundle: Bundle) -> None:
    state = tmp_path / "state"
    ModelStore(state).install(tflite_bundle.path)
    config = {"batching": {"max_queue_delay_us": 1000}, "runtime": {"threads": 1}}
    with start_agent(state, config=config) as agent:
        meta = httpx.get(f"{agent.url}/v2/models/tiny").json()
        assert meta["platform"] == "tensorflow_lite"
        client = httpclient.InferenceServerClient(agent.url.removeprefix("http://"))
        try:
            for rows, binary in ((1, False), (3, True), (7, False)):
                x = RNG.standard_normal((rows, 4)).astype(np.float32)
                inp = httpclient.InferInput("x", [rows, 4], "FP32")
                inp.set_data_from_numpy(x, binary_data=binary)
                out = httpclient.InferRequestedOutput("y", binary_data=binary)
                y = client.infer("tiny", [inp], outputs=[out]).as_numpy("y")
                np.testing.assert_allclose(y, _reference(x), rtol=1e-5, atol=1e-6)
        finally:
            client.close()

        async def burst() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                xs = [RNG.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(24)]
                bodies = [
                    {
                        "inputs": [
                            {
                                "name": "x",
                                "shape": list(x.shape),
                                "datatype": "FP32",
                                "data": x.ravel().tolist(),
                            }
                        ]
                    }
                    for x in xs
                ]
                resps = await asyncio.gather(
                    *(http.post(f"{agent.url}/v2/models/tiny/infer", json=b) for b in bodies)
                )
                for x, r in zip(xs, resps, strict=True):
                    out = r.json()["outputs"][0]
                    got = np.reshape(out["data"], out["shape"])
                    np.testing.assert_allclose(got, _reference(x), rtol=1e-5, atol=1e-6)

        asyncio.run(burst())
