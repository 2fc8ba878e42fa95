"""Run schemathesis (its own CLI, unmodified) against an agent's ``/openapi.json``.

Checks: ``not_a_server_error``, the conformance checks (status code, content type, response
headers, response schema) and ``negative_data_rejection`` (schema-invalid requests get a 4xx).
Shared by the test suite and ``benchmarks/hostile.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHECKS", "ConformanceRun", "run_schemathesis"]

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
_CLI = Path(sys.executable).with_name("schemathesis")


@dataclass(frozen=True)
class ConformanceRun:
    """One schemathesis run: exit code, cases generated and passed, the whole output."""

    returncode: int
    generated: int
    passed: int
    output: str


def run_schemathesis(
    base_url: str,
    workdir: Path,
    *,
    max_examples: int = 30,
    parameters: dict[str, str] | None = None,
    exclude_path_regex: str | None = None,
    seed: int = 1,
    timeout_s: float = 240.0,
) -> ConformanceRun:
    """Run ``schemathesis run <base_url>/openapi.json`` in ``workdir``.

    Args:
        base_url: the agent, ``http://127.0.0.1:<port>``.
        workdir: where schemathesis may write (its config and caches).
        max_examples: test cases per operation and phase.
        parameters: fixed values for path parameters (e.g. a model that exists), written to
            ``schemathesis.toml``; None lets schemathesis generate them.
        exclude_path_regex: operations to leave out.
        seed: the random seed (reproducible runs).
        timeout_s: wall-clock bound of the run.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "schemathesis.toml"
    lines = ["[parameters]", *(f'{k} = "{v}"' for k, v in (parameters or {}).items())]
    config.write_text("\n".join(lines) + "\n" if parameters else "")
    args = [
        str(_CLI),
        "--config-file",
        str(config),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--no-color",
    ]
    if exclude_path_regex:
        args += ["--exclude-path-regex", exclude_path_regex]
    proc = subprocess.run(
        args, cwd=workdir, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    output = proc.stdout + proc.stderr
    found = re.search(r"(\d+) generated, (\d+) passed", output)
    generated, passed = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    return ConformanceRun(proc.returncode, generated, passed, output)
