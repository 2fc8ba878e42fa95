"""The CLI root: help, version, one-line errors, and no heavy imports for light commands."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from edgeserve import __version__
from edgeserve.cli import root


def test_version_and_help() -> None:
    runner = CliRunner()
    assert __version__ in runner.invoke(root, ["--version"]).output
    result = runner.invoke(root, ["--help"])
    assert result.exit_code == 0
    for group in ("convert", "bundle", "keys", "agent", "fleet"):
        assert group in result.output


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from edgeserve.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bundle_errors_are_one_line_without_traceback(tmp_path) -> None:
    result = _run("bundle", "check", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_usage_error_exits_2() -> None:
    result = _run("bundle", "check")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_bundle_inspect_and_check(linear_bundle) -> None:
    ok = _run("bundle", "check", str(linear_bundle.path))
    assert ok.returncode == 0, ok.stderr
    assert "linear v1" in ok.stdout
    shown = _run("bundle", "inspect", str(linear_bundle.path))
    assert shown.returncode == 0, shown.stderr
    assert "model.onnx" in shown.stdout and "FP32" in shown.stdout
    as_json = _run("bundle", "inspect", "--json", str(linear_bundle.path))
    assert '"name": "linear"' in as_json.stdout
    (linear_bundle.path / "model.onnx").write_bytes(b"x")
    bad = _run("bundle", "check", str(linear_bundle.path))
    assert bad.returncode == 1 and "model.onnx" in bad.stderr


def test_help_imports_no_component_or_heavy_library() -> None:
    code = (
        "import sys\n"
        "from edgeserve.cli import root\n"
        "try:\n    root.main(['--help'], prog_name='edgeserve')\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('tensorflow', 'onnx', 'onnxruntime', 'edgeserve.converter',"
        " 'edgeserve.fleet_server') if m in sys.modules]\n"
        "print('LOADED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr
