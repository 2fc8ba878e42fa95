"""``edgeserve convert --class-labels``: the labels travel in the bundle and a served model
answers Triton's classification extension with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from edgeserve.agent.store import ModelStore
from support.agent import start_agent
from support.converter import invoke_convert

from edgeserve.bundle import check_bundle

DIGIT_NAMES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"
]  # fmt: skip


def test_convert_class_labels_are_bundled_and_served(digits, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(DIGIT_NAMES) + "\n")
    out = tmp_path / "bundle"
    result = invoke_convert(
        digits.onnx, "-t", "onnx-cpu-fp32", "--class-labels", labels, "--name", "digits", "-o", out
    )
    assert result.exit_code == 0, result.stderr
    bundle = check_bundle(out)
    entry = bundle.manifest.file("labels")
    assert entry is not None and entry.path == "labels.txt"
    assert (out / "labels.txt").read_text().splitlines() == DIGIT_NAMES
    state = tmp_path / "state"
    ModelStore(state).install(out)
    x = np.load(digits.validation)[:5].astype(np.float32)
    with start_agent(state) as agent:
        client = httpclient.InferenceServerClient(agent.url.removeprefix("http://"))
        try:
            inp = httpclient.InferInput(bundle.manifest.inputs[0].name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            output = bundle.manifest.outputs[0].name
            plain = client.infer("digits", [inp]).as_numpy(output)
            top = client.infer(
                "digits", [inp], outputs=[httpclient.InferRequestedOutput(output, class_count=3)]
            ).as_numpy(output)
            config = client.get_model_config("digits")
        finally:
            client.close()
    assert top.shape == (5, 3)
    for row, entries in zip(plain, top, strict=True):
        want = np.argsort(-row, kind="stable")[:3]
        parsed = [(e.decode() if isinstance(e, bytes) else e).split(":") for e in entries]
        assert [int(p[1]) for p in parsed] == want.tolist()
        assert [p[2] for p in parsed] == [DIGIT_NAMES[i] for i in want]
        assert [float(p[0]) for p in parsed] == [round(float(row[i]), 6) for i in want]
    assert config["output"][0]["label_filename"] == "labels.txt"


def test_convert_class_labels_count_must_match_the_output(digits, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(DIGIT_NAMES[:9]) + "\n")
    out = tmp_path / "bundle"
    result = invoke_convert(digits.onnx, "-t", "onnx-cpu-fp32", "--class-labels", labels, "-o", out)
    assert result.exit_code == 2
    assert "9 labels" in result.stderr and "10 classes" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    missing = invoke_convert(
        digits.onnx, "-t", "onnx-cpu-fp32", "--class-labels", tmp_path / "nope.txt", "-o", out
    )
    assert missing.exit_code == 2 and "labels" in missing.stderr
