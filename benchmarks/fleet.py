"""Fleet rollout benchmark: Mosquitto + the fleet server (a process) + N simulated devices.

The devices run the real device sync (:class:`edgeserve.agent.fleet_device.DeviceSync`: MQTT,
keyring and fleet-signature checks, resumable HTTP download, per-file hash checks, the install
state machine) with a stand-in runtime (:mod:`edgeserve.agent.fleet_sim`), many per process on
one shared MQTT network thread. For each N it prints:

- time from ``rollout start`` to every device reporting the new version ACTIVE (zero soak,
  one phase of 100%, the server's view: rollout status ``completed`` with N active);
- MQTT messages per device during the rollout (desired + reported + presence + telemetry on the
  device's topics, counted by a subscriber on ``es/<fleet>/dev/#``);
- fleet server resident memory (VmRSS at the end and VmHWM, the peak);
- the fleet server's ``/metrics`` scrape time with N devices registered and reporting
  (median and range of 11 scrapes, after the rollout), and the size of one scrape.

Usage::

    .venv/bin/python benchmarks/fleet.py                 # N = 100 and 1000
    .venv/bin/python benchmarks/fleet.py --devices 1000 --device-procs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from support.broker import Mosquitto  # noqa: E402
from support.fleet import (  # noqa: E402
    FleetServerProcess,
    device_settings,
    signed_tar,
    wait_for,
)

from edgeserve.mqtt import MqttClient, MqttConfig  # noqa: E402


def _proc_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def device_worker(spec_path: Path) -> None:
    """Child process: run the devices listed in ``spec_path`` until stdin closes."""
    from edgeserve.agent.fleet_sim import SimulatedDevice, SimulatedFleet

    spec = json.loads(spec_path.read_text())
    fleet = SimulatedFleet(
        [SimulatedDevice(d, p) for d, p in spec["devices"]],
        Path(spec["state"]),
        spec["settings"],
        workers=spec["workers"],
    )
    fleet.start()
    fleet.wait_connected(120)
    print("connected", flush=True)
    sys.stdin.read()  # the parent closes stdin to stop us
    fleet.stop()


class MessageCounter:
    """Counts live (non-retained) messages per topic kind on the fleet's device topics."""

    def __init__(self, url: str) -> None:
        self.counts: Counter[str] = Counter()
        self.active = False
        self._lock = threading.Lock()
        self.client = MqttClient(MqttConfig(url=url, client_id="bench-counter"))
        self.client.subscribe("es/bench/dev/#", self._on_message)
        self.client.start()
        self.client.wait_connected(10)

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if self.active and not retained:
            with self._lock:
                self.counts[topic.rsplit("/", 1)[1]] += 1

    def stop(self) -> None:
        self.client.stop()


def scrape_times(url: str, count: int) -> tuple[list[float], int]:
    """Wall time (ms) of ``count`` GETs of ``/metrics``, and the size of the last body."""
    times, size = [], 0
    with httpx.Client(timeout=60) as http:
        for _ in range(count):
            t = time.perf_counter()
            body = http.get(f"{url}/metrics").raise_for_status().content
            times.append((time.perf_counter() - t) * 1000)
            size = len(body)
    return times, size


def run(
    n: int, device_procs: int, workers: int, workdir: Path, phases: list[int]
) -> dict[str, float]:
    """One measurement with ``n`` devices; returns the figures."""
    broker = Mosquitto(workdir / "mosquitto").start()
    server = FleetServerProcess(workdir / "server", broker.url, tick_s=0.5, fleet="bench")
    children: list[subprocess.Popen[str]] = []
    counter = None
    try:
        server.start()
        assert server.keys is not None
        with server.client() as client:
            client.upload_release(signed_tar(workdir / "rel", server.keys, version=1))
            t = time.monotonic()
            creds = [
                (f"dev-{i:04d}", client.add_device(f"dev-{i:04d}", {"hw": "sim"})["password"])
                for i in range(n)
            ]
            register_s = time.monotonic() - t
        settings = device_settings(server, broker.url, fleet="bench", telemetry_interval_s=30.0)
        t = time.monotonic()
        for k in range(device_procs):
            spec = workdir / f"devices-{k}.json"
            spec.write_text(
                json.dumps(
                    {
                        "devices": creds[k::device_procs],
                        "state": str(workdir / f"state-{k}"),
                        "settings": settings,
                        "workers": workers,
                    }
                )
            )
            child = subprocess.Popen(
                [sys.executable, __file__, "--worker", str(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            children.append(child)
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if "connected" not in line:
                raise RuntimeError("a device process failed to connect its devices")
        connect_s = time.monotonic() - t
        counter = MessageCounter(broker.url)
        time.sleep(1.0)  # let presence messages of the connection storm settle
        counter.active = True
        with server.client() as client:
            t0 = time.monotonic()
            rid = client.start_rollout(
                {"model": "digits", "version": 1, "phases": phases, "soak": 0, "max_failure_pct": 5}
            )
            st = wait_for(
                lambda: (s := client.rollout(rid))["status"] == "completed" and s,
                300,
                "rollout completed",
                interval_s=0.1,
            )
            converge_s = time.monotonic() - t0
        time.sleep(1.0)  # late messages of the rollout (none expected)
        counter.active = False
        msgs = sum(counter.counts.values())
        scrapes, size = scrape_times(server.url, 11)
        return {
            "devices": n,
            "active": st["counts"]["active"],
            "converge_s": converge_s,
            "msgs_per_device": msgs / n,
            **{f"msgs_{k}": v / n for k, v in counter.counts.items()},
            "server_rss_mb": _proc_kib(server.process.pid, "VmRSS") / 1024,
            "server_peak_rss_mb": _proc_kib(server.process.pid, "VmHWM") / 1024,
            "register_s": register_s,
            "connect_s": connect_s,
            "scrape_ms": statistics.median(scrapes),
            "scrape_ms_min": min(scrapes),
            "scrape_ms_max": max(scrapes),
            "scrape_bytes": size,
        }
    finally:
        if counter is not None:
            counter.stop()
        for child in children:
            if child.stdin:
                child.stdin.close()
        for child in children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        server.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--device-procs", type=int, default=2, help="device processes")
    parser.add_argument("--workers", type=int, default=8, help="install threads per process")
    parser.add_argument("--phases", default="100", help="rollout phases, e.g. 10,50,100")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        device_worker(args.worker)
        return
    rows = []
    for n in args.devices:
        with tempfile.TemporaryDirectory(prefix=f"edgeserve-fleet-bench-{n}-") as tmp:
            phases = [int(p) for p in args.phases.split(",")]
            row = run(n, args.device_procs, args.workers, Path(tmp), phases)
        rows.append(row)
        print(
            json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
            flush=True,
        )
    print()
    print(
        f"{'devices':>8} {'converge s':>11} {'msgs/device':>12} {'server RSS MB':>14} "
        f"{'peak RSS MB':>12} {'/metrics ms (min-max)':>22}"
    )
    for r in rows:
        scrape = f"{r['scrape_ms']:.1f} ({r['scrape_ms_min']:.1f}-{r['scrape_ms_max']:.1f})"
        print(
            f"{r['devices']:>8} {r['converge_s']:>11.1f} {r['msgs_per_device']:>12.2f} "
            f"{r['server_rss_mb']:>14.0f} {r['server_peak_rss_mb']:>12.0f} {scrape:>22}"
        )
    print("goals: 1,000 devices <= 60 s, <= 6 messages per device, server <= 250 MB")


if __name__ == "__main__":
    main()
