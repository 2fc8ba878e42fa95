"""Large-N rollout at the protocol level: Mosquitto + the fleet server (a process) + N devices
simulated as messages, many devices per MQTT connection.

``benchmarks/fleet.py`` runs every device's real sync (threads, store, downloads), so one
machine holds ~20,000 devices at most and they take the cores from the server. Here each
device is only its protocol: a generator process, a privileged test client (the benchmark's
broker is anonymous, so one client may use every device's topics; a production broker would
give this account an ACL for ``es/<fleet>/dev/#``), subscribes to ``es/<fleet>/dev/+/desired``
and publishes the reports over ``--connections`` MQTT connections, all raw sockets
(``mqtt_blast``: cheaper than paho on the cores the server uses); for each
retained desired document it does what a
device does with it before installing: verifies the fleet signature against the keyring
(itself verified against the pinned ``root.json``), checks fleet, device, expiry and that
``seq`` is new, then reports ``DOWNLOADING`` and ``ACTIVE`` for the target (the two reports a
real device sends), QoS 1, retained. Downloads and model loads are left out: that is the
device's cost, not the server's.

Prints, for each N: registration and the rollout's wall time to ``completed``, messages per
device (counted by a raw subscriber on ``es/<fleet>/dev/#``), the server's CPU seconds (all
threads, ``/proc/<pid>/stat``) per converged device, its RSS (end and peak), signatures
verified and refused by the generator; then a telemetry ingest burst as in ``fleet.py``.

``--replicas N`` starts N fleet-server processes on the one PostgreSQL (``--postgres`` or
``--database``), with their own client ids and one ``share_group``, so the broker splits
reported state, presence and telemetry between them; CPU and RSS are then the sum over the
replicas, and a second table shows each one: messages handled by kind (from its
``/api/v1/stats``), CPU seconds of the rollout and of the telemetry burst, RSS, and whether it
ran the controller.

Usage::

    .venv/bin/python benchmarks/fleet_protocol.py --devices 1000 10000 100000
    .venv/bin/python benchmarks/fleet_protocol.py --devices 10000 --postgres
    .venv/bin/python benchmarks/fleet_protocol.py --devices 10000 --postgres --replicas 2
    .venv/bin/python benchmarks/fleet_protocol.py --devices 20000 --postgres --py-spy /tmp/spy
    .venv/bin/python benchmarks/fleet_protocol.py --devices 1000 \
        --telemetry 300000 --telemetry-rate 5000

``--py-spy FILE`` samples the server's threads during the rollout (``py-spy record``, 20 Hz,
collapsed stacks with thread names; the telemetry burst into ``FILE.telemetry``), to name the
bottleneck of a run.

The telemetry is published from pre-encoded packets over raw sockets (``mqtt_blast.py``), as
fast as the broker takes them or paced with ``--telemetry-rate``: a rate held for a minute
shows whether ingest keeps up (it then ends a moment after the last message is published).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fleet import _cpu_s, _proc_kib, telemetry_burst  # noqa: E402
from fleet_costs import other_cpu_s, py_spy  # noqa: E402
from mqtt_blast import RawCounter, RawPublisher, RawSubscriber  # noqa: E402
from support.broker import Mosquitto, mosquitto_binary  # noqa: E402
from support.fleet import (  # noqa: E402
    FleetServerProcess,
    Postgres,
    make_keys,
    postgres_bin,
    signed_tar,
    wait_for,
)

from edgeserve.errors import EdgeServeError  # noqa: E402

FLEET = "bench"


class ProtocolDevices:
    """N devices as protocol: verify each desired document, answer with two reports."""

    def __init__(self, url: str, keys: Path, connections: int) -> None:
        from edgeserve.trust import TrustAnchor, verify_keyring

        now = datetime.now(timezone.utc)
        anchor = TrustAnchor.load(keys / "root.json")
        self.keyring = verify_keyring((keys / "keyring.json").read_bytes(), None, anchor, now=now)
        self.seq: dict[str, int] = {}
        self.active: dict[str, int] = {}
        self.verified = 0
        self.refused = 0
        self._lock = threading.Lock()
        # one subscription receives every device's desired state; the reports go out over
        # raw QoS 1 connections: through paho, the generator spent more CPU than the server,
        # on the same cores
        self.reports = RawPublisher(url, connections, "bench-devices")
        self.subscriber = RawSubscriber(
            url, f"es/{FLEET}/dev/+/desired", self._on_desired, 1, "bench-devices"
        )

    def _on_desired(self, topic: str, payload: bytes, retained: bool) -> None:
        from edgeserve.protocol import (
            DesiredState,
            InstallState,
            ModelStatus,
            Reported,
            encode,
            parse_topic,
            topics,
        )
        from edgeserve.trust import format_time, verify_document

        now = datetime.now(timezone.utc)
        try:
            fleet, device, _kind = parse_topic("es/", topic)
            doc = verify_document(payload, self.keyring, now, "desired")
            desired = DesiredState.from_dict(doc)
            if desired.fleet != fleet or desired.device != device:
                raise ValueError("document for another device")
            if desired.seq <= self.seq.get(device, 0):
                return  # a replay or the retained copy of one already applied
        except (EdgeServeError, ValueError):  # refused and counted, as a device reports it
            with self._lock:
                self.refused += 1
            return
        with self._lock:
            self.verified += 1
            self.seq[device] = desired.seq
        t = topics("es/", fleet, device).reported
        stamp = format_time(now)
        for name, target in desired.models.items():
            previous = self.active.get(device)
            for state, active in (
                (InstallState.DOWNLOADING, previous),
                (InstallState.ACTIVE, target.version),
            ):
                status = ModelStatus(state, active=active, target=target.version)
                report = Reported(device, desired.seq, stamp, {name: status}, "bench")
                self.reports.publish(t, encode(report), retain=True)
            self.active[device] = target.version

    def stop(self) -> None:
        self.subscriber.stop()
        self.reports.close()


def _round(v: Any) -> Any:
    if isinstance(v, list):
        return [_round(x) for x in v]
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    return round(v, 3) if isinstance(v, float) else v


def _handled(server: FleetServerProcess) -> dict[str, Any]:
    """What one replica's ingest received, by kind, and whether it runs the controller."""
    with server.client() as client:
        stats = client.stats()
    return {**stats["ingest"]["received"], "controller": stats["controller"]}


