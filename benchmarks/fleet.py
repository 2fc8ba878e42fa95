"""Fleet rollout benchmark: Mosquitto + the fleet server (a process) + N simulated devices.

The devices run the real device sync (:class:`edgeserve.agent.sync.device.DeviceSync`: MQTT,
keyring and fleet-signature checks, resumable HTTP download, per-file hash checks, the install
state machine) with a stand-in runtime (:mod:`edgeserve.agent.sync.simulator`), many per process on
one shared MQTT network thread. For each N it prints:

- time from ``rollout start`` to every device reporting the new version ACTIVE (zero soak,
  one phase of 100%, the server's view: rollout status ``completed`` with N active);
- MQTT messages per device during the rollout (desired + reported + presence + telemetry on the
  device's topics, counted by a subscriber on ``es/<fleet>/dev/#``);
- fleet server resident memory (VmRSS at the end and VmHWM, the peak);
- the fleet server's ``/metrics`` scrape time with N devices registered and reporting
  (median and range of 11 scrapes, after the rollout), and the size of one scrape.
- the fleet server's own CPU time (user + system of its process, all threads, from
  ``/proc/<pid>/stat``) per converged device, next to the wall time: the simulated devices
  share the machine's cores with the server, so wall time alone says little about the server;
- telemetry ingest after the rollout: ``--telemetry`` QoS 1 telemetry messages (one agent
  summary each, in the agent's record format) published as the registered devices over 4
  connections, timed until the server counts every one received (``/api/v1/stats``), with the
  server's CPU seconds per message and the messages it dropped.

Usage::

    .venv/bin/python benchmarks/fleet.py                 # N = 100 and 1000
    .venv/bin/python benchmarks/fleet.py --devices 1000 --device-procs 2 --telemetry 20000

Each device holds a broker connection, so N is bounded by the open-file limit the broker
inherits (``ulimit -n``; 20,000 here): above it the script stops at once and names
``benchmarks/fleet_protocol.py``, which simulates devices as protocol, many per connection.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
from mqtt_blast import blast  # noqa: E402
from support.broker import Mosquitto  # noqa: E402
from support.fleet import (  # noqa: E402
    FleetServerProcess,
    device_settings,
    signed_tar,
    wait_for,
)

from edgeserve.mqtt import MqttClient, MqttConfig  # noqa: E402


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads (/proc/<pid>/stat fields
    14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ingested(client: object) -> tuple[int, int]:
    """(telemetry messages received, messages dropped) as the server counts them."""
    ingest = client.stats()["ingest"]  # type: ignore[attr-defined]
    return int(ingest["received"].get("telemetry", 0)), int(ingest["dropped_total"])


def telemetry_burst(
    url: str,
    devices: list[str],
    messages: int,
    server: FleetServerProcess | Sequence[FleetServerProcess],
    rate_per_s: float = 0.0,
) -> dict[str, Any]:
    """Publish ``messages`` telemetry messages as ``devices`` (round robin over 2 raw-socket
    connections, QoS 1, :mod:`mqtt_blast`; paced at ``rate_per_s`` when > 0, else as fast as
    the broker takes them) and time the server's ingest of them (several replicas: of all of
    them together, with each one's share in ``telemetry_per_replica``); returns the figures."""
    from edgeserve.protocol import Telemetry, encode, topics
    from edgeserve.trust import format_time

    servers = [server] if isinstance(server, FleetServerProcess) else list(server)
    pids = [s.process.pid for s in servers if s.process is not None]
    assert len(pids) == len(servers)
    now = time.time()
    stamp = format_time(datetime.now(timezone.utc))
    payloads = []
    for i in range(messages):
        device = devices[i % len(devices)]
        summary = {
            "kind": "summary",
            "model": "digits",
            "version": 1,
            "window_start": round(now - 60 + i * 1e-3, 3),
            "window_end": round(now + i * 1e-3, 3),
            "requests": 100,
            "errors": {},
            "error_count": 0,
            "latency_ms": {"p50": 0.3, "p95": 0.5, "p99": 0.9},
            "executions": 40,
            "rows": 100,
            "batch_mean": 2.5,
            "batch_max": 8,
        }
        message = Telemetry(device, stamp, (summary,), 0)
        payloads.append((topics("es/", "bench", device).telemetry, encode(message)))
    apis = [s.client() for s in servers]

    def ingested() -> list[tuple[int, int]]:
        return [_ingested(api) for api in apis]

    try:
        before = ingested()
        start: dict[str, Any] = {}

        def on_start() -> None:
            start["cpu"] = [_cpu_s(pid) for pid in pids]
            start["t"] = time.monotonic()

        published_s = blast(url, payloads, connections=2, on_start=on_start, rate_per_s=rate_per_s)
        cpu0, t0 = start["cpu"], start["t"]
        wait_for(
            lambda: sum(r for r, _d in ingested()) - sum(r for r, _d in before) >= messages,
            300,
            "telemetry received",
            interval_s=0.05,
        )
        ingest_s = time.monotonic() - t0
        cpu = [_cpu_s(pid) - c0 for pid, c0 in zip(pids, cpu0, strict=True)]
        after = ingested()
    finally:
        for api in apis:
            api.close()
    received = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    return {
        "telemetry_msgs": messages,
        "telemetry_publish_s": published_s,
        "telemetry_ingest_s": ingest_s,
        "telemetry_msgs_per_s": messages / ingest_s,
        "telemetry_cpu_ms_per_msg": sum(cpu) / messages * 1000,
        "telemetry_received": sum(received),
        "telemetry_dropped": sum(a[1] - b[1] for a, b in zip(after, before, strict=True)),
        "telemetry_per_replica": [
            {"received": n, "cpu_s": c} for n, c in zip(received, cpu, strict=True)
        ],
    }


