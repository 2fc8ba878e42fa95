"""The in-process agent: which model versions are loaded, hot swap, A/B aliases, telemetry.

:class:`Agent` is the object HTTP handlers, the batch command and fleet sync talk to. Its
coroutine methods run on the agent's event loop; code on another thread (fleet sync's MQTT
callbacks) calls them through :meth:`Agent.run_threadsafe`. What is loaded follows the store
(active version, labels, policy) and is reconciled whenever the store changes: at once after
:meth:`Agent.activate`, and within ``poll_interval_s`` when another process (``edgeserve agent
install``) changed it.

Hot swap: the new version is loaded and warmed in a worker thread while the old one keeps
serving; the routing table then switches in one step on the loop thread, and the old version
is unloaded after its queued and executing requests finish, so no request is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from edgeserve.agent.config import AgentConfig, SplitConfig
from edgeserve.agent.serving.loaded import LoadedModel, load_version
from edgeserve.agent.serving.metrics import Metrics
from edgeserve.agent.serving.policy import wanted_versions
from edgeserve.agent.serving.routing import ServedModels
from edgeserve.agent.serving.telemetry import TelemetryBuffer
from edgeserve.agent.store import ModelStore

from edgeserve.errors import (
    ConfigError,
    EdgeServeError,
    ModelError,
    NotFoundError,
    NotStartedError,
)

__all__ = ["Agent"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Agent:
    """Serves the models of one store. Create, then ``await start()`` on the serving loop."""

    def __init__(self, config: AgentConfig, store: ModelStore | None = None) -> None:
        self.config = config
        self.store = store or ModelStore(config.state_dir)
        self.metrics = Metrics()
        self.telemetry = TelemetryBuffer(config.telemetry_path, config.telemetry.max_bytes)
        self.executor = ThreadPoolExecutor(config.runtime.workers, "edgeserve-run")
        # Store and load work gets its own thread so a hot swap never waits behind inference.
        self._control = ThreadPoolExecutor(1, "edgeserve-control")
        self.ready = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.served = ServedModels(config, self.store, self.metrics)
        self._window_labels: dict[str, str] = {}  # model -> experiment of its open windows
        self._lock: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task] = []
        self._signature: tuple = ()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Clean up killed installs, load every model the store and config ask for, start the
        store watcher and the telemetry reporter."""
        self.loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        removed = await self._blocking(self.store.recover)
        for path in removed:
            log.warning("removed leftover of an interrupted store change: %s", path)
        self._signature = self.store.state_signature()
        await self.reconcile()
        self.ready = True
        self._tasks = [
            asyncio.create_task(self._watch_store()),
            asyncio.create_task(self._report_telemetry()),
        ]

    async def stop(self) -> None:
        """Stop background work, finish queued requests, flush telemetry, release models."""
        self.ready = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for versions in list(self.served.models.values()):
            for model in list(versions.values()):
                await self._unload(model)
        self.served.models.clear()
        self.executor.shutdown(wait=True)
        self._control.shutdown(wait=True)
        self.telemetry.close()

    def run_threadsafe(self, coro: Awaitable[T], timeout: float | None = 60.0) -> T:
        """Run one of this agent's coroutines from another thread and return its result.

        Example (fleet sync's MQTT thread): ``agent.run_threadsafe(agent.activate("m", 3))``.

        Raises:
            Whatever the coroutine raises; TimeoutError after ``timeout`` seconds.
        """
        if self.loop is None:
            raise NotStartedError("agent is not started")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    # -- the control API (fleet sync, repository API) --------------------------------------

    async def activate(self, name: str, version: int) -> None:
        """Make ``version`` active and hot-swap to it.

        The new version is loaded and warmed up before the switch; requests already queued on
        the old version finish there; the old version is then unloaded. When this returns,
        unversioned requests for ``name`` go to ``version``.

        Raises:
            NotFoundError: the version is not installed.
            ModelError: it cannot be loaded or fails its warm-up (the old version keeps
                serving and the store pointer is put back).
        """
        before = (self.store.active_version(name), self.store.previous_active(name))
        await self._blocking(self.store.activate, name, version)
        await self.reconcile([name])
        if (name, version) in self.served.failed and self.config.model(name).policy != "pinned":
            reason = self.served.failed[(name, version)]
            if before[0] is not None and before[0] != version:
                await self._blocking(self.store.restore, name, *before)
                await self.reconcile([name])
            raise ModelError(f"model {name!r} version {version} failed to load: {reason}")

    async def health_check(self, name: str, version: int) -> None:
        """Run the version's sample inputs (bundle file with role ``sample``, else generated
        ones) and check every output is present and finite and, when the sample holds the
        outputs recorded at conversion (``expected:<output>``), that they agree within the
        manifest's tolerance (:mod:`.health`). Loads the version temporarily if it is
        not loaded. Fleet sync runs this after activation and rolls back on failure.

        Raises:
            NotFoundError: not installed.
            ModelError: it cannot load, fails to run, gives NaN/inf, or computes something
                other than the recorded reference outputs.
        """
        # imported here: only fleet sync checks health, after an activation
        from edgeserve.agent.serving.health import check_health, check_unloaded_health

        loaded = self.served.models.get(name, {}).get(version)
        if loaded is not None:
            await self._blocking(check_health, loaded.runtime, loaded.bundle)
            return
        bundle = await self._blocking(self.store.bundle, name, version)
        cfg = self.config.model(name)
        await self._blocking(check_unloaded_health, bundle, cfg, self.config.runtime)

    def active_versions(self) -> dict[str, int]:
        """Model name -> version that unversioned requests go to (loaded models only)."""
        return self.served.active_versions()

    def loaded_models(self, name: str | None = None) -> list[LoadedModel]:
        """Loaded model versions (of ``name``, or all), sorted by name and version."""
        return self.served.loaded_models(name)

    def loaded_versions(self) -> dict[str, list[int]]:
        """Model name -> loaded versions."""
        return self.served.loaded_versions()

    async def set_split(
        self,
        alias: str,
        a_version: int,
        b_version: int,
        weight_b: float,
        *,
        model: str | None = None,
        label: str | None = None,
    ) -> None:
        """Split unversioned requests for ``alias`` between two versions of ``model``
        (default: the model named ``alias``) by weight, sticky per request key.

        The model's telemetry windows are closed first and new ones opened, labelled
        ``label``, so that no window counts requests from before and after the split: the
        experiment's per-arm counts are then those of ``edgeserve_ab_requests_total``.

        Args:
            alias: the model name clients use.
            a_version: arm A's version.
            b_version: arm B's version.
            weight_b: share of traffic for arm B, in [0, 1].
            model: the model whose versions are split; defaults to ``alias``.
            label: the experiment the split belongs to (in every telemetry summary).

        Raises:
            ConfigError: weight out of range.
            NotFoundError: a version is not installed.
        """
        if not 0.0 <= weight_b <= 1.0:
            raise ConfigError(f"weight_b {weight_b} is not between 0 and 1")
        target = model or alias
        installed = self.store.versions(target)
        for v in (a_version, b_version):
            if v not in installed:
                raise NotFoundError(f"model {target!r} version {v} is not installed")
        # no await between closing the windows and switching: no request runs in between
        self._cut_windows(target, label)
        self.served.splits[alias] = SplitConfig(target, a_version, b_version, weight_b)
        await self.reconcile([target])

    async def clear_split(self, alias: str) -> None:
        """Remove an A/B alias (closing its telemetry windows); its versions unload unless
        otherwise needed."""
        split = self.served.splits.pop(alias, None)
        if split is not None:
            self._cut_windows(split.model, None)
            await self.reconcile([split.model])

    def _cut_windows(self, name: str, label: str | None) -> None:
        """Close the open telemetry window of every loaded version of ``name`` (into the
        buffer) and open new ones labelled ``label``. Runs on the event loop."""
        if label is None:
            self._window_labels.pop(name, None)
        else:
            self._window_labels[name] = label
        for model in list(self.served.models.get(name, {}).values()):
            model.label = label
            try:
                model.close_window(self.telemetry)
            except EdgeServeError as exc:
                log.error("telemetry: %s", exc)

    def splits(self) -> dict[str, SplitConfig]:
        """Current A/B aliases."""
        return dict(self.served.splits)

    # -- repository API (Triton's /v2/repository) ------------------------------------------

    def index(self) -> list[dict[str, Any]]:
        """Every installed version with its state (Triton's repository index)."""
        return self.served.index()

    async def load(self, name: str) -> None:
        """(Re)load a model per its policy (Triton's repository load).

        Raises:
            NotFoundError: no such model in the store.
        """
        if not self.store.versions(name):
            raise NotFoundError(f"unknown model {name!r}")
        self.served.unloaded.discard(name)
        await self.reconcile([name])
        if name not in self.served.default:
            raise ModelError(f"model {name!r} failed to load: {self.served.reasons(name)}")

    async def unload(self, name: str) -> None:
        """Unload every version of a model until :meth:`load` (Triton's repository unload).

        Raises:
            NotFoundError: no such model.
        """
        if not self.store.versions(name) and name not in self.served.models:
            raise NotFoundError(f"unknown model {name!r}")
        self.served.unloaded.add(name)
        await self.reconcile([name])

    # -- request routing -------------------------------------------------------------------

    def resolve(
        self, name: str, version: str | None = None, key: str | None = None, *, count: bool = True
    ) -> LoadedModel:
        """The loaded model version a request goes to (:meth:`.ServedModels.resolve`).

        Raises:
            NotFoundError: unknown model, version or label.
            NotReadyError: known but not loaded (unloaded, or failed to load).
        """
        return self.served.resolve(name, version, key, count=count)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether a request for this model (version) would be served now."""
        return self.served.model_ready(name, version)

    # -- reconciliation --------------------------------------------------------------------

    def _wanted(self, name: str) -> tuple[int | None, set[int]]:
        """(default version, versions to load) for a model from store, config and splits."""
        if name in self.served.unloaded:
            return None, set()
        return wanted_versions(
            name,
            self.store.versions(name),
            self.store.active_version(name),
            self.store.labels(name),
            self.config.model(name),
            self.served.splits.values(),
        )

    async def reconcile(self, names: Iterable[str] | None = None) -> None:
        """Load and unload versions so the served set matches the store, config and splits."""
        if self._lock is None:
            raise NotStartedError("agent is not started")
        async with self._lock:
            if names is None:
                names = set(self.store.models()) | set(self.served.models)
            for name in sorted(set(names)):
                await self._reconcile_one(name)

    async def _reconcile_one(self, name: str) -> None:
        default, want = await self._blocking(self._wanted, name)
        have = self.served.models.setdefault(name, {})
        for version in sorted(want - set(have)):
            model = await self._load(name, version)
            if model is not None:
                have[version] = model
        old_default = self.served.default.get(name)
        if default is not None and default in have:
            self.served.default[name] = default  # the switch: one assignment on the loop thread
        elif old_default in have and old_default is not None and name not in self.served.unloaded:
            want.add(old_default)  # the new one failed: keep serving the old one
            log.error(
                "model %s: version %s not loadable; still serving %s", name, default, old_default
            )
        else:
            self.served.default.pop(name, None)
        for version in sorted(set(have) - want):
            model = have.pop(version)
            await self._unload(model)
        if not have:
            self.served.models.pop(name, None)
            self.served.default.pop(name, None)

    async def _load(self, name: str, version: int) -> LoadedModel | None:
        started = time.perf_counter()

        def load() -> LoadedModel:
            bundle = self.store.bundle(name, version)
            cfg = self.config.model(name)
            return load_version(bundle, cfg, self.config.runtime, self.executor, self.metrics)

        try:
            model = await self._blocking(load)
        except EdgeServeError as exc:
            self.served.failed[(name, version)] = str(exc)
            log.error("model %s version %s failed to load: %s", name, version, exc)
            return None
        self.served.failed.pop((name, version), None)
        model.label = self._window_labels.get(name)
        model.take_stats()  # the first window carries the label (nothing was counted yet)
        self.metrics.loaded.labels(name, str(version)).set(1)
        elapsed_ms = (time.perf_counter() - started) * 1000
        providers = ",".join(model.runtime.providers)
        log.info("model %s version %s ready in %.0f ms (%s)", name, version, elapsed_ms, providers)
        return model

    async def _unload(self, model: LoadedModel) -> None:
        try:
            await asyncio.wait_for(model.batcher.drain(), timeout=model.batcher._timeout_s + 5)
        except asyncio.TimeoutError:
            log.warning(
                "model %s version %s: unloading with requests still queued",
                model.name,
                model.version,
            )
        model.close_window(self.telemetry)
        model.close()
        self.metrics.loaded.labels(model.name, str(model.version)).set(0)
        log.info("model %s version %s unloaded", model.name, model.version)

    # -- background ------------------------------------------------------------------------

    async def _watch_store(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                signature = await self._blocking(self.store.state_signature)
                if signature != self._signature:
                    self._signature = signature
                    await self.reconcile()
            except EdgeServeError as exc:
                log.error("store watch: %s", exc)

    async def _report_telemetry(self) -> None:
        while True:
            await asyncio.sleep(self.config.telemetry.interval_s)
            for versions in list(self.served.models.values()):
                for model in list(versions.values()):
                    try:
                        await self._blocking(model.close_window, self.telemetry)
                    except EdgeServeError as exc:
                        log.error("telemetry: %s", exc)

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._control, fn, *args)
