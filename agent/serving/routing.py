"""Which loaded version answers a request: the routing table of the agent.

:class:`ServedModels` holds the versions loaded per model, each model's default version (the
one unversioned requests get), the A/B aliases and why versions are not loaded; it resolves a
request's model name, version or label to a :class:`~.loaded.LoadedModel`. The agent core
(:mod:`.core`) changes it on the event loop thread only (reconciliation, hot swap); lookups are
plain dictionary reads, so a switch is one assignment.
"""

from __future__ import annotations

from typing import Any

from edgeserve.agent.config import AgentConfig, SplitConfig
from edgeserve.agent.serving.loaded import LoadedModel
from edgeserve.agent.serving.metrics import Metrics
from edgeserve.agent.serving.policy import choose_arm
from edgeserve.agent.store import ModelStore

from edgeserve.errors import EdgeServeError, NotFoundError, NotReadyError

__all__ = ["ServedModels"]


class ServedModels:
    """The loaded versions of one agent and how requests find them.

    Attributes:
        models: model name -> version -> loaded version.
        default: model name -> the version unversioned requests go to.
        failed: (model, version) -> why it failed to load.
        unloaded: models unloaded through the repository API (until loaded again).
        splits: A/B alias -> split.
    """

    def __init__(self, config: AgentConfig, store: ModelStore, metrics: Metrics) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.models: dict[str, dict[int, LoadedModel]] = {}
        self.default: dict[str, int] = {}
        self.failed: dict[tuple[str, int], str] = {}
        self.unloaded: set[str] = set()
        self.splits: dict[str, SplitConfig] = dict(config.splits)

    def reasons(self, name: str) -> str:
        """Why the versions of ``name`` failed to load, one ``vN: why`` per version."""
        return "; ".join(f"v{v}: {why}" for (n, v), why in self.failed.items() if n == name)

    def active_versions(self) -> dict[str, int]:
        """Model name -> version that unversioned requests go to (loaded models only)."""
        return dict(self.default)

    def loaded_models(self, name: str | None = None) -> list[LoadedModel]:
        """Loaded model versions (of ``name``, or all), sorted by name and version."""
        names = [name] if name is not None else sorted(self.models)
        return [
            self.models[n][v] for n in names if n in self.models for v in sorted(self.models[n])
        ]

    def loaded_versions(self) -> dict[str, list[int]]:
        """Model name -> loaded versions."""
        return {name: sorted(v) for name, v in self.models.items() if v}

    def index(self) -> list[dict[str, Any]]:
        """Every installed version with its state (Triton's repository index)."""
        rows = []
        for name in self.store.models():
            loaded = self.models.get(name, {})
            for version in self.store.versions(name):
                row: dict[str, Any] = {"name": name, "version": str(version)}
                if version in loaded:
                    row["state"], row["reason"] = "READY", ""
                else:
                    row["state"] = "UNAVAILABLE"
                    row["reason"] = self.failed.get((name, version)) or (
                        "unloaded" if name in self.unloaded else "not served by version policy"
                    )
                rows.append(row)
        return rows

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
            NotReadyError: known but not loaded (unloaded, or failed to load).
        """
        if not version and name in self.splits:
            return self._route_split(name, self.splits[name], key, count)
        versions = self.models.get(name)
        if not versions:
            if self.store.versions(name) or name in self.config.models:
                why = "unloaded" if name in self.unloaded else self.reasons(name) or "loading"
                raise NotReadyError(f"model {name!r} is not ready ({why})")
            raise NotFoundError(f"unknown model {name!r}")
        if not version:
            chosen = self.default.get(name)
            if chosen is None or chosen not in versions:
                raise NotReadyError(f"model {name!r} has no active version loaded")
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
        model = self.models.get(split.model, {}).get(version)
        if model is None:
            raise NotReadyError(f"A/B alias {alias!r}: arm {arm} (version {version}) not ready")
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