def _proc_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# Descriptors the broker needs besides the devices' connections: its listener, log, the
# fleet server's and the message counter's connections.
_BROKER_SPARE_FDS = 64


def device_worker(spec_path: Path) -> None:
    """Child process: run the devices listed in ``spec_path`` until stdin closes."""
    from edgeserve.agent.sync.simulator import SimulatedDevice, SimulatedFleet

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
    n: int, device_procs: int, workers: int, workdir: Path, phases: list[int], telemetry: int
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
        assert server.process is not None
        with server.client() as client:
            cpu0 = _cpu_s(server.process.pid)
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
            converge_cpu_s = _cpu_s(server.process.pid) - cpu0
        time.sleep(1.0)  # late messages of the rollout (none expected)
        counter.active = False
        msgs = sum(counter.counts.values())
        scrapes, size = scrape_times(server.url, 11)
        burst = (
            telemetry_burst(broker.url, [d for d, _ in creds], telemetry, server)
            if telemetry
            else {}
        )
        return {
            "devices": n,
            "active": st["counts"]["active"],
            "converge_s": converge_s,
            "server_cpu_s": converge_cpu_s,
            "server_cpu_ms_per_device": converge_cpu_s / n * 1000,
            **burst,
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
    parser.add_argument(
        "--telemetry",
        type=int,
        default=5000,
        help="telemetry messages published after the rollout to time ingest (0 = none)",
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        device_worker(args.worker)
        return
    # Every simulated device holds a broker connection, and Mosquitto gets this process's
    # open-file limit: past it, devices would fail to connect only after minutes of setup.
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    too_many = [n for n in args.devices if n + _BROKER_SPARE_FDS > limit]
    if too_many and limit != resource.RLIM_INFINITY:  # RLIM_INFINITY is -1
        parser.error(
            f"{max(too_many)} devices need as many broker connections, above the open-file "
            f"limit of {limit} that the broker would get (ulimit -n); run them as "
            f"protocol-level devices: benchmarks/fleet_protocol.py --devices "
            + " ".join(str(n) for n in too_many)
        )
    rows = []
    for n in args.devices:
        with tempfile.TemporaryDirectory(prefix=f"edgeserve-fleet-bench-{n}-") as tmp:
            phases = [int(p) for p in args.phases.split(",")]
            row = run(n, args.device_procs, args.workers, Path(tmp), phases, args.telemetry)
        rows.append(row)
        print(
            json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
            flush=True,
        )
    print()
    print(
        f"{'devices':>8} {'converge s':>11} {'server CPU s':>13} {'CPU ms/device':>14} "
        f"{'msgs/device':>12} {'server RSS MB':>14} {'peak RSS MB':>12} "
        f"{'/metrics ms (min-max)':>22}"
    )
    for r in rows:
        scrape = f"{r['scrape_ms']:.1f} ({r['scrape_ms_min']:.1f}-{r['scrape_ms_max']:.1f})"
        print(
            f"{r['devices']:>8} {r['converge_s']:>11.1f} {r['server_cpu_s']:>13.2f} "
            f"{r['server_cpu_ms_per_device']:>14.2f} {r['msgs_per_device']:>12.2f} "
            f"{r['server_rss_mb']:>14.0f} {r['server_peak_rss_mb']:>12.0f} {scrape:>22}"
        )
    if any("telemetry_msgs" in r for r in rows):
        print(
            f"\n{'devices':>8} {'telemetry msgs':>15} {'ingest s':>9} {'msgs/s':>8} "
            f"{'CPU ms/msg':>11} {'received':>9} {'dropped':>8}"
        )
        for r in rows:
            if "telemetry_msgs" in r:
                print(
                    f"{r['devices']:>8} {r['telemetry_msgs']:>15} "
                    f"{r['telemetry_ingest_s']:>9.2f} {r['telemetry_msgs_per_s']:>8.0f} "
                    f"{r['telemetry_cpu_ms_per_msg']:>11.3f} {r['telemetry_received']:>9} "
                    f"{r['telemetry_dropped']:>8}"
                )
    print("goals: 1,000 devices <= 60 s, <= 6 messages per device, server <= 250 MB")


if __name__ == "__main__":
    main()
