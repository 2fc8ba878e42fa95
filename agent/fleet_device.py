"""The device side of fleet sync: one :class:`DeviceSync` per device, many per process.

Flow (states from :mod:`edgeserve.protocol`)::

    MQTT desired (retained) --> verify keyring chain + fleet signature + device + seq
        --> persist (desired.json, atomically) --> for each model target:
    DOWNLOADING  verify the release envelope (pure), download the .tar (resumable, capped)
    VERIFYING    unpack, check every file against the signed manifest
    STAGED       install into the store, not active
    WARMING      activate (hot swap, warm-up), health check on the bundle's sample inputs
    ACTIVE | FAILED (retryable, old version serving) | REJECTED (trust check failed)
           | ROLLED_BACK (health check failed after activation: previous version restored)

Nothing touches the store before the release signature, the artifact hash and every file
hash passed. The MQTT thread only hands payloads over; a worker (a shared executor) does the
work, so neither serving nor the network loop waits on a download. What the device runs goes
through an :class:`~edgeserve.agent.fleet_installer.Installer` (the real agent, or a stand-in
for simulations).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeserve.agent.download import DownloadLimits
from edgeserve.agent.fleet_config import SyncConfig
from edgeserve.agent.fleet_install import InstallPipeline, Outcome
from edgeserve.agent.fleet_installer import Installer, TelemetrySource
from edgeserve.agent.fleet_outcomes import current_outcomes, record_outcome
from edgeserve.agent.fleet_persist import keyring_version, load_desired, load_keyring
from edgeserve.agent.fleet_telemetry import TelemetryPublisher
from edgeserve.agent.http_client import LazyClient

from edgeserve import __version__
from edgeserve.bundle.manifest import canonical_json
from edgeserve.errors import EdgeServeError, TransportError
from edgeserve.mqtt import MqttClient, MqttConfig, MqttLoop, Will
from edgeserve.protocol import (
    MAX_PAYLOAD_BYTES,
    PRESENCE_OFFLINE,
    PRESENCE_ONLINE,
    DesiredState,
    InstallMachine,
    InstallState,
    ModelStatus,
    ModelTarget,
    ProtocolError,
    ReportCoalescer,
    Reported,
    encode,
    topics,
)
from edgeserve.trust import (
    Keyring,
    MixAndMatchError,
    ReplayError,
    TrustAnchor,
    VerificationError,
    format_time,
    parse_envelope,
    reason_code,
    update_keyring,
    verify_document,
    write_atomic,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["DeviceSync"]

log = logging.getLogger(__name__)
S = InstallState


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class DeviceSync:
    """Fleet sync for one device. ``start()`` returns at once; ``stop()`` disconnects cleanly.

    Args:
        config: the ``[fleet]`` settings.
        installer: what installs, activates and health-checks models.
        state_dir: the device's state directory (``fleet/`` and ``downloads/`` live there).
        http: an httpx client to share (otherwise one is made on the first download).
        loop: a shared :class:`MqttLoop` (simulations); None = a paho thread per device.
        executor: where installs run (shared in simulations); None = a private thread.
        telemetry: the agent's telemetry buffer, or None.
        clock: the reference time for expiry checks.
    """

    def __init__(
        self,
        config: SyncConfig,
        installer: Installer,
        state_dir: Path,
        *,
        http: httpx.Client | LazyClient | None = None,
        loop: MqttLoop | None = None,
        executor: Executor | None = None,
        telemetry: TelemetrySource | None = None,
        clock: Callable[[], datetime] = _utc_now,
        agent_version: str = __version__,
    ) -> None:
        self.config = config
        self.installer = installer
        self.dir = Path(state_dir) / "fleet"
        self.downloads = Path(state_dir) / "downloads"
        self.topics = topics(config.prefix, config.fleet, config.device)
        self.stats: Counter[str] = Counter()
        self.clock = clock
        self.agent_version = agent_version
        self._own_http = http is None
        # made, and httpx imported, when the first download starts
        self._http = http or LazyClient()
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, f"fleet-{config.device}")
        self._telemetry: TelemetryPublisher | None = None
        self._stopped = threading.Event()
        self._pipeline = InstallPipeline(
            installer,
            self._http,
            DownloadLimits(
                max_bytes=config.max_download_bytes,
                retries=config.download_retries,
                timeout_s=config.download_timeout_s,
            ),
            self.downloads,
            clock_slack_s=config.clock_slack_s,
            server_url=config.server_url,
            cancel=self._stopped,
            keep_previous=config.prune,
        )
        self._lock = threading.Lock()
        self._pending: bytes | None = None
        self._reconcile = False
        self._running = False
        self._idle = threading.Event()
        self._idle.set()
        self._anchor: TrustAnchor | None = None
        self.keyring: Keyring | None = None
        self.desired: DesiredState | None = None
        self.last_seq = 0  # highest desired seq accepted, persisted in fleet/last_seq
        self._machines: dict[str, InstallMachine] = {}
        self._status: dict[str, ModelStatus] = {}
        self._attempts: dict[str, int] = {}
        self._done: dict[str, tuple[int, int]] = {}  # model -> (seq, version) finished
        self._doc_error: tuple[str, str] | None = None
        self._prev_versions: dict[str, int | None] = {}
        self._unchecked: dict[str, tuple[int, int, int]] = {}  # model -> (seq, version, previous)
        self._reported_seq = -1
        self._coalescer = ReportCoalescer()
        self._report_lock = threading.Lock()  # the coalescer is used by worker and MQTT thread
        self._timers: list[threading.Timer] = []
        self.mqtt = MqttClient(
            MqttConfig(
                url=config.broker,
                client_id=config.device,
                username=config.mqtt_username,
                password=config.password or None,
                keepalive_s=config.keepalive_s,
                will=Will(self.topics.presence, PRESENCE_OFFLINE, qos=1, retain=True),
                tls_ca=config.tls_ca or None,
                tls_cert=config.tls_cert or None,
                tls_key=config.tls_key or None,
            ),
            loop=loop,
            on_connect=self._on_connect,
        )
        if telemetry is not None:
            self._telemetry = TelemetryPublisher(
                telemetry,
                self.mqtt,
                self.topics.telemetry,
                config.device,
                batch=config.telemetry_batch,
                interval_s=config.telemetry_interval_s,
                clock=clock,
                stats=self.stats,
            )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Load the pinned anchor, the trusted keyring and the last desired state; connect.

        Raises:
            ConfigError: the trust anchor or initial keyring is missing or invalid.
            StorageError: the state directory cannot be written.
        """
        self._anchor = TrustAnchor.load(self.config.trust_anchor)
        self.keyring = load_keyring(
            self.dir,
            self.config.keyring,
            self._anchor,
            now=self.clock(),
            clock_slack_s=self.config.clock_slack_s,
        )
        self.last_seq, self.desired = load_desired(
            self.dir,
            self.keyring,
            now=self.clock(),
            clock_slack_s=self.config.clock_slack_s,
            device=self.config.device,
        )
        self._restore_outcomes()
        self.mqtt.subscribe(self.topics.desired, self._on_desired)
        self.mqtt.start()
        if self._telemetry is not None:
            self._telemetry.start()
        if self.desired is not None:
            self._kick(reconcile=True)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Publish presence "offline", disconnect, and wait for the current step to end."""
        self._stopped.set()
        for timer in self._timers:
            timer.cancel()
        if self.mqtt.connected:
            done = threading.Event()
            self.mqtt.publish(self.topics.presence, PRESENCE_OFFLINE, retain=True, on_ack=done.set)
            done.wait(2.0)
        self.mqtt.stop()
        self._idle.wait(timeout_s)
        if self._telemetry is not None:
            self._telemetry.stop()
        if self._own_executor:
            self._executor.shutdown(wait=False)
        if self._own_http:
            self._http.close()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no install work is queued or running (tests, benchmarks)."""
        return self._idle.wait(timeout_s)

    def status(self) -> dict[str, ModelStatus]:
        """The current status of every model this device was told about."""
        with self._lock:
            return dict(self._status)

    # ------------------------------------------------------------------ MQTT thread

    def _on_connect(self) -> None:
        self.mqtt.publish(self.topics.presence, PRESENCE_ONLINE, retain=True)
        self.stats["published_presence"] += 1
        with self._report_lock:
            self._coalescer.forget()
        self._publish_report()
        if self._telemetry is not None:
            self._telemetry.reconnected()

    def _on_desired(self, topic: str, payload: bytes, retained: bool) -> None:
        self.stats["received_desired"] += 1
        if not payload:  # the server cleared the retained message
            return
        # Structure is checked here (cheap, bounded) so a malformed payload is counted and can
        # never displace a valid one waiting for the worker; signatures are checked there.
        try:
            parse_envelope(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except VerificationError as exc:
            self.stats["dropped_malformed"] += 1
            log.warning(
                "fleet sync %s: dropped a malformed desired payload: %s", self.config.device, exc
            )
            return
        with self._lock:
            self._pending = payload
        self._kick()

    def _kick(self, *, reconcile: bool = False) -> None:
        with self._lock:
            self._reconcile = self._reconcile or reconcile
            if self._running or self._stopped.is_set():
                return
            self._running = True
            self._idle.clear()
        try:
            self._executor.submit(self._work)
        except RuntimeError:  # executor shut down
            with self._lock:
                self._running = False
            self._idle.set()

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        try:
            while not self._stopped.is_set():
                with self._lock:
                    payload, self._pending = self._pending, None
                    reconcile, self._reconcile = self._reconcile, False
                    if payload is None and not reconcile:
                        self._running = False
                        self._idle.set()
                        return
                if payload is not None and self._accept(payload):
                    reconcile = True
                if reconcile:
                    self._converge_all()
                    self._acknowledge_seq()
        except Exception:
            log.exception("fleet sync %s: worker failed", self.config.device)
        with self._lock:
            self._running = False
            self._idle.set()

    def _accept(self, payload: bytes) -> bool:
        """Verify a desired payload; True when it is new and now current."""
        signed, _ = parse_envelope(payload, max_bytes=MAX_PAYLOAD_BYTES)  # checked on arrival
        self._walk_keyrings(signed.get("keyrings"))
        try:
            if self.keyring is None:
                raise VerificationError("no trusted keyring yet; cannot verify desired state")
            doc = verify_document(
                payload,
                self.keyring,
                self.clock(),
                "desired",
                clock_slack_s=self.config.clock_slack_s,
            )
            desired = DesiredState.from_dict(doc)
            if desired.device != self.config.device or desired.fleet != self.config.fleet:
                raise MixAndMatchError(
                    f"desired state is for {desired.fleet}/{desired.device}, "
                    f"not {self.config.fleet}/{self.config.device}"
                )
            current = self.last_seq
            if desired.seq == current:
                self.stats["duplicate_desired"] += 1
                return False
            if desired.seq < current:
                raise ReplayError(f"desired seq {desired.seq} is older than applied {current}")
        except ProtocolError as exc:
            self.stats["dropped_malformed"] += 1
            log.warning("fleet sync %s: malformed desired state: %s", self.config.device, exc)
            return False
        except VerificationError as exc:
            self.stats["rejected_desired"] += 1
            log.warning("fleet sync %s: rejected desired state: %s", self.config.device, exc)
            self._doc_error = (reason_code(exc), str(exc)[:500])
            self._publish_report()
            return False
        # the seq first: after a crash between the two writes a replay is still refused
        write_atomic(self.dir / "last_seq", f"{desired.seq}\n".encode())
        write_atomic(self.dir / "desired.json", payload)
        self.last_seq = desired.seq
        self.desired = desired
        self._doc_error = None
        self._attempts.clear()
        self.stats["accepted_desired"] += 1
        return True

    def _walk_keyrings(self, chain: Any) -> None:
        if not isinstance(chain, list) or not chain:
            return
        try:
            newer = update_keyring(
                chain,
                self.keyring,
                self._anchor,
                now=self.clock(),
                clock_slack_s=self.config.clock_slack_s,
            )
        except (VerificationError, EdgeServeError) as exc:
            self.stats["rejected_keyring"] += 1
            log.warning("fleet sync %s: keyring update refused: %s", self.config.device, exc)
            return
        if self.keyring is None or newer.version > self.keyring.version:
            link = next(e for e in chain if keyring_version(e) == newer.version)
            write_atomic(self.dir / "keyring.json", canonical_json(link))
            self.keyring = newer
            self.stats["keyring_updates"] += 1

    # ------------------------------------------------------------------ converge

    def _converge_all(self) -> None:
        desired = self.desired
        if desired is None:
            return
        for name, target in desired.models.items():
            if self._stopped.is_set():
                return
            self._converge(desired.seq, name, target)

    def _converge(self, seq: int, name: str, target: ModelTarget) -> None:
        if self._done.get(name) == (seq, target.version):
            return
        if self._attempts.get(name, 0) >= self.config.install_attempts:
            return
        active = self.installer.active_version(name)
        machine = self._machines.setdefault(name, InstallMachine())
        if active == target.version and self._pipeline.split_ok(name, target):
            unchecked = self._unchecked.pop(name, None)
            if unchecked is not None and unchecked[:2] == (seq, target.version):
                # the agent died between activating this version and its health check
                machine = self._machines[name] = InstallMachine(S.WARMING)
                outcome = self._pipeline.recheck(name, target, unchecked[2], machine)
                self._finish(seq, name, target, unchecked[2], outcome)
                return
            if machine.state is not S.ACTIVE:
                self._machines[name] = InstallMachine(S.ACTIVE)
            if target.allow_downgrade:
                # a revert to the version that serves (it rolled back by itself): the newer
                # versions left in the store failed or were rejected; prune them by policy
                installed = self.installer.installed_versions(name)
                self._pipeline.prune(name, target, {v for v in installed if v <= active})
            self._done[name] = (seq, target.version)
            self._set(name, ModelStatus(S.ACTIVE, active, target.version, self._prev(name)))
            return
        self._attempts[name] = self._attempts.get(name, 0) + 1
        self._set(name, ModelStatus(S.DOWNLOADING, active, target.version, self._prev(name)))
        self._pipeline.on_activating = lambda n, v, prev: record_outcome(
            self.dir, n, seq, v, ModelStatus(S.WARMING, prev, v)
        )
        outcome = self._pipeline.run(
            name, target, machine, active=active, keyring=self.keyring, now=self.clock()
        )
        self._finish(seq, name, target, active, outcome)

    def _finish(
        self, seq: int, name: str, target: ModelTarget, active: int | None, outcome: Outcome
    ) -> None:
        state, error, code = outcome
        if state is S.ACTIVE:
            self._prev_versions[name] = active
        now_active = self.installer.active_version(name)
        status = ModelStatus(state, now_active, target.version, active, error, code)
        if state is S.ROLLED_BACK:  # never activate the bad version again for this seq
            record_outcome(self.dir, name, seq, target.version, status)
        self._set(name, status)
        if state is S.FAILED and self._attempts[name] < self.config.install_attempts:
            if code in ("download", "storage"):
                self._retry_later(self._attempts[name])
            else:
                self._attempts[name] = self.config.install_attempts
        elif state is not S.FAILED:
            self._done[name] = (seq, target.version)

    def _restore_outcomes(self) -> None:
        """Rolled-back targets of the current desired state stay done after a restart; an
        activation the agent died in is health-checked first (:mod:`.fleet_outcomes`)."""
        if self.desired is None:
            return
        rolled_back, self._unchecked = current_outcomes(self.dir, self.desired)
        for name, status in rolled_back.items():
            self._done[name] = (self.desired.seq, self.desired.models[name].version)
            self._machines[name] = InstallMachine(S.ROLLED_BACK)
            self._status[name] = replace(status, active=self.installer.active_version(name))

    def _prev(self, name: str) -> int | None:
        return self._prev_versions.get(name)

    def _retry_later(self, attempt: int) -> None:
        delay = self.config.retry_backoff_s * 2 ** (attempt - 1)
        timer = threading.Timer(delay, lambda: self._kick(reconcile=True))
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    # ------------------------------------------------------------------ reports

    def _acknowledge_seq(self) -> None:
        """Report once for an accepted desired seq that changed nothing, so the server sees
        the device has it (a normal rollout already reported DOWNLOADING and ACTIVE)."""
        if self.desired is not None and self._reported_seq != self.desired.seq:
            self._publish_report()

    def _set(self, name: str, status: ModelStatus) -> None:
        with self._lock:
            self._status[name] = status
        with self._report_lock:
            report = self._coalescer.should_report(name, status)
        if report:
            self._publish_report()

    def _publish_report(self) -> None:
        with self._lock:
            models = dict(self._status)
        seq = self.desired.seq if self.desired is not None else 0
        report = Reported(
            self.config.device,
            seq,
            format_time(self.clock()),
            models,
            self.agent_version,
            error=self._doc_error[1] if self._doc_error else None,
            reason_code=self._doc_error[0] if self._doc_error else None,
        )
        self._reported_seq = seq
        try:
            self.mqtt.publish(self.topics.reported, encode(report), retain=True)
            self.stats["published_reported"] += 1
        except (TransportError, ProtocolError) as exc:
            log.warning("fleet sync %s: report not sent: %s", self.config.device, exc)

    def flush_telemetry(self) -> int:
        """Publish one batch of buffered telemetry now (else every ``telemetry_interval_s``);
        returns the records sent."""
        return 0 if self._telemetry is None else self._telemetry.flush()
