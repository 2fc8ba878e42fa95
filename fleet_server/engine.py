"""The fleet server's moving parts around the store: MQTT ingest, the rollout controller loop
and desired-state publishing.

Threads (each bounded, none blocking the MQTT network thread):

- the MQTT client's network thread only appends ``(topic, payload)`` to a bounded
  :class:`.inbox.Inbox` (full -> dropped and counted);
- ``ingest`` takes the inbox's bursts in batches, parses (:mod:`.ingest`), writes one
  transaction per batch and wakes the controller when a rollout's devices changed;
- ``controller`` runs :func:`.rollout.controller.step` for every running rollout on each wake-up or
  every ``tick_s``, applies the decisions, and re-signs/publishes desired state for the devices
  they touched; it also re-signs documents approaching expiry and prunes old telemetry. Of
  several replicas on one PostgreSQL only the one holding the controller lock does this (and
  re-signs every targeted device when it takes the lock over); the others only ingest.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from edgeserve.errors import StorageError
from edgeserve.protocol import fleet_filter, topics

from . import rollout as r
from .desired import DesiredBuilder
from .inbox import Inbox
from .ingest import IngestCounters, devices_of, parse_batch, store_batch
from .rollout import controller as c
from .rollout.views import latency_view
from .store import Store
from .store.base import chunks

__all__ = ["Engine"]

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]
_QUEUE_MAX = 100_000  # inbound messages held between the network thread and the ingest thread
_BATCH_MAX = 2_000  # messages written per transaction
_ATTEMPTS = 3  # tries of one ingest transaction (PostgreSQL deadlock or serialisation failure)


_DECISION_NAMES = {
    c.Assign: "assign",
    c.MarkFailed: "install_timeout",
    c.Settled: "settled",
    c.NextPhase: "next_phase",
    c.Complete: "complete",
    c.GateFailed: "gate_failed",
    c.Revert: "revert",
}


class Engine:
    """Ingest, control, publish.

    Args:
        store: the fleet store.
        builder: signs desired state.
        prefix: topic prefix with trailing ``/``.
        fleet: fleet name.
        publish: ``(topic, payload)`` -> queue a retained QoS 1 message.
        tick_s: controller period.
        max_payload_bytes: inbound payload bound.
        telemetry_retention_s: telemetry kept this long.
        before_tick: called first on every controller pass (the server reloads rotated keys).
    """

    def __init__(
        self,
        store: Store,
        builder: DesiredBuilder,
        prefix: str,
        fleet: str,
        publish: Publish,
        *,
        tick_s: float = 1.0,
        max_payload_bytes: int = 262_144,
        telemetry_retention_s: float = 7 * 24 * 3600,
        before_tick: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.builder = builder
        self.prefix = prefix
        self.fleet = fleet
        self.publish = publish
        self.tick_s = tick_s
        self.max_payload_bytes = max_payload_bytes
        self.retention_s = telemetry_retention_s
        self.before_tick = before_tick
        self.counters = IngestCounters()
        self.published = 0
        self.decisions: Counter[str] = Counter()  # controller decisions by kind, since start
        self._inbox: Inbox[tuple[str, bytes]] = Inbox(_QUEUE_MAX)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one controller pass / publish at a time
        # device -> (seq, issued, sha256 of the payload) of the last document published: enough
        # to publish the same bytes again after a reconnect (100,000 payloads would be ~300 MB)
        self._published: dict[str, tuple[int, datetime, bytes]] = {}
        self._known: set[str] = store.known_devices()
        self.leader = False  # whether this replica runs the controller (last pass)
        self._threads: list[threading.Thread] = []
        self._last_prune = 0.0
        self._republish = threading.Event()

    # -- subscriptions --------------------------------------------------------------------

    def filters(self, share_group: str) -> list[str]:
        """Topic filters to subscribe: reported, telemetry, presence of every device, as MQTT
        shared subscriptions (``$share/<group>/<filter>``, MQTT 5.0 §4.8.2; Mosquitto accepts
        them from 3.1.1 clients too) when ``share_group`` is set, so replicas split the load."""
        plain = [
            fleet_filter(self.prefix, self.fleet, k) for k in ("reported", "telemetry", "presence")
        ]
        return [f"$share/{share_group}/{f}" for f in plain] if share_group else plain

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        """MQTT callback: enqueue only (runs on the network thread)."""
        if not self._inbox.put((topic, payload)):
            self.counters.dropped["queue_full"] += 1

    def device_added(self, device: str) -> None:
        """Accept messages from a newly registered device."""
        # in place: copying the set made registering N devices O(N^2) (100,000 took minutes);
        # the ingest thread only tests membership, which set.add never disturbs under the GIL
        self._known.add(device)

    # -- threads --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the ingest and controller threads."""
        for name, target in (
            ("fleet-ingest", self._ingest_loop),
            ("fleet-controller", self._control_loop),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop the threads (pending inbound messages are processed first)."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=10)

    def wake(self) -> None:
        """Ask the controller to run now."""
        self._wake.set()

    def _ingest_loop(self) -> None:
        while not self._stop.is_set() or len(self._inbox):
            # gather a burst into one transaction
            batch = self._inbox.take(timeout_s=0.2, gather_s=0.05, max_items=_BATCH_MAX)
            if not batch:
                continue
            try:
                self.process(batch)
            except Exception:
                log.exception("ingest batch of %d messages failed", len(batch))

    def process(self, messages: list[tuple[str, bytes]]) -> None:
        """Parse and store a batch; wake the controller when a rollout may move.

        The reported documents recorded and their effect on rollouts are written in one
        transaction, so two replicas folding reports of the same device (a shared subscription
        splits a device's messages between them) apply them in the store's order. A deadlock
        or serialisation failure between replicas retries the batch.
        """
        unknown = devices_of(messages, self.prefix) - self._known
        if unknown:  # registered through another replica since we last looked?
            self._known.update(self.store.known_among(sorted(unknown)))
        parsed = parse_batch(
            messages, self.prefix, self._known, self.counters, self.max_payload_bytes
        )
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self.store.transaction():
                    accepted = store_batch(self.store, parsed)
                    moved = bool(accepted) and r.apply_reports(self.store, accepted, time.time())
                break
            except StorageError as exc:
                if attempt == _ATTEMPTS or not self.store.db.retryable(exc):
                    raise
                log.info("ingest batch: %s; retrying (%d/%d)", exc, attempt, _ATTEMPTS)
        self.counters.windows += len(parsed.telemetry)
        self.counters.stale_reports += len(parsed.reported) - len(accepted)
        if parsed.lag_s is not None:
            self.counters.lag_s = parsed.lag_s
        if moved:
            self._wake.set()

    def _control_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.tick_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.tick(time.time())
            except Exception:
                log.exception("controller pass failed")

    # -- control --------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One controller pass over every running rollout, then housekeeping."""
        if self.before_tick is not None:
            self.before_tick()
        leader = self.store.try_leader()
        took_over, self.leader = leader and not self.leader, leader
        republish = self._republish.is_set()
        self._republish.clear()
        if not leader:
            return  # another replica runs the controller and owns the desired documents
        if took_over:
            # Re-sign every targeted device: what the previous controller decided but had not
            # published when it died goes out now, and each device answers the new seq with a
            # report, which replaces any the dead replica received but never stored.
            log.info("this replica runs the rollout controller now")
            with self._lock:
                self._published.clear()
            self.republish()
        elif republish:
            self.republish()
        with self._lock:
            for state in r.running_rollouts(self.store):
                progress = r.progress(self.store, state, now)
                decisions, gates = c.step(state, progress, latency_view(self.store, state), now)
                changed = r.apply_decisions(self.store, state, decisions, gates, now)
                for d in decisions:
                    self.decisions[_DECISION_NAMES[type(d)]] += 1
                self._publish_locked(changed, now)
                if any(isinstance(d, (c.NextPhase, c.Settled)) for d in decisions):
                    self._wake.set()  # the next pass assigns the new phase's devices
            expiring = self.store.expiring(now + self.builder.ttl_s / 2)
            self._publish_locked(expiring, now)
            if now - self._last_prune > 3600:
                self._last_prune = now
                self.store.prune_telemetry(now - self.retention_s)

    def publish_desired(self, devices: Iterable[str]) -> None:
        """Re-sign and publish the desired state of ``devices``."""
        with self._lock:
            self._publish_locked(devices)

    def _publish_locked(self, devices: Iterable[str], now: float | None = None) -> None:
        # whole seconds, as documents write them, so that `sign` can make the same bytes again
        issued = datetime.fromtimestamp(int(now if now is not None else time.time()), timezone.utc)
        for part in chunks(sorted(set(devices))):  # one transaction per chunk for the seqs
            for device, built in self.builder.build(part, issued):
                if isinstance(built, Exception):
                    log.error("cannot build desired state for %s", device, exc_info=built)
                    continue
                seq, payload = built
                self._published[device] = (seq, issued, hashlib.sha256(payload).digest())
                self.publish(topics(self.prefix, self.fleet, device).desired, payload)
                self.published += 1

    def request_republish(self) -> None:
        """MQTT on-connect hook: republish from the controller thread, not the network one."""
        self._republish.set()
        self._wake.set()

    def republish(self) -> None:
        """After a broker (re)connect: publish every device's last document again, the same
        bytes signed anew (same seq; devices ignore what they already applied), or, where the
        targets or the fleet key changed since, a new document with a new seq. Covers a broker
        that lost its retained messages. At server start, documents are rebuilt for every
        device with targets."""
        with self._lock:
            if not self._published:
                devices = self.store.targeted_devices()
                self._publish_locked(devices)
                return
            changed = []
            for device, (seq, issued, digest) in sorted(self._published.items()):
                try:
                    payload = self.builder.sign(device, self.store.targets(device), seq, issued)
                except Exception:
                    log.exception("cannot build desired state for %s", device)
                    continue
                if hashlib.sha256(payload).digest() != digest:
                    # targets or keys changed since: never the same seq for other content
                    changed.append(device)
                    continue
                self.publish(topics(self.prefix, self.fleet, device).desired, payload)
                self.published += 1
            self._publish_locked(changed)
