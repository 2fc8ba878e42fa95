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
from edgeserve.agent.fleet_health import check_references
from edgeserve.agent.loaded import LoadedModel, check_outputs, open_runtime, sample_feeds
from edgeserve.agent.metrics import Metrics
from edgeserve.agent.policy import choose_arm, wanted_versions
from edgeserve.agent.store import ModelStore
from edgeserve.agent.telemetry import TelemetryBuffer

from edgeserve.bundle.sample import reference_outputs, reference_tolerance
from edgeserve.errors import ConfigError, EdgeServeError, NotFoundError, UnavailableError

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
        self._models: dict[str, dict[int, LoadedModel]] = {}
        self._default: dict[str, int] = {}
        self._failed: dict[tuple[str, int], str] = {}
        self._unloaded: set[str] = set()
        self._splits: dict[str, SplitConfig] = dict(config.splits)
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
        for versions in list(self._models.values()):
            for model in list(versions.values()):
                await self._unload(model)
        self._models.clear()
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
            raise UnavailableError("agent is not started")
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
        if (name, version) in self._failed and self.config.model(name).policy != "pinned":
            reason = self._failed[(name, version)]
            if before[0] is not None and before[0] != version:
                await self._blocking(self.store.restore, name, *before)
                await self.reconcile([name])
            raise _model_error(f"model {name!r} version {version} failed to load: {reason}")

    async def health_check(self, name: str, version: int) -> None:
        """Run the version's sample inputs (bundle file with role ``sample``, else generated
        ones) and check every output is present and finite and, when the sample holds the
        outputs recorded at conversion (``expected:<output>``), that they agree within the
        manifest's tolerance (:mod:`.fleet_health`). Loads the version temporarily if it is
        not loaded. Fleet sync runs this after activation and rolls back on failure.

        Raises:
            NotFoundError: not installed.
            ModelError: it cannot load, fails to run, gives NaN/inf, or computes something
                other than the recorded reference outputs.
        """
        loaded = self._models.get(name, {}).get(version)

        def check(runtime: Any, bundle: Any) -> None:
            outputs = runtime.run(sample_feeds(bundle, runtime.inputs))
            check_outputs(outputs, runtime.outputs)
            expected = reference_outputs(bundle.file_path("sample"))
            if expected:
                check_references(outputs, expected, reference_tolerance(bundle.manifest))

        if loaded is not None:
            await self._blocking(check, loaded.runtime, loaded.bundle)
            return

        def check_unloaded() -> None:
            bundle = self.store.bundle(name, version)
            runtime = open_runtime(bundle, self.config.model(name), self.config.runtime)
            try:
                check(runtime, bundle)
            finally:
                runtime.close()

        await self._blocking(check_unloaded)

    def active_versions(self) -> dict[str, int]:
        """Model name -> version that unversioned requests go to (loaded models only)."""
        return dict(self._default)

    def loaded_models(self, name: str | None = None) -> list[LoadedModel]:
        """Loaded model versions (of ``name``, or all), sorted by name and version."""
        names = [name] if name is not None else sorted(self._models)
        return [
            self._models[n][v] for n in names if n in self._models for v in sorted(self._models[n])
        ]

    def loaded_versions(self) -> dict[str, list[int]]:
        """Model name -> loaded versions."""
        return {name: sorted(v) for name, v in self._models.items() if v}

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
        self._splits[alias] = SplitConfig(target, a_version, b_version, weight_b)
        await self.reconcile([target])

    async def clear_split(self, alias: str) -> None:
        """Remove an A/B alias (closing its telemetry windows); its versions unload unless
        otherwise needed."""
        split = self._splits.pop(alias, None)
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
        for model in list(self._models.get(name, {}).values()):
            model.label = label
            try:
                self._flush_stats(model)
            except EdgeServeError as exc:
                log.error("telemetry: %s", exc)

    def splits(self) -> dict[str, SplitConfig]:
        """Current A/B aliases."""
        return dict(self._splits)

    # -- repository API (Triton's /v2/repository) ------------------------------------------

    def index(self) -> list[dict[str, Any]]:
        """Every installed version with its state (Triton's repository index)."""
        rows = []
        for name in self.store.models():
            loaded = self._models.get(name, {})
            for version in self.store.versions(name):
                row: dict[str, Any] = {"name": name, "version": str(version)}
                if version in loaded:
                    row["state"], row["reason"] = "READY", ""
                else:
                    row["state"] = "UNAVAILABLE"
                    row["reason"] = self._failed.get((name, version)) or (
                        "unloaded" if name in self._unloaded else "not served by version policy"
                    )
                rows.append(row)
        return rows

    async def load(self, name: str) -> None:
        """(Re)load a model per its policy (Triton's repository load).

        Raises:
            NotFoundError: no such model in the store.
        """
        if not self.store.versions(name):
            raise NotFoundError(f"unknown model {name!r}")
        self._unloaded.discard(name)
        await self.reconcile([name])
        if name not in self._default:
            raise _model_error(f"model {name!r} failed to load: {self._reasons(name)}")

    async def unload(self, name: str) -> None:
        """Unload every version of a model until :meth:`load` (Triton's repository unload).

        Raises:
            NotFoundError: no such model.
        """
        if not self.store.versions(name) and name not in self._models:
            raise NotFoundError(f"unknown model {name!r}")
        self._unloaded.add(name)
        await self.reconcile([name])

    # -- request routing -------------------------------------------------------------------

    def resolve(
        self, name: str, version: str | None = None, key: str | None = None, *, count: bool = True
    ) -> LoadedModel:
        """The loaded model version a request goes to.

        Args:
            name: model name or A/B alias.
            version: version number or label (``stable``); None = active version or A/B arm.
            key: the request key for sticky A/B assignment.
            count: count an A/B assignment in metrics (False for probes and metadata).

        Raises:
            NotFoundError: unknown model, version or label.
            UnavailableError: known but not loaded (unloaded, or failed to load).
        """
        if not version and name in self._splits:
            return self._route_split(name, self._splits[name], key, count)
        versions = self._models.get(name)
        if not versions:
            if self.store.versions(name) or name in self.config.models:
                why = "unloaded" if name in self._unloaded else self._reasons(name) or "loading"
                raise UnavailableError(f"model {name!r} is not ready ({why})")
            raise NotFoundError(f"unknown model {name!r}")
        if not version:
            chosen = self._default.get(name)
            if chosen is None or chosen not in versions:
                raise UnavailableError(f"model {name!r} has no active version loaded")
            return versions[chosen]
        number = self._version_number(name, version)
        model = versions.get(number)
        if model is None:
            if number in self.store.versions(name):
                raise NotFoundError(
                    f"model {name!r} version {number} is installed but not served "
                    f"(policy {self.config.model(name).policy!r}); activate it, label it, "
                    'or set policy = "all"'
                )
            raise NotFoundError(f"model {name!r} has no version {number}")
        return model

    def _version_number(self, name: str, version: str) -> int:
        if version.isascii() and version.isdigit():  # not "²": int() would raise
            return int(version)
        labels = {**self.store.labels(name), **self.config.model(name).labels}
        if version not in labels:
            raise NotFoundError(f"model {name!r} has no version or label {version!r}")
        return labels[version]

    def _route_split(
        self, alias: str, split: SplitConfig, key: str | None, count: bool
    ) -> LoadedModel:
        arm, version = choose_arm(alias, split, key)
        model = self._models.get(split.model, {}).get(version)
        if model is None:
            raise UnavailableError(f"A/B alias {alias!r}: arm {arm} (version {version}) not ready")
        if count:
            self.metrics.ab_requests.labels(alias, arm, split.model, str(version)).inc()
        return model

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether a request for this model (version) would be served now."""
        try:
            self.resolve(name, version, key="ready-probe", count=False)
        except EdgeServeError:
            return False
        return True

    # -- reconciliation --------------------------------------------------------------------

    def _wanted(self, name: str) -> tuple[int | None, set[int]]:
        """(default version, versions to load) for a model from store, config and splits."""
        if name in self._unloaded:
            return None, set()
        return wanted_versions(
            name,
            self.store.versions(name),
            self.store.active_version(name),
            self.store.labels(name),
            self.config.model(name),
            self._splits.values(),
        )

    async def reconcile(self, names: Iterable[str] | None = None) -> None:
        """Load and unload versions so the served set matches the store, config and splits."""
        if self._lock is None:
            raise UnavailableError("agent is not started")
        async with self._lock:
            if names is None:
                names = set(self.store.models()) | set(self._models)
            for name in sorted(set(names)):
                await self._reconcile_one(name)

    async def _reconcile_one(self, name: str) -> None:
        default, want = await self._blocking(self._wanted, name)
        have = self._models.setdefault(name, {})
        for version in sorted(want - set(have)):
            model = await self._load(name, version)
            if model is not None:
                have[version] = model
        old_default = self._default.get(name)
        if default is not None and default in have:
            self._default[name] = default  # the switch: one assignment on the loop thread
        elif old_default in have and old_default is not None and name not in self._unloaded:
            want.add(old_default)  # the new one failed: keep serving the old one
            log.error(
                "model %s: version %s not loadable; still serving %s", name, default, old_default
            )
        else:
            self._default.pop(name, None)
        for version in sorted(set(have) - want):
            model = have.pop(version)
            await self._unload(model)
        if not have:
            self._models.pop(name, None)
            self._default.pop(name, None)

    async def _load(self, name: str, version: int) -> LoadedModel | None:
        started = time.perf_counter()

        def load() -> LoadedModel:
            bundle = self.store.bundle(name, version)
            cfg = self.config.model(name)
            runtime = open_runtime(bundle, cfg, self.config.runtime)
            model = LoadedModel(bundle, runtime, cfg, self.executor, self.metrics)
            try:
                model.warm_up(self.config.runtime.warmup_runs)
            except BaseException:
                model.close()
                raise
            return model

        try:
            model = await self._blocking(load)
        except EdgeServeError as exc:
            self._failed[(name, version)] = str(exc)
            log.error("model %s version %s failed to load: %s", name, version, exc)
            return None
        self._failed.pop((name, version), None)
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
        self._flush_stats(model)
        model.close()
        self.metrics.loaded.labels(model.name, str(model.version)).set(0)
        log.info("model %s version %s unloaded", model.name, model.version)

    def _reasons(self, name: str) -> str:
        return "; ".join(f"v{v}: {why}" for (n, v), why in self._failed.items() if n == name)

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
            for versions in list(self._models.values()):
                for model in list(versions.values()):
                    try:
                        await self._blocking(self._flush_stats, model)
                    except EdgeServeError as exc:
                        log.error("telemetry: %s", exc)

    def _flush_stats(self, model: LoadedModel) -> None:
        stats = model.take_stats()
        if stats.requests or stats.executions:
            self.telemetry.append(stats.summary(model.name, model.version))

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._control, fn, *args)


def _model_error(message: str) -> EdgeServeError:
    from edgeserve.errors import ModelError

    return ModelError(message)
