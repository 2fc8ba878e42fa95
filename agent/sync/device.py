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

Which payloads are accepted is :class:`edgeserve.protocol.tracker.DesiredTracker`'s call;
:class:`DeviceSync` persists what it accepted (:mod:`.state`), converges on it
(:mod:`.converge`, one install at a time through :mod:`.install_pipeline`) and reports
(:mod:`.reports`). Nothing touches the store before the release signature, the artifact hash
and every file hash passed. The MQTT thread only hands payloads over; a worker (a shared
executor) does the work, so neither serving nor the network loop waits on a download. What the
device runs goes through an :class:`~.agent_adapter.Installer` (the real agent, or a stand-in
for simulations).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from edgeserve.agent.sync.agent_adapter import Installer, TelemetrySource
from edgeserve.agent.sync.config import SyncConfig
from edgeserve.agent.sync.converge import Converger
from edgeserve.agent.sync.download import DownloadLimits
from edgeserve.agent.sync.http_client import HTTPClient
from edgeserve.agent.sync.install_pipeline import InstallPipeline
from edgeserve.agent.sync.reports import Reporter
from edgeserve.agent.sync.state import load_desired, load_keyring, save_desired, save_keyring
from edgeserve.agent.sync.telemetry import TelemetryPublisher

from edgeserve import __version__
from edgeserve.mqtt import MqttClient, MqttConfig, MqttLoop, Will
from edgeserve.protocol import (
    MAX_PAYLOAD_BYTES,
    PRESENCE_OFFLINE,
    PRESENCE_ONLINE,
    DesiredState,
    ModelStatus,
    topics,
)
from edgeserve.protocol.tracker import Decision, DesiredTracker, Verdict
from edgeserve.trust import Keyring, TrustAnchor, VerificationError, parse_envelope

if TYPE_CHECKING:
    import httpx

__all__ = ["DeviceSync"]

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class DeviceSync:
    """Fleet sync for one device. ``start()`` returns at once; ``stop()`` disconnects cleanly.

    Args:
        config: the ``[fleet]`` settings.
        installer: what installs, activates and health-checks models.
        state_dir: the device's state directory (``fleet/`` and ``downloads/`` live there).
        http: an HTTP client to share (otherwise the agent's own, :class:`HTTPClient`).
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
        http: httpx.Client | HTTPClient | None = None,
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
        self._own_http = http is None
        self._http = http or HTTPClient()
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, f"fleet-{config.device}")
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # the pending payload and the worker's running flag
        self._pending: bytes | None = None
        self._reconcile = False
        self._running = False
        self._idle = threading.Event()
        self._idle.set()
        self._tracker = DesiredTracker(
            config.fleet, config.device, None, None, clock_slack_s=config.clock_slack_s
        )
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
        self._reporter = Reporter(
            self.mqtt,
            self.topics.reported,
            config.device,
            agent_version,
            lambda: self.desired.seq if self.desired is not None else 0,
            clock,
            self.stats,
        )
        pipeline = InstallPipeline(
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
        self._converger = Converger(
            installer,
            pipeline,
            self._reporter,
            self.dir,
            install_attempts=config.install_attempts,
            retry_backoff_s=config.retry_backoff_s,
            retry=lambda: self._kick(reconcile=True),
            stopped=self._stopped,
            clock=clock,
        )
        self._telemetry: TelemetryPublisher | None = None
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

    @property
    def keyring(self) -> Keyring | None:
        """The trusted keyring (None until one is configured or delivered)."""
        return self._tracker.keyring

    @property
    def last_seq(self) -> int:
        """The highest desired seq accepted (persisted in ``fleet/last_seq``)."""
        return self._tracker.last_seq

    @property
    def desired(self) -> DesiredState | None:
        """The desired state the device converges on."""
        return self._tracker.desired

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Load the pinned anchor, the trusted keyring and the last desired state; connect.

        Raises:
            ConfigError: the trust anchor or initial keyring is missing or invalid.
            StorageError: the state directory cannot be written.
        """
        slack = self.config.clock_slack_s
        anchor = TrustAnchor.load(self.config.trust_anchor)
        keyring = load_keyring(
            self.dir, self.config.keyring, anchor, now=self.clock(), clock_slack_s=slack
        )
        last_seq, desired = load_desired(
            self.dir, keyring, now=self.clock(), clock_slack_s=slack, device=self.config.device
        )
        self._tracker = DesiredTracker(
            self.config.fleet,
            self.config.device,
            anchor,
            keyring,
            last_seq=last_seq,
            desired=desired,
            clock_slack_s=slack,
        )
        if desired is not None:
            self._converger.restore(desired)
        self.mqtt.subscribe(self.topics.desired, self._on_desired)
        self.mqtt.start()
        if self._telemetry is not None:
            self._telemetry.start()
        if desired is not None:
            self._kick(reconcile=True)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Publish presence "offline", disconnect, and wait for the current step to end."""
        self._stopped.set()
        self._converger.cancel()
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

    def status(self) -> dict[str, ModelStatus]:
        """The current status of every model this device was told about."""
        return self._reporter.status()

    # ------------------------------------------------------------------ MQTT thread

    def _on_connect(self) -> None:
        self.mqtt.publish(self.topics.presence, PRESENCE_ONLINE, retain=True)
        self.stats["published_presence"] += 1
        self._reporter.reconnected()
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
                desired = self.desired
                if reconcile and desired is not None:
                    self._converger.converge_all(desired, self.keyring)
                    self._reporter.acknowledge()
        except Exception:
            log.exception("fleet sync %s: worker failed", self.config.device)
        with self._lock:
            self._running = False
            self._idle.set()

    def _accept(self, payload: bytes) -> bool:
        """Judge a desired payload, persist what is new; True when it is new and now current."""
        decision = self._tracker.decide(payload, self.clock())
        self._count_keyring(decision)
        if decision.keyring_link is not None:
            save_keyring(self.dir, decision.keyring_link)
        if decision.verdict is Verdict.ACCEPTED and decision.desired is not None:
            save_desired(self.dir, decision.desired.seq, payload)
        self._tracker.commit(decision)
        device = self.config.device
        if decision.verdict is Verdict.DUPLICATE:
            self.stats["duplicate_desired"] += 1
            return False
        if isinstance(decision.error, VerificationError):
            self.stats["rejected_desired"] += 1
            log.warning("fleet sync %s: rejected desired state: %s", device, decision.error)
            self._reporter.document_rejected(decision.error)
            return False
        if decision.error is not None:  # verified, but not a desired-state document
            self.stats["dropped_malformed"] += 1
            log.warning("fleet sync %s: malformed desired state: %s", device, decision.error)
            return False
        self._reporter.document_accepted()
        self._converger.new_desired()
        self.stats["accepted_desired"] += 1
        return True

    def _count_keyring(self, decision: Decision) -> None:
        if decision.keyring_error is not None:
            self.stats["rejected_keyring"] += 1
            log.warning(
                "fleet sync %s: keyring update refused: %s",
                self.config.device,
                decision.keyring_error,
            )
        elif decision.keyring is not None:
            self.stats["keyring_updates"] += 1