def register(servers: list[FleetServerProcess], ids: list[str], threads: int = 4) -> None:
    """Register ``ids`` over the operator API, ``threads`` requests at a time (one device per
    request, as an operator's provisioning script would; each hashes a new password, and on
    PostgreSQL waits on its commits, so requests in parallel keep the cores busy)."""

    def worker(k: int) -> None:
        with servers[k % len(servers)].client() as client:
            for device in ids[k::threads]:
                client.add_device(device, {"hw": "sim"})

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))


def run(
    n: int,
    connections: int,
    workdir: Path,
    database: str,
    telemetry: int,
    replicas: int = 1,
    telemetry_rate: float = 0.0,
    profile: Path | None = None,
) -> dict[str, Any]:
    broker = Mosquitto(workdir / "mosquitto").start()
    keys = make_keys(workdir / "keys")
    # replicas: one database, one artifacts directory, their own client ids, one share group
    servers = [
        FleetServerProcess(
            workdir / f"server-{k}",
            broker.url,
            tick_s=0.5,
            fleet=FLEET,
            database=database,
            keys=keys,
            data_dir=str(workdir / "data"),
            client_id=f"fleet-server-{k}",
            share_group="bench" if replicas > 1 else "",
        )
        for k in range(replicas)
    ]
    server = servers[0]
    devices = counter = None
    try:
        for s in servers:
            s.start(timeout_s=60)
        pids = [s.process.pid for s in servers if s.process is not None]
        with server.client() as client:
            client.upload_release(signed_tar(workdir / "rel", server.keys, version=1))
        t = time.monotonic()
        ids = [f"dev-{i:06d}" for i in range(n)]
        register(servers, ids)
        register_s = time.monotonic() - t
        devices = ProtocolDevices(broker.url, server.keys, connections)
        counter = RawCounter(broker.url, f"es/{FLEET}/dev/#")
        counter.active = True
        with py_spy(pids[0], profile), server.client() as client:
            cpu0 = [_cpu_s(pid) for pid in pids]
            others0 = other_cpu_s(broker)
            t0 = time.monotonic()
            rid = client.start_rollout(
                {"model": "digits", "version": 1, "phases": [100], "soak": 0, "max_failure_pct": 5}
            )
            st = wait_for(
                lambda: (s := client.rollout(rid, devices=False))["status"] == "completed" and s,
                1800,
                "rollout completed",
                interval_s=0.5,
            )
            converge_s = time.monotonic() - t0
            cpus = [_cpu_s(pid) - c0 for pid, c0 in zip(pids, cpu0, strict=True)]
            others = {k: v - others0[k] for k, v in other_cpu_s(broker).items()}
            cpu = sum(cpus)
        time.sleep(1.0)
        counter.active = False
        row: dict[str, Any] = {
            "devices": n,
            "replicas": replicas,
            "active": st["counts"]["active"],
            "register_s": register_s,
            "converge_s": converge_s,
            "server_cpu_s": cpu,
            "server_cpu_ms_per_device": cpu / n * 1000,
            # what else the machine's cores ran meanwhile (the generator is this process)
            "other_cpu_s": others,
            "cores": os.cpu_count(),
            "msgs_per_device": sum(counter.counts.values()) / n,
            "verified": devices.verified,
            "refused": devices.refused,
            "server_rss_mb": sum(_proc_kib(pid, "VmRSS") for pid in pids) / 1024,
            "server_peak_rss_mb": sum(_proc_kib(pid, "VmHWM") for pid in pids) / 1024,
        }
        print("rollout:", json.dumps({k: _round(v) for k, v in row.items()}), flush=True)
        if telemetry:
            spy_file = profile and profile.with_name(f"{profile.name}.telemetry")
            with py_spy(pids[0], spy_file):
                row.update(telemetry_burst(broker.url, ids, telemetry, servers, telemetry_rate))
        tel = row.get("telemetry_per_replica") or [{"cpu_s": 0.0}] * replicas
        row["per_replica"] = [
            {
                **_handled(s),
                "rollout_cpu_s": c,
                "telemetry_cpu_s": t["cpu_s"],
                "rss_mb": _proc_kib(pid, "VmRSS") / 1024,
            }
            for s, c, t, pid in zip(servers, cpus, tel, pids, strict=True)
        ]
        return row
    finally:
        if counter is not None:
            counter.stop()
        if devices is not None:
            devices.stop()
        for s in servers:
            s.stop()
        broker.stop()


