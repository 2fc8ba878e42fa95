"""Many devices in one process: the real DeviceSync on one shared MQTT loop thread, one
httpx pool and a small executor (what benchmarks/fleet.py runs at 1,000)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edgeserve.agent.sync.simulator import SimulatedDevice, SimulatedFleet
from support.broker import Mosquitto
from support.fleet_keys import FleetKeys
from support.fleet_sync import FLEET, FleetDriver, Release, model_state


def test_sync_simulated_fleet_converges_on_few_threads(
    mosquitto: Mosquitto,
    fleet_keys: FleetKeys,
    driver: FleetDriver,
    releases: dict[str, Release],
    tmp_path: Path,
) -> None:
    n = 40
    fleet = SimulatedFleet(
        [SimulatedDevice(f"sim-{i:03d}") for i in range(n)],
        tmp_path / "devices",
        {
            "broker": mosquitto.url,
            "fleet": FLEET,
            "trust_anchor": str(fleet_keys.anchor_path),
            "keyring": str(fleet_keys.keyring_path),
        },
        workers=4,
    )
    before = set(threading.enumerate())  # the broker fixture's, the driver's, other tests'
    fleet.start()
    try:
        fleet.wait_connected(30)
        t0 = time.monotonic()
        for i in range(n):
            dev = f"sim-{i:03d}"
            driver.publish(dev, driver.desired(dev, {"linear": releases["v2"].target()}, seq=1))
        for i in range(n):
            driver.wait_report(f"sim-{i:03d}", model_state("linear", "ACTIVE", 2), timeout_s=60)
        elapsed = time.monotonic() - t0
        assert set(fleet.active_versions("linear").values()) == {2}
        # one MQTT loop thread + 4 install workers, not a thread per device
        ours = [
            t.name
            for t in threading.enumerate()
            if t not in before and t.name.startswith(("fleet-", "paho"))
        ]
        assert len(ours) <= 1 + 4, ours
        # per device: presence-time report, DOWNLOADING, ACTIVE
        assert max(driver.count(f"sim-{i:03d}") for i in range(n)) <= 3
        print(f"{n} devices converged in {elapsed:.2f} s")
    finally:
        fleet.stop()
