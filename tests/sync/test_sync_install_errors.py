"""An error at each install stage, over a real Mosquitto and a real artifact server: the install
ends FAILED or REJECTED (or ROLLED_BACK) with its reason reported, the version that served
before keeps serving, and the next desired state installs (the machine is never left stuck)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from edgeserve.agent.sync.simulator import SimulatedInstaller
from support.artifact_server import ArtifactServer, Fault
from support.fleet_sync import FleetDriver, Release, model_state

from edgeserve.errors import BundleError, ModelError, StorageError
from edgeserve.protocol import ModelTarget


class _Faulty(SimulatedInstaller):
    """The stand-in installer with one method raising while armed (then disarmed: the error
    happens once, as a flaky disk or runtime would)."""

    def __init__(self, method: str, error: Exception) -> None:
        super().__init__(fail=lambda _n, v: self._fire("health_check", v))
        self.method, self.error, self.armed = method, error, False

    def _fire(self, method: str, version: int | None = None) -> bool:
        if self.armed and method == self.method and version in (None, 2):
            self.armed = False
            return True
        return False

    def installed_versions(self, name: str) -> list[int]:
        if self._fire("installed_versions"):
            raise self.error
        return super().installed_versions(name)

    def install(self, bundle_dir: Path) -> None:
        if self._fire("install"):
            raise self.error
        super().install(bundle_dir)

    def activate(self, name: str, version: int) -> None:
        if version == 2 and self._fire("activate"):
            raise self.error
        super().activate(name, version)


_INSTALLER = "installer"
_CASES = [  # stage the error hits, how, expected state, expected reason code
    pytest.param(
        "DOWNLOADING", ("artifact", Fault(status=404, status_times=3)), "FAILED", "download",
        id="download-404",
    ),
    pytest.param(
        "DOWNLOADING", (_INSTALLER, "installed_versions", RuntimeError("bug")), "FAILED",
        "internal", id="download-bug",
    ),
    pytest.param("VERIFYING", ("mix", None), "REJECTED", None, id="verify-mismatch"),
    pytest.param(
        "STAGED", (_INSTALLER, "install", BundleError("copy check failed")), "REJECTED",
        "bad_bundle", id="stage-bundle",
    ),
    pytest.param(
        "STAGED", (_INSTALLER, "install", StorageError("disk full")), "FAILED", "storage",
        id="stage-disk",
    ),
    pytest.param(
        "WARMING", (_INSTALLER, "activate", ModelError("load failed")), "FAILED", "activation",
        id="warm-activation",
    ),
    pytest.param(
        "WARMING", (_INSTALLER, "health_check", None), "ROLLED_BACK", "health_check",
        id="warm-health",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("stage", "how", "state", "code"), _CASES)
def test_sync_install_error_at_each_stage_is_reported_and_keeps_serving(
    make_device: Any,
    driver: FleetDriver,
    releases: dict[str, Release],
    artifacts: ArtifactServer,
    stage: str,
    how: tuple[Any, ...],
    state: str,
    code: str | None,
) -> None:
    kind = how[0]
    inst = _Faulty(how[1], how[2]) if kind == _INSTALLER else _Faulty("", RuntimeError())
    make_device(installer=inst)
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v1"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 1))

    target: ModelTarget = releases["v2"].target()
    if kind == "artifact":
        artifacts.faults[releases["v2"].path] = how[1]
    elif kind == "mix":  # the v3 tar (its true hash) under v2's signed release
        target = ModelTarget(2, releases["v3"].artifact, releases["v2"].release)
    inst.armed = True
    driver.publish("dev1", driver.desired("dev1", {"linear": target}))
    rep = driver.wait_report("dev1", model_state("linear", state))
    status = rep.models["linear"]
    assert status.active == 1 and inst.active_version("linear") == 1, status
    assert status.error, status
    if code is not None:
        assert status.reason_code == code, status
    else:
        assert status.reason_code, status
    if stage == "VERIFYING":
        assert inst.installed_versions("linear") == [1]  # nothing reached the store

    # the machine is in a terminal state: a fresh desired state for v2 installs it
    artifacts.faults.clear()
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v2"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2), timeout_s=30)
    assert inst.active_version("linear") == 2
