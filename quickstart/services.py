"""Starting the quickstart's services: keys, an MQTT broker, the fleet server and the agents.

Each one is started through the real CLI (``edgeserve keys init``, ``edgeserve fleet serve``,
``edgeserve fleet device add``, ``edgeserve agent run``) with the configuration files an
operator would write; the broker is restarted with the credentials and ACL that
``edgeserve fleet broker-config`` writes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from pathlib import Path
from typing import Any

from edgeserve.quickstart.checks import AgentInfo
from edgeserve.quickstart.http import answers
from edgeserve.quickstart.procs import Service, Supervisor

from edgeserve.errors import EdgeServeError

__all__ = ["FLEET", "FleetServices", "free_port"]

FLEET = "quickstart"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, chosen below the range the kernel draws local
    ports of outgoing connections from. A port from ``bind(0)`` comes from that same range, so
    before the service that was given it binds, a client connection made meanwhile (the
    quickstart's own, to the broker and the fleet server) can take it: an agent then fails with
    "Address already in use"."""
    import random
    import socket

    low = 32768  # Linux's default first ephemeral port
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = random.sample(range(10000, low), min(200, max(low - 10000, 0)))
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # no free port below the range: take one from it
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FleetServices:
    """Step 3 of the scenario (a base of :class:`~edgeserve.quickstart.scenario.Quickstart`,
    which sets these attributes and provides ``step`` and ``note``)."""

    workdir: Path
    n_agents: int
    sup: Supervisor
    token: str
    fleet_port: int
    fleet_url: str
    broker: Any
    broker_kind: str
    broker_url: str
    fleet_service: Service | None
    agents: list[AgentInfo]
    devices: list[dict[str, Any]]

    def step(self, title: str) -> None:
        raise NotImplementedError

    def note(self, text: str) -> None:
        raise NotImplementedError

    def start_services(self) -> None:
        """Step 3: keys, broker, fleet server, devices, agents."""
        self.step(f"start an MQTT broker, a fleet server and {self.n_agents} agents")
        self.sup.run(["keys", "init", "--out", "keys"])
        from edgeserve.fleet_server.broker.embedded import start_embedded_broker

        broker_dir = self.workdir / "broker"
        if self.broker_url:
            self.note(f"broker: the one configured, {self.broker_url}")
        else:
            self.broker = start_embedded_broker(
                kind=self.broker_kind,  # type: ignore[arg-type]
                workdir=broker_dir / "boot",
            )
            self.broker_url = self.broker.url
            self.note(f"broker: {self.broker.kind} on {self.broker.url}")
        (self.workdir / "fleet.toml").write_text(
            "[server]\n"
            f'host = "127.0.0.1"\nport = {self.fleet_port}\ntoken = "{self.token}"\n'
            'data_dir = "fleet-data"\n\n'
            "[broker]\n"
            f'url = "{self.broker_url}"\nfleet = "{FLEET}"\n'
            f'password = "{secrets.token_urlsafe(16)}"\n\n'
            "[rollouts]\ntick_s = 0.5\n\n"
            '[keys]\nfleet_key = "keys/fleet.key"\nkeyring = "keys/keyring.json"\n'
        )
        self.sup.env = {
            "EDGESERVE_FLEET_URL": self.fleet_url,
            "EDGESERVE_FLEET_TOKEN": self.token,
        }
        self.fleet_service = self.sup.start(
            "fleet-server", ["fleet", "serve", "--config", "fleet.toml"]
        )
        self.sup.wait_for(
            "the fleet server",
            lambda: answers(f"{self.fleet_url}/healthz"),
            timeout_s=30,
            watch=[self.fleet_service],
        )
        self.note(f"fleet server: {self.fleet_url}")
        for i in range(1, self.n_agents + 1):
            out = self.sup.run(
                ["fleet", "device", "add", f"dev-{i}", "--tags", f"site=lab,slot={i}", "--json"]
            )
            self.devices.append(json.loads(out))
        # every device gets its own broker user; the ACL lets it read only its own desired
        # state and write only its own reports (Mosquitto password_file + acl_file)
        self.sup.run(["fleet", "broker-config", "--out", "broker/auth"])
        if self.broker is not None:
            self._restart_broker_with_auth(broker_dir / "auth")
        else:
            self.note("a configured broker is left as it is: give it broker/auth/{passwords,acl}")
        for creds in self.devices:
            self.agents.append(self._start_agent(creds))
        for agent in self.agents:
            self.sup.wait_for(
                f"{agent.device} to be live",
                lambda a=agent: answers(f"{a.url}/v2/health/live"),
                timeout_s=30,
                watch=[agent.service],
            )
        self.note(", ".join(f"{a.device}: {a.url}" for a in self.agents))

    def _restart_broker_with_auth(self, auth_dir: Path) -> None:
        from edgeserve.fleet_server.broker.embedded import start_embedded_broker

        # the two files `edgeserve fleet broker-config --out DIR` writes
        password_file, acl_file = auth_dir / "passwords", auth_dir / "acl"
        for path in (password_file, acl_file):
            if not path.is_file():
                raise EdgeServeError(f"edgeserve fleet broker-config wrote no {path}")
        port = self.broker.port
        self.broker.stop()
        self.broker = start_embedded_broker(
            port=port,
            password_file=password_file,
            acl_file=acl_file,
            kind=self.broker_kind,  # type: ignore[arg-type]
            workdir=auth_dir.parent / "run",
        )
        self.note(
            f"broker restarted with {password_file.name} and {acl_file.name} from broker-config"
        )

    def _start_agent(self, creds: dict[str, Any]) -> AgentInfo:
        device = str(creds["id"])
        state = self.workdir / "devices" / device
        state.mkdir(parents=True, exist_ok=True)
        port = free_port()
        (state / "agent.toml").write_text(
            f'state_dir = "{state}"\n\n'
            f'[server]\nhost = "127.0.0.1"\nport = {port}\n\n'
            "[telemetry]\ninterval_s = 1.0\n\n"
            "[fleet]\n"
            f'broker = "{creds["broker_url"]}"\n'
            f'device = "{device}"\n'
            f'username = "{creds["username"]}"\n'
            f'password = "{creds["password"]}"\n'
            f'fleet = "{creds["fleet"]}"\n'
            f'server_url = "{creds["server_url"]}"\n'
            f'trust_anchor = "{self.workdir / "keys" / "root.json"}"\n'
            "telemetry_interval_s = 1\n"
        )
        service = self.sup.start(device, ["agent", "run", "--config", str(state / "agent.toml")])
        return AgentInfo(device, f"http://127.0.0.1:{port}", state, service)
