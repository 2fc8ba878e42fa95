"""``GET /v2/models/{m}/config`` follows each model's settings: version policy, batching on or
off, instances, queue limits, and the bundle's labels file."""

from __future__ import annotations

from pathlib import Path

import httpx
from edgeserve.agent.store import ModelStore
from support.agent import make_fp16_bundle, start_agent
from support.models import make_linear_bundle


def test_agent_triton_config_follows_the_settings(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = ModelStore(state)
    labels = {"labels.txt": (b"a\nb\nc\n", "labels")}
    store.install(make_linear_bundle(tmp_path / "l1", version=1, extra_files=labels).path)
    store.install(make_linear_bundle(tmp_path / "l2", version=2).path, activate=False)
    store.install(make_fp16_bundle(tmp_path / "half").path)
    config = {
        "batching": {"max_batch_size": 8, "max_queue_delay_us": 250, "max_queue_size": 64},
        "models": {
            "linear": {"policy": "all", "enabled": False, "instances": 2},
            "half": {"policy": "pinned", "version": 1, "timeout_ms": 1500},
        },
    }
    with start_agent(state, config=config) as agent:
        linear = httpx.get(f"{agent.url}/v2/models/linear/config").json()
        v2 = httpx.get(f"{agent.url}/v2/models/linear/versions/2/config").json()
        half = httpx.get(f"{agent.url}/v2/models/half/config").json()
        missing = httpx.get(f"{agent.url}/v2/models/nope/config")
    assert linear["version_policy"] == {"all": {}}
    assert "dynamic_batching" not in linear  # batching off for this model
    assert linear["max_batch_size"] == 8  # it still takes a batch dimension
    assert linear["instance_group"][0]["count"] == 2
    assert linear["output"][0]["label_filename"] == "labels.txt"
    assert linear["parameters"]["version"] == {"string_value": "1"}
    assert v2["parameters"]["version"] == {"string_value": "2"}
    assert v2["output"][0]["label_filename"] == ""  # version 2 has no labels
    assert half["version_policy"] == {"specific": {"versions": [1]}}
    assert half["input"] == [
        {
            "name": "x",
            "data_type": "TYPE_FP16",
            "format": "FORMAT_NONE",
            "dims": [4],
            "is_shape_tensor": False,
            "allow_ragged_batch": False,
            "optional": False,
        }
    ]
    assert half["dynamic_batching"] == {
        "preferred_batch_size": [],
        "max_queue_delay_microseconds": 250,
        "preserve_ordering": False,
        "priority_levels": 0,
        "default_priority_level": 0,
        "default_queue_policy": {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": 1_500_000,
            "allow_timeout_override": True,
            "max_queue_size": 64,
        },
    }
    assert half["platform"] == "onnxruntime_onnx" and half["backend"] == "onnxruntime"
    assert missing.status_code == 404
