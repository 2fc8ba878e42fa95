"""The import paths the README documents keep working after the agent moved into subpackages:
the aliases at the old paths are the very objects of the new ones."""

from __future__ import annotations

import subprocess
import sys

import edgeserve.agent
from edgeserve.agent.core import Agent as AliasAgent
from edgeserve.agent.serving.core import Agent
from edgeserve.agent.serving.telemetry import TelemetryBuffer
from edgeserve.agent.store import ModelStore
from edgeserve.agent.sync import start_sync
from edgeserve.agent.sync.start import start_sync as real_start_sync
from edgeserve.agent.telemetry import TelemetryBuffer as AliasTelemetryBuffer


def test_documented_paths_are_the_moved_objects() -> None:
    assert AliasAgent is Agent
    assert AliasTelemetryBuffer is TelemetryBuffer
    assert start_sync is real_start_sync
    assert edgeserve.agent.Agent is Agent
    assert edgeserve.agent.TelemetryBuffer is TelemetryBuffer
    assert edgeserve.agent.ModelStore is ModelStore


def test_sync_package_imports_device_sync_only_when_asked() -> None:
    code = (
        "import sys\n"
        "import edgeserve.agent.sync.config\n"
        "before = 'edgeserve.agent.sync.device' in sys.modules\n"
        "from edgeserve.agent.sync import DeviceSync\n"
        "print(before, DeviceSync.__module__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False edgeserve.agent.sync.device"
