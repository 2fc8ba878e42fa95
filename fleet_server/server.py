"""One fleet server: store + keys + MQTT client + engine + HTTP app, and ``serve()``.

The library is usable without the CLI: ``FleetServer(load_config(path))`` then ``serve()``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeserve.errors import ConfigError
from edgeserve.mqtt import MqttClient, MqttConfig
from edgeserve.protocol import topics
from edgeserve.trust import Keyring, SigningKey
from edgeserve.trust.keydir import load_keyring, load_keyring_chain

from .broker import acl, files, passwords
from .broker.status import BrokerStatus
from .config import FleetConfig
from .desired import DesiredBuilder
from .engine import Engine
from .releases import ingest_release
from .store import Store
from .store.db import open_database

__all__ = ["FleetServer"]

log = logging.getLogger(__name__)
status_log = logging.getLogger("edgeserve.fleet_server.broker.status")


class FleetServer:
    """Everything a running fleet server holds.

    Args:
        config: the validated ``fleet.toml``.

    Raises:
        ConfigError: keys missing, or the fleet key is not in the keyring.
        StorageError: the database or data directory cannot be opened.
    """

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.artifacts = config.server.data_dir / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._keys_stamp: tuple[float, float] = (0.0, 0.0)
        self.keyring, self.keyring_bytes, self.fleet_key, chain = self._load_keys()
        self.store = Store(open_database(config.server.database_url))
        if config.broker.username:  # replicas on one database list each other's broker users
            self.store.add_server_account(
                config.broker.username, passwords.hash_password(config.broker.password)
            )
        self.prefix = f"{config.broker.prefix}/"
        self._embedded: Any = None
        self.broker_status = BrokerStatus(config.broker.url, config.broker.username)
        builder = DesiredBuilder(
            self.store,
            self.fleet_key,
            config.broker.fleet,
            config.server.base_url,
            config.rollouts.desired_ttl_s,
            keyrings=chain,
        )
        self.mqtt = MqttClient(
            MqttConfig(
                url=config.broker.url,
                client_id=config.broker.client_id,
                username=config.broker.username or None,
                password=config.broker.password or None,
                keepalive_s=config.broker.keepalive_s,
                max_queued_messages=0,
            ),
            on_connect=self._on_connect,
            on_disconnect=self.broker_status.lost,
            on_connect_failed=self.broker_status.failed,
        )
        self.engine = Engine(
            self.store,
            builder,
            self.prefix,
            config.broker.fleet,
            self._publish,
            tick_s=config.rollouts.tick_s,
            max_payload_bytes=config.broker.max_payload_bytes,
            telemetry_retention_s=config.rollouts.telemetry_retention_s,
            before_tick=self.refresh_keys,
        )

    # -- keys -----------------------------------------------------------------------------

    def _stamp(self) -> tuple[float, float]:
        return (self.config.keyring.stat().st_mtime, self.config.fleet_key.stat().st_mtime)

    def _load_keys(self) -> tuple[Keyring, bytes, SigningKey, list[dict[str, Any]]]:
        """Read the keyring (and its chain) and the fleet key; check they belong together.

        Raises:
            ConfigError: missing files, or the fleet key is not in the keyring.
        """
        cfg = self.config
        try:
            stamp = self._stamp()
        except OSError as exc:
            raise ConfigError(f"keys: {exc.filename}: {exc.strerror}") from exc
        keyring = load_keyring(cfg.keyring)
        data = cfg.keyring.read_bytes()
        fleet_key = SigningKey.load(cfg.fleet_key)
        if fleet_key.keyid not in keyring.fleet_keys:
            raise ConfigError(
                f"{cfg.fleet_key}: this fleet key is not in {cfg.keyring}; devices would "
                "reject every desired state (run edgeserve keys rotate --roles fleet)"
            )
        chain_dir = cfg.keyring.parent
        chain = load_keyring_chain(chain_dir) if (chain_dir / "keyrings").is_dir() else []
        self._keys_stamp = stamp
        return keyring, data, fleet_key, chain[-8:]

    def refresh_keys(self) -> None:
        """Pick up ``edgeserve keys rotate`` without a restart: when the keyring or the fleet
        key file changed, reload both (a broken pair is logged and the old keys kept)."""
        try:
            if self._stamp() == self._keys_stamp:
                return
            keyring, data, fleet_key, chain = self._load_keys()
        except (ConfigError, OSError) as exc:
            log.error("keys changed but cannot be used, keeping the old ones: %s", exc)
            with contextlib.suppress(OSError):
                self._keys_stamp = self._stamp()  # say it once, not on every tick
            return
        self.keyring, self.keyring_bytes, self.fleet_key = keyring, data, fleet_key
        self.engine.builder.fleet_key = fleet_key
        self.engine.builder.keyrings = tuple(chain)
        log.info("reloaded keyring v%d and fleet key %s", keyring.version, fleet_key.keyid[:12])

    # -- MQTT -----------------------------------------------------------------------------

    @property
    def mqtt_connected(self) -> bool:
        """Whether the broker connection is up."""
        return self.mqtt.connected

    def _publish(self, topic: str, payload: bytes) -> None:
        # retained + QoS 1: a device that connects later still gets its latest document
        self.mqtt.publish(topic, payload, qos=1, retain=True)

    def _on_connect(self) -> None:
        self.broker_status.connected()
        self.engine.request_republish()

    def start(self) -> None:
        """Start ingest, the controller and the MQTT connection (returns immediately)."""
        for f in self.engine.filters(self.config.broker.share_group):
            self.mqtt.subscribe(f, self.engine.on_message)
        self.engine.start()
        self.mqtt.start()

    def stop(self) -> None:
        """Stop MQTT, the engine and the store."""
        self.mqtt.stop()
        self.engine.stop()
        self.store.close()

    # -- operations used by the API -----------------------------------------------------

    def add_release(self, upload: Path) -> dict[str, Any]:
        """Verify and store an uploaded tar (against the current keyring)."""
        self.refresh_keys()
        return ingest_release(self.store, self.artifacts, upload, self.keyring)

    def add_device(self, device: str, tags: Mapping[str, str]) -> dict[str, Any]:
        """Register a device; return its one-time credentials and agent config snippet."""
        password = passwords.new_password()
        self.store.add_device(device, tags, passwords.hash_password(password))
        self.store.audit(
            "operator", "device.add", f"device:{device}", "operator request", {"tags": dict(tags)}
        )
        self.engine.device_added(device)
        self._refresh_embedded_broker()
        t = topics(self.prefix, self.config.broker.fleet, device)
        return {
            "id": device,
            "tags": dict(tags),
            "username": device,
            "password": password,
            "broker_url": self.config.broker.url,
            "fleet": self.config.broker.fleet,
            "prefix": self.prefix,
            "server_url": self.config.server.base_url,
            "keyring_url": f"{self.config.server.base_url}/keyring.json",
            "topics": t.__dict__,
        }

    def _refresh_embedded_broker(self) -> None:
        # With --embedded-broker and credentials, a new device can connect right away: rewrite
        # the password file and ACL and have the broker re-read them (SIGHUP for Mosquitto).
        if self._embedded is None or not self.config.broker.username:
            return
        self._write_broker_files(self.config.server.data_dir / "broker")
        self._embedded.reload()

    def _write_broker_files(self, work: Path) -> files.BrokerFiles:
        """The embedded broker's password file and ACL: every registered device and the server."""
        b = self.config.broker
        return files.write_broker_files(
            work,
            self.store.credential_hashes(),
            prefix=b.prefix,
            fleet=b.fleet,
            server_user=b.username,
            server_password=b.password,
            url=b.url,
            replicas=self.store.server_accounts(),
        )

    def device_list(self) -> list[dict[str, Any]]:
        """Devices with presence and what they report running."""
        out = []
        for d in self.store.devices():
            models = {
                n: {"state": s.get("state"), "active": s.get("active")}
                for n, s in (d.reported.get("models") or {}).items()
            }
            out.append(
                {
                    "id": d.id,
                    "tags": dict(d.tags),
                    "presence": d.presence,
                    "models": models,
                    "desired_seq": d.desired_seq,
                    "reported_at": d.reported_at,
                }
            )
        return out

    def broker_files(self) -> dict[str, str]:
        """The Mosquitto password file and ACL for the current devices and the broker user of
        every fleet-server replica that has started on this database, and the broker URL (its
        listener goes into the generated ``mosquitto.conf``)."""
        b = self.config.broker
        servers = self.store.server_accounts()
        return {
            "passwords": passwords.password_file_text([*self.store.credential_hashes(), *servers]),
            "acl": acl.acl_text(b.prefix, b.fleet, [u for u, _h in servers]),
            "url": b.url,
        }

    def rollout_list(self) -> list[dict[str, Any]]:
        """Every rollout, newest first."""
        return [
            {
                "id": r.id,
                "model": r.model,
                "version": r.version,
                "status": r.status,
                "phase_percent": r.phase_percent,
                "reason": r.reason,
            }
            for r in self.store.rollouts()
        ]

    def experiment_list(self) -> list[dict[str, Any]]:
        """Every experiment, newest first."""
        from .experiments import experiment

        return [
            {k: v for k, v in experiment(self.store, eid).items() if k != "devices"}
            for eid in self.store.experiment_ids()
        ]

    def rollout_action(self, rollout_id: int, action: str, reason: str) -> dict[str, Any]:
        """Pause, resume, abort or roll back a rollout for the operator (audited), publish the
        devices' new desired states, and return the rollout's status.

        Raises:
            ConfigError: unknown action or not allowed now.
            NotFoundError: no such rollout.
        """
        from .rollout import operator_action
        from .rollout.views import rollout_status

        changed = operator_action(self.store, rollout_id, action, "operator", reason)
        self.engine.publish_desired(changed)
        self.engine.wake()
        return rollout_status(self.store, rollout_id)

    def promote_experiment(self, experiment_id: int, version: int | None = None) -> int:
        """End an experiment and roll out its winner (or ``version``); return the rollout id.

        Raises:
            ConfigError: no winner and no version, or a version outside the experiment.
            NotFoundError: no such experiment.
        """
        from .experiments import promote

        rid = promote(
            self.store,
            experiment_id,
            "operator",
            version=version,
            install_timeout_s=self.config.rollouts.install_timeout_s,
        )
        self.engine.wake()
        return rid

    def stats(self) -> dict[str, Any]:
        """Counters: MQTT ingest (received, dropped by reason), published, devices."""
        return {
            "mqtt_connected": self.mqtt_connected,
            "ingest": self.engine.counters.to_dict(),
            "published": self.engine.published,
            "controller": self.engine.leader,
            "devices": self.store.device_count(),
        }

    # -- run ------------------------------------------------------------------------------

    def serve(self, embedded_broker: bool = False) -> None:
        """Run until SIGINT/SIGTERM: MQTT + engine in threads, uvicorn in this thread."""
        import uvicorn

        from .web import build_app

        # The ingest thread waits on the database and the controller on MQTT, each letting go
        # of the GIL and waiting up to the switch interval for it back while the other threads
        # compute; 1 ms instead of Python's 5 converged 20,000 devices on PostgreSQL in 45.3,
        # 41.0 and 32.9 s against 50.4, 44.1 and 38.7 s (alternated runs of fleet_protocol.py).
        sys.setswitchinterval(0.001)
        broker = None
        if embedded_broker:
            broker = self._embedded = self._start_embedded_broker()
        self.start()
        cfg = self.config.server
        server = uvicorn.Server(
            uvicorn.Config(
                build_app(self),
                host=cfg.host,
                port=cfg.port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        who = f"as {self.config.broker.username}" if self.config.broker.username else "anonymously"
        status_log.info(
            "fleet server on http://%s:%d (HTTP serves now); broker %s: connecting %s, "
            "retrying until it answers",
            cfg.host,
            cfg.port,
            self.config.broker.url,
            who,
        )
        # uvicorn shuts down gracefully on SIGTERM and then re-raises it with the handler that
        # was installed before it started; a no-op handler lets our cleanup below run (and stop
        # an embedded broker) instead of the default action killing the process.
        signal.signal(signal.SIGTERM, lambda *_: None)
        try:
            server.run()
        finally:
            self.stop()
            if broker is not None:
                broker.stop()

    def _start_embedded_broker(self) -> Any:
        try:
            from .broker.embedded import start_embedded_broker
        except ImportError as exc:
            raise ConfigError("--embedded-broker is not available in this build") from exc
        from edgeserve.mqtt import parse_broker_url

        host, port = parse_broker_url(self.config.broker.url)
        work = self.config.server.data_dir / "broker"
        work.mkdir(parents=True, exist_ok=True)
        b = self.config.broker
        if not b.username:  # no server credentials configured: an anonymous local broker
            return start_embedded_broker(host, port, workdir=work)
        # Devices registered later are added by _refresh_embedded_broker.
        written = self._write_broker_files(work)
        return start_embedded_broker(
            host, port, password_file=written.password_file, acl_file=written.acl_file, workdir=work
        )
