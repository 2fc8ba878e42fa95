"""A real fleet server process on a free loopback port, for tests and benchmarks.

``FleetServerProcess(workdir, broker_url).start()`` writes keys (``edgeserve keys init``
library), a ``fleet.toml`` and runs ``python -m edgeserve.cli fleet serve`` in a subprocess;
``.client()`` returns an operator :class:`~edgeserve.fleet_server.client.FleetClient`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
from edgeserve.fleet_server.client import FleetClient
from edgeserve.fleet_server.releases import prepare_release

from edgeserve.trust import SigningKey

from .broker import free_port
from .models import make_linear_bundle

T = TypeVar("T")
TOKEN = "test-operator-token-0123456789"
SERVER_USER = "fleet-server"
SERVER_PASSWORD = "fleet-server-password"


def make_keys(directory: Path) -> Path:
    """Root, release and fleet keys plus the keyring, as ``edgeserve keys init`` writes them."""
    from edgeserve.trust.keydir import init_keys

    if not (directory / "root.key").exists():
        init_keys(directory)
    return directory


def write_fleet_toml(
    workdir: Path,
    broker_url: str,
    *,
    port: int,
    keys: Path,
    database: str = "",
    tick_s: float = 0.2,
    broker_auth: bool = False,
    fleet: str = "test",
    extra: str = "",
    data_dir: str = "data",
    client_id: str = "fleet-server",
    share_group: str = "",
    broker_user: str = SERVER_USER,
    broker_password: str = SERVER_PASSWORD,
) -> Path:
    """A ``fleet.toml`` for tests (fast controller tick)."""
    lines = [
        "[server]",
        f"port = {port}",
        f'token = "{TOKEN}"',
        f'data_dir = "{data_dir}"',
        *([f'database = "{database}"'] if database else []),
        "",
        "[broker]",
        f'url = "{broker_url}"',
        f'fleet = "{fleet}"',
        f'client_id = "{client_id}"',
        *([f'share_group = "{share_group}"'] if share_group else []),
        *(
            [f'username = "{broker_user}"', f'password = "{broker_password}"']
            if broker_auth
            else ['username = ""']
        ),
        "",
        "[rollouts]",
        f"tick_s = {tick_s}",
        "",
        "[keys]",
        f'fleet_key = "{keys / "fleet.key"}"',
        f'keyring = "{keys / "keyring.json"}"',
        extra,
    ]
    path = workdir / "fleet.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class FleetServerProcess:
    """A ``edgeserve fleet serve`` process. ``stop``/``start`` keep its data directory.

    Replicas on one PostgreSQL ``database`` take their own ``client_id`` and (with
    ``broker_auth``) ``broker_user``, one ``share_group``, and may share ``data_dir`` (an
    absolute path), where the artifacts live."""

    workdir: Path
    broker_url: str
    port: int = field(default_factory=free_port)
    keys: Path | None = None
    database: str = ""
    broker_auth: bool = False
    tick_s: float = 0.2
    fleet: str = "test"
    data_dir: str = "data"
    client_id: str = "fleet-server"
    share_group: str = ""
    broker_user: str = SERVER_USER
    broker_password: str = SERVER_PASSWORD
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        """The ``fleet.toml``."""
        return self.workdir / "fleet.toml"

    def start(self, timeout_s: float = 30.0) -> FleetServerProcess:
        """Start the server and wait until its HTTP API answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keys = make_keys(self.keys or self.workdir / "keys")
        write_fleet_toml(
            self.workdir,
            self.broker_url,
            port=self.port,
            keys=self.keys,
            database=self.database,
            tick_s=self.tick_s,
            broker_auth=self.broker_auth,
            fleet=self.fleet,
            data_dir=self.data_dir,
            client_id=self.client_id,
            share_group=self.share_group,
            broker_user=self.broker_user,
            broker_password=self.broker_password,
        )
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from edgeserve.cli import main; main()",
                "-v",
                "fleet",
                "serve",
                "--config",
                str(self.config_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fleet server exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"fleet server not up after {timeout_s}s: {self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        """The last lines of the server's log."""
        path = self.workdir / "server.log"
        return "\n".join(path.read_text().splitlines()[-n:]) if path.exists() else ""

    def client(self) -> FleetClient:
        """An operator client."""
        return FleetClient(self.url, TOKEN)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process (SIGKILL with ``kill``)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux /proc)."""
        if self.process is None:
            return 0
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def postgres_bin() -> Path | None:
    """Directory of the PostgreSQL server binaries (Debian: /usr/lib/postgresql/<v>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster on a free loopback port (``initdb -A trust``), run as the
    ``postgres`` user when we are root (PostgreSQL refuses to run as root)."""

    workdir: Path
    port: int = field(default_factory=free_port)

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> Postgres:
        """initdb + pg_ctl start."""
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries are not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        data = self.workdir / "data"
        self._run(str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data))
        self._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.workdir / "pg.log"),
            "-o",
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1",
            "-w",
            "start",
        )
        return self

    def url(self, database: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:PORT/<database>``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database and return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """pg_ctl stop (fast)."""
        bindir = postgres_bin()
        if bindir is not None:
            self._run(
                str(bindir / "pg_ctl"), "-D", str(self.workdir / "data"), "-m", "fast", "-w", "stop"
            )


def signed_tar(
    workdir: Path,
    keys: Path,
    *,
    name: str = "digits",
    version: int = 1,
    simulate: str | None = None,
    seed: int = 0,
) -> Path:
    """A signed bundle tar of the small linear model. ``simulate="fail_health"`` marks it so
    that :class:`edgeserve.agent.sync.simulator.SimulatedInstaller` fails its health check (the
    release is still validly signed, like a real bad model)."""
    directory = workdir / f"{name}-v{version}"
    workdir.mkdir(parents=True, exist_ok=True)
    make_linear_bundle(
        directory,
        name=name,
        version=version,
        seed=seed or version,
        validation={"simulate": simulate} if simulate else None,
    )
    return prepare_release(directory, SigningKey.load(keys / "release.key"), workdir)


def device_settings(
    server: FleetServerProcess, broker_url: str, **extra: object
) -> dict[str, object]:
    """The common ``[fleet]`` settings of simulated devices talking to ``server``."""
    assert server.keys is not None
    return {
        "broker": broker_url,
        "fleet": "test",
        "prefix": "es/",
        "trust_anchor": str(server.keys / "root.json"),
        "server_url": server.url,
        "retry_backoff_s": 0.2,
        "download_retries": 3,
        "download_timeout_s": 10.0,
        "keepalive_s": 5,
        **extra,
    }


def register_devices(
    server: FleetServerProcess, ids: list[str], tags: dict[str, str]
) -> list[tuple[str, str]]:
    """Register devices; return ``(id, password)`` pairs."""
    with server.client() as client:
        return [(d, client.add_device(d, tags)["password"]) for d in ids]


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def signed_release_tar(
    tmp: Path,
    keys: Path,
    *,
    name: str = "digits",
    version: int = 1,
    seed: int = 0,
    key: str = "release.key",
) -> Path:
    """A bundle of the linear model, signed with ``keys/<key>`` and packed as a tar."""
    bundle = make_linear_bundle(
        tmp / f"{name}-{version}-{seed}", name=name, version=version, seed=seed
    )
    out = tmp / f"tars-{name}-{version}-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    return prepare_release(bundle.path, SigningKey.load(keys / key), out)
