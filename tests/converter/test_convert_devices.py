"""Device profiles and --device: target choice, IR/opset limits, ops a device cannot run;
dynamic shapes for static quantization; multi-input models with .npz data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from edgeserve.converter.targets import TARGETS
from onnx import TensorProto, helper, numpy_helper
from support.converter import invoke_convert, load_sample

from edgeserve.bundle import check_bundle
from edgeserve.devices import list_devices, load_device
from edgeserve.errors import ConfigError
from edgeserve.runtimes import load_runtime


def test_every_profile_loads_and_names_real_targets() -> None:
    names = list_devices()
    assert {"rpi4", "rpi5", "jetson-orin-nano", "x86_64"} <= set(names)
    for name in names:
        profile = load_device(name)
        assert profile.name == name
        assert all(t in TARGETS for t in profile.targets), profile.targets
        assert profile.onnxruntime is not None and profile.onnxruntime.max_opset >= 13
        assert profile.tflite is not None
    jetson = load_device("jetson-orin-nano")
    assert jetson.onnxruntime is not None
    assert jetson.onnxruntime.package == "onnxruntime-gpu"
    assert jetson.onnxruntime.providers[0] == "TensorrtExecutionProvider"
    assert jetson.default_target == "onnx-gpu-fp16"


def test_unknown_device_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="rpi5"):
        load_device("toaster")


def test_malformed_profile_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('name = "bad"\narch = "aarch64"\n')
    with pytest.raises(ConfigError, match="missing"):
        load_device("bad", tmp_path)


@pytest.mark.parametrize(
    ("device", "with_calibration", "expected"),
    [
        ("rpi5", True, "onnx-cpu-int8"),
        ("rpi5", False, "onnx-cpu-int8-dynamic"),
        ("rpi4", True, "onnx-cpu-int8"),
        ("jetson-orin-nano", False, "onnx-gpu-fp16"),
        ("x86_64", True, "onnx-cpu-int8"),
    ],
)
def test_device_picks_its_best_reachable_target(
    digits, tmp_path: Path, device: str, with_calibration: bool, expected: str
) -> None:
    out = tmp_path / "out"
    extra = ["--calibration", digits.calibration] if with_calibration else []
    result = invoke_convert(digits.onnx, "--device", device, "-o", out, *extra)
    assert result.exit_code == 0, result.stderr
    manifest = check_bundle(out).manifest
    assert manifest.target == expected
    check = manifest.converter["options"]["device_check"]
    profile = load_device(device)
    assert profile.onnxruntime is not None
    assert check["device"] == device
    assert check["bundle_ir"] <= profile.onnxruntime.max_ir
    assert check["bundle_opset"] <= profile.onnxruntime.max_opset


def _relu_model(path: Path, opset: int, ir: int, op: str = "Relu") -> Path:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], name="the_op")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.save(model, str(path))
    return path


def test_too_new_opset_and_ir_are_brought_down_for_the_device(tmp_path: Path) -> None:
    source = _relu_model(tmp_path / "new.onnx", opset=22, ir=10)
    out = tmp_path / "out"
    result = invoke_convert(source, "--device", "rpi4", "-t", "onnx-cpu-fp32", "-o", out)
    assert result.exit_code == 0, result.stderr
    model = onnx.load(str(out / "model.onnx"))
    assert model.ir_version <= 9
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= 19
    check = check_bundle(out).manifest.converter["options"]["device_check"]
    assert check["model_opset"] == 22 and check["bundle_opset"] == 19


def test_an_op_the_device_cannot_run_is_named(tmp_path: Path) -> None:
    # Gelu entered the ONNX standard at opset 20; rpi4's onnxruntime 1.16 stops at 19
    source = _relu_model(tmp_path / "gelu.onnx", opset=20, ir=9, op="Gelu")
    out = tmp_path / "out"
    result = invoke_convert(source, "--device", "rpi4", "-t", "onnx-cpu-fp32", "-o", out)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Gelu" in line and "rpi4" in line, line
    assert not out.exists()
    # the same model is fine for a device whose runtime knows the op
    ok = invoke_convert(source, "--device", "x86_64", "-t", "onnx-cpu-fp32", "-o", out)
    assert ok.exit_code == 0, ok.stderr


def _dynamic_model(path: Path) -> Path:
    """x [N, F] @ W [64, 10]: the feature axis is dynamic too (symbolic 'F')."""
    w = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "F"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_static_int8_keeps_dynamic_dimensions_and_npu_pins_them(tmp_path: Path) -> None:
    source = _dynamic_model(tmp_path / "dyn.onnx")
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32))
    out = tmp_path / "int8"
    result = invoke_convert(source, "-t", "onnx-cpu-int8", "--calibration", calib, "-o", out)
    assert result.exit_code == 0, result.stderr
    manifest = check_bundle(out).manifest
    assert manifest.inputs[0].shape == (-1, -1)  # calibrated at the data's size, graph kept
    assert "input_shapes" not in manifest.converter["options"]
    runtime = load_runtime(check_bundle(out))
    try:  # another batch size runs; 64 is the only feature size the weight takes
        assert runtime.run({"x": np.ones((3, 64), np.float32)})["y"].shape == (3, 10)
    finally:
        runtime.close()
    npu = tmp_path / "npu"
    result = invoke_convert(source, "-t", "onnx-npu-int8", "--calibration", calib, "-o", npu)
    assert result.exit_code == 0, result.stderr
    assert check_bundle(npu).manifest.inputs[0].shape == (1, 64)  # QNN needs static shapes


def test_input_shape_minus_one_keeps_a_dimension_dynamic(tmp_path: Path) -> None:
    source = _dynamic_model(tmp_path / "dyn.onnx")
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32))
    out = tmp_path / "pinned"
    result = invoke_convert(
        source, "-t", "onnx-cpu-int8", "--calibration", calib, "--input-shape", "x=-1,64",
        "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert check_bundle(out).manifest.inputs[0].shape == (-1, 64)


def test_npu_target_pins_every_dimension_from_input_shape(tmp_path: Path) -> None:
    source = _dynamic_model(tmp_path / "dyn.onnx")
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32))
    out = tmp_path / "npu"
    result = invoke_convert(
        source, "-t", "onnx-npu-int8", "--calibration", calib, "--input-shape", "x=1,64", "-o", out
    )
    assert result.exit_code == 0, result.stderr
    manifest = check_bundle(out).manifest
    assert manifest.inputs[0].shape == (1, 64)
    assert load_sample(out)["x"].shape == (1, 64)  # sample rows fit the fixed batch
    model = onnx.load(str(out / "model.onnx"))
    q_types = {n.output[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert q_types, "expected QDQ nodes"
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = [
        inits[n.input[2]]
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) == 3
    ]
    assert zero_points and all(z.data_type == TensorProto.UINT8 for z in zero_points)


def test_bad_input_shape_option(tmp_path: Path) -> None:
    source = _dynamic_model(tmp_path / "dyn.onnx")
    result = invoke_convert(source, "-t", "onnx-cpu-fp32", "--input-shape", "y=1,64")
    assert result.exit_code == 2 and "no input named 'y'" in result.stderr


def test_generated_data_needs_shapes_for_dynamic_features(tmp_path: Path) -> None:
    source = _dynamic_model(tmp_path / "dyn.onnx")
    result = invoke_convert(source, "-t", "onnx-cpu-fp32", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--input-shape" in result.stderr
    result = invoke_convert(
        source, "-t", "onnx-cpu-fp32", "--input-shape", "x=1,64", "-o", tmp_path / "out"
    )
    assert result.exit_code == 0, result.stderr


def test_two_inputs_take_an_npz_keyed_by_name(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Softmax", ["s"], ["y"])],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 5]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 5]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "two.onnx"))
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "calib.npz", a=rng.random((20, 5), np.float32), b=rng.random((20, 5), np.float32)
    )
    np.save(tmp_path / "calib.npy", rng.random((20, 5), np.float32))
    bad = invoke_convert(
        tmp_path / "two.onnx", "-t", "onnx-cpu-int8", "--calibration", tmp_path / "calib.npy"
    )
    assert bad.exit_code == 2 and "2 inputs" in bad.stderr
    out = tmp_path / "out"
    good = invoke_convert(
        tmp_path / "two.onnx",
        "-t",
        "onnx-cpu-int8",
        "--calibration",
        tmp_path / "calib.npz",
        "-o",
        out,
    )
    assert good.exit_code == 0, good.stderr
    assert set(load_sample(out)) == {"a", "b", "expected:y"}


def test_static_int8_keeps_the_batch_axis_symbolic(tmp_path: Path) -> None:
    source = _dynamic_model(tmp_path / "dyn.onnx")
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32))
    out = tmp_path / "int8"
    assert (
        invoke_convert(source, "-t", "onnx-cpu-int8", "--calibration", calib, "-o", out).exit_code
        == 0
    )
    (x,) = [i for i in onnx.load(str(out / "model.onnx")).graph.input if i.name == "x"]
    batch, features = x.type.tensor_type.shape.dim
    assert batch.dim_param and not batch.HasField("dim_value")  # still symbolic, never -1
    assert features.dim_param == "F"  # so is every other dynamic axis
