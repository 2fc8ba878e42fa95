"""What the agent says about itself and its models, shared by the REST and gRPC APIs.

Each function returns the JSON-ready dict of the REST response; the gRPC API turns the same
dicts into its protobuf messages, so both APIs always agree.
"""

from __future__ import annotations

from typing import Any

from edgeserve.agent.serving.core import Agent
from edgeserve.agent.serving.tritonconfig import PLATFORMS, model_config

from edgeserve import __version__

__all__ = ["EXTENSIONS", "config_view", "metadata_view", "server_view", "stats_view"]

# OIP v2 server metadata "extensions": Triton's names for what the agent implements
EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
)


def server_view() -> dict[str, Any]:
    """OIP v2 server metadata."""
    return {"name": "edgeserve", "version": __version__, "extensions": list(EXTENSIONS)}


def metadata_view(agent: Agent, name: str, version: str | None) -> dict[str, Any]:
    """OIP v2 model metadata of the version a request for ``name`` (``version``) goes to.

    Raises:
        NotFoundError, UnavailableError: see :meth:`Agent.resolve`.
    """
    model = agent.resolve(name, version, "metadata", count=False)
    versions = agent.loaded_versions().get(model.name, [model.version])
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORMS.get(model.bundle.manifest.format, ("unknown",))[0],
        "inputs": [_spec(s) for s in model.inputs],
        "outputs": [_spec(s) for s in model.outputs],
    }


def stats_view(agent: Agent, name: str | None, version: str | None) -> list[dict[str, Any]]:
    """Triton's statistics extension: counters since each version was loaded.

    Raises:
        NotFoundError, UnavailableError: an unknown or not loaded model (version).
    """
    if name is not None and version is not None:
        model = agent.resolve(name, version, "stats", count=False)
        return [model.totals.to_triton(model.name, model.version)]
    if name is not None and not agent.loaded_models(name):
        agent.resolve(name, None, "stats", count=False)  # 404 or 503
    return [m.totals.to_triton(m.name, m.version) for m in agent.loaded_models(name)]


def config_view(agent: Agent, name: str, version: str | None) -> dict[str, Any]:
    """Triton's model configuration (:mod:`.tritonconfig`).

    Raises:
        NotFoundError, UnavailableError: see :meth:`Agent.resolve`.
    """
    model = agent.resolve(name, version, "config", count=False)
    return model_config(model, name, agent.config.model(model.name))


def _spec(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}