def print_replicas(rows: list[dict[str, Any]]) -> None:
    """Per replica: messages handled (by kind), CPU seconds, RSS, the controller."""
    print(
        f"\n{'devices':>8} {'replica':>8} {'role':>10} {'reported':>9} {'telemetry':>10} "
        f"{'presence':>9} {'CPU s roll':>11} {'CPU s tel':>10} {'RSS MB':>7}"
    )
    for r in rows:
        for k, p in enumerate(r["per_replica"]):
            print(
                f"{r['devices']:>8} {k:>8} {'controller' if p['controller'] else 'ingest':>10} "
                f"{p.get('reported', 0):>9} {p.get('telemetry', 0):>10} "
                f"{p.get('presence', 0):>9} {p['rollout_cpu_s']:>11.2f} "
                f"{p['telemetry_cpu_s']:>10.2f} {p['rss_mb']:>7.0f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument(
        "--connections", type=int, default=4, help="generator connections for reports"
    )
    parser.add_argument("--database", default="", help="PostgreSQL URL (default: SQLite)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="start a throwaway PostgreSQL cluster (Debian's binaries) for each N",
    )
    parser.add_argument("--telemetry", type=int, default=20000, help="telemetry burst (0 = none)")
    parser.add_argument(
        "--telemetry-rate",
        type=float,
        default=0.0,
        help="publish the telemetry at this many msg/s (default: as fast as the broker takes it)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="fleet-server processes on one PostgreSQL, splitting ingest by shared subscription",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="profile the (first) server during the rollout with py-spy into FILE "
        "(collapsed stacks per thread; FILE gets the device count appended)",
    )
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    if args.replicas > 1 and not (args.postgres or args.database.startswith("postgres")):
        parser.error("--replicas N > 1 needs --postgres or --database postgresql://... (shared)")
    if args.postgres and postgres_bin() is None:
        parser.error("--postgres needs Debian's PostgreSQL server: apt-get install postgresql")
    try:
        mosquitto_binary()
    except RuntimeError:
        parser.error("Mosquitto is not installed: apt-get install mosquitto")
    rows = []
    for n in args.devices:
        with tempfile.TemporaryDirectory(prefix=f"edgeserve-fleet-protocol-{n}-") as tmp:
            Path(tmp).chmod(0o755)  # the postgres user must reach its cluster directory
            pg = Postgres(Path(tmp) / "pg").start() if args.postgres else None
            try:
                database = pg.create_database("fleet") if pg is not None else args.database
                rows.append(
                    run(
                        n,
                        args.connections,
                        Path(tmp),
                        database,
                        args.telemetry,
                        args.replicas,
                        args.telemetry_rate,
                        args.py_spy and args.py_spy.with_name(f"{args.py_spy.name}.{n}"),
                    )
                )
            finally:
                if pg is not None:
                    pg.stop()
        print(json.dumps(_round(rows[-1])))
    print(
        f"\n{'devices':>8} {'register s':>11} {'converge s':>11} {'CPU ms/device':>14} "
        f"{'msgs/device':>12} {'RSS MB':>7} {'peak MB':>8} {'telemetry msg/s':>16}"
    )
    for r in rows:
        print(
            f"{r['devices']:>8} {r['register_s']:>11.1f} {r['converge_s']:>11.1f} "
            f"{r['server_cpu_ms_per_device']:>14.2f} {r['msgs_per_device']:>12.2f} "
            f"{r['server_rss_mb']:>7.0f} {r['server_peak_rss_mb']:>8.0f} "
            f"{r.get('telemetry_msgs_per_s', float('nan')):>16.0f}"
        )
    print(
        f"\n{'devices':>8} {'CPU s during the rollout: server':>33} {'generator':>10} "
        f"{'broker':>7} {'PostgreSQL':>11} {'of cores x wall':>16}"
    )
    for r in rows:
        o = r["other_cpu_s"]
        print(
            f"{r['devices']:>8} {r['server_cpu_s']:>33.1f} {o['generator']:>10.1f} "
            f"{o['broker']:>7.1f} {o['postgres']:>11.1f} {r['cores'] * r['converge_s']:>16.1f}"
        )
    print_replicas(rows)
    print("goals: converged <= 120 s, <= 6 messages per device, RSS <= 500 MB, >= 5,000 msg/s")


if __name__ == "__main__":
    main()
