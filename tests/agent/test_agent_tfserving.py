"""TF Serving clients against a TFLite bundle converted from a SavedModel: the metadata API
shows the signature's names, and a columnar request by those names is served.

The SavedModel's ``serving_default`` takes ``pixels`` (FP32 [-1, 4]) and ``scale`` (INT32
[-1, 1]) and returns ``probs`` and ``scaled``; TFLite names its tensors
``serving_default_pixels:0`` and ``StatefulPartitionedCall:0``, which clients never see.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from edgeserve.agent.store import ModelStore
from support.agent import start_agent
from support.converter import invoke_convert

from edgeserve.bundle import check_bundle, read_bundle
from edgeserve.bundle.manifest import TensorSpec
from edgeserve.runtimes import load_runtime

pytestmark = pytest.mark.slow  # TensorFlow import and a TFLite conversion

W = np.random.default_rng(5).standard_normal((4, 3)).astype(np.float32)


def _reference(pixels: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    logits = pixels @ W
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return {"probs": e / e.sum(axis=-1, keepdims=True), "scaled": scale * 3}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tensorflow as tf  # the convert-tf extra; only this fixture

    root = tmp_path_factory.mktemp("tfserving")

    class Model(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 4], tf.float32, name="pixels"),
                tf.TensorSpec([None, 1], tf.int32, name="scale"),
            ]
        )
        def serve(self, pixels, scale):  # type: ignore[no-untyped-def]
            return {"probs": tf.nn.softmax(tf.matmul(pixels, W)), "scaled": scale * 3}

    module = Model()
    saved = root / "saved"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    out = root / "bundle"
    result = invoke_convert(saved, "-t", "tflite-fp32", "--name", "sig", "-o", out)
    assert result.exit_code == 0, result.stderr
    return out


def test_agent_tfserving_metadata_and_predict_by_signature_names(
    bundle_dir: Path, tmp_path: Path
) -> None:
    manifest = check_bundle(bundle_dir).manifest
    assert sorted(s.name for s in manifest.inputs) == ["pixels", "scale"]
    assert sorted(s.name for s in manifest.outputs) == ["probs", "scaled"]
    state = tmp_path / "state"
    ModelStore(state).install(bundle_dir)
    pixels = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    scale = np.array([[1], [-2]], dtype=np.int32)
    want = _reference(pixels, scale)
    with start_agent(state) as agent:
        url = agent.url
        for path in ("sig", "sig/versions/1"):
            meta = httpx.get(f"{url}/v1/models/{path}/metadata")
            assert meta.status_code == 200, meta.text
            doc = meta.json()
            assert doc["model_spec"] == {"name": "sig", "signature_name": "", "version": "1"}
            sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
            assert sig["method_name"] == "tensorflow/serving/predict"
            assert set(sig["inputs"]) == {"pixels", "scale"}
            assert sig["inputs"]["pixels"]["dtype"] == "DT_FLOAT"
            assert sig["inputs"]["scale"]["dtype"] == "DT_INT32"
            assert [d["size"] for d in sig["inputs"]["pixels"]["tensor_shape"]["dim"]] == [
                "-1",
                "4",
            ]
            assert set(sig["outputs"]) == {"probs", "scaled"}
        columns = {"pixels": pixels.tolist(), "scale": scale.tolist()}
        resp = httpx.post(f"{url}/v1/models/sig:predict", json={"inputs": columns})
        assert resp.status_code == 200, resp.text
        outputs = resp.json()["outputs"]
        np.testing.assert_allclose(outputs["probs"], want["probs"], rtol=1e-5, atol=1e-6)
        assert outputs["scaled"] == want["scaled"].tolist()
        rows = [
            {"pixels": p.tolist(), "scale": s.tolist()} for p, s in zip(pixels, scale, strict=True)
        ]
        resp = httpx.post(f"{url}/v1/models/sig:predict", json={"instances": rows})
        predictions = resp.json()["predictions"]
        assert [p["scaled"] for p in predictions] == want["scaled"].tolist()
        missing = httpx.get(f"{url}/v1/models/nope/metadata")
        assert missing.status_code == 404 and "nope" in missing.json()["error"]
        label = httpx.get(f"{url}/v1/models/sig/labels/gold/metadata")
        assert label.status_code == 404
        # OIP v2 metadata speaks the same names
        v2 = httpx.get(f"{url}/v2/models/sig").json()
        assert sorted(i["name"] for i in v2["inputs"]) == ["pixels", "scale"]


def test_agent_tflite_bundle_with_tensor_names_still_runs(bundle_dir: Path, tmp_path: Path) -> None:
    """A bundle written before signature names (manifest naming the graph's tensors) loads."""
    bundle = read_bundle(bundle_dir)
    renamed = replace(
        bundle.manifest,
        inputs=tuple(
            TensorSpec(f"serving_default_{s.name}:0", s.datatype, s.shape)
            for s in bundle.manifest.inputs
        ),
    )
    old = tmp_path / "old"
    old.mkdir()
    for entry in bundle.manifest.files:
        (old / entry.path).write_bytes((bundle_dir / entry.path).read_bytes())
    (old / "manifest.json").write_text(json.dumps(renamed.to_dict()))
    runtime = load_runtime(read_bundle(old))
    try:
        pixels = np.ones((1, 4), np.float32)
        out = runtime.run(
            {
                "serving_default_pixels:0": pixels,
                "serving_default_scale:0": np.array([[2]], np.int32),
            }
        )
    finally:
        runtime.close()
    np.testing.assert_allclose(
        out["probs"], _reference(pixels, np.ones((1, 1)))["probs"], rtol=1e-5
    )
    assert out["scaled"].tolist() == [[6]]
