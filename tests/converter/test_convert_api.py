"""The converter's library API: exported names, and conversion without the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import edgeserve.converter as converter
import pytest
from edgeserve.converter import ConvertOptions, convert_model

from edgeserve.errors import ConfigError


def test_exported_members_are_pinned() -> None:
    assert sorted(converter.__all__) == sorted([
        "TARGETS", "ConvertOptions", "ConvertResult", "Target", "convert_model", "get_target",
    ])  # fmt: skip
    for name in converter.__all__:
        assert hasattr(converter, name)


def test_convert_model_without_the_cli_reports_progress(digits, tmp_path: Path) -> None:
    steps: list[str] = []
    result = convert_model(
        ConvertOptions(
            model=digits.onnx,
            target="onnx-cpu-fp32",
            validation=digits.validation,
            labels=digits.labels,
            output=tmp_path / "out",
        ),
        progress=steps.append,
    )
    assert result.target.name == "onnx-cpu-fp32"
    assert result.bundle.path == tmp_path / "out"
    assert result.validation["accuracy_original"] == result.validation["accuracy_converted"]
    assert steps[0] == "loading model" and steps[-1] == "writing bundle"
    assert "validating onnx-cpu-fp32" in steps


def test_quantization_without_sympy_says_what_to_install(
    digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # onnxruntime >= 1.31 no longer depends on sympy, but its quantization pre-processing
    # (symbolic shape inference) imports it; a None entry makes `import sympy` fail here.
    monkeypatch.setitem(sys.modules, "sympy", None)
    with pytest.raises(ConfigError, match=r"sympy.*edgeserve-toolkit\[convert\]"):
        convert_model(
            ConvertOptions(
                model=digits.onnx,
                target="onnx-cpu-int8",
                calibration=digits.calibration,
                output=tmp_path / "out",
            )
        )
    assert not (tmp_path / "out").exists()


def test_non_finite_metrics_are_stored_as_null_so_the_bundle_can_be_signed(
    tmp_path: Path,
) -> None:
    # A model whose outputs are NaN (say, weights broken in training) still converts, but
    # "max abs error" and "cosine" are NaN, which JSON cannot carry: the manifest records null
    # and stays signable (canonical JSON), instead of failing later at `fleet release`.
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeserve.bundle import check_bundle
    from edgeserve.trust import generate_key, sign_release

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        "nan",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.full(4, np.nan, np.float32), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "nan.onnx"))
    np.save(tmp_path / "val.npy", np.ones((8, 4), np.float32))
    result = convert_model(
        ConvertOptions(
            model=tmp_path / "nan.onnx",
            target="onnx-cpu-fp32",
            validation=tmp_path / "val.npy",
            output=tmp_path / "out",
        )
    )
    validation = check_bundle(result.bundle.path).manifest.validation
    assert validation["max_abs_err"] is None and validation["cosine"] is None
    sign_release(result.bundle.path, [generate_key()])
    assert (result.bundle.path / "signature.json").is_file()
