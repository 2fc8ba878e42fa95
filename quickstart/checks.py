"""What the quickstart checks, read over the APIs an operator or application uses.

The fleet server's operator API (``/api/v1``) says what each device reports; each agent's
Open Inference Protocol API answers predictions; ``edgeserve agent models`` says what a device
itself records. :class:`FleetChecks` holds these reads and the waits built on them; the
scenario and the examples call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgeserve.quickstart.http import infer, request_json
from edgeserve.quickstart.model import INPUT_NAME, DigitsData
from edgeserve.quickstart.procs import Service, StepFailed, Supervisor

from edgeserve.errors import EdgeServeError

__all__ = ["MODEL", "AgentInfo", "FleetChecks"]

MODEL = "digits"


@dataclass
class AgentInfo:
    """One agent process and how to reach it."""

    device: str
    url: str
    state_dir: Path
    service: Service


class FleetChecks:
    """Reads and waits over the fleet server's and the agents' APIs (a base of
    :class:`~edgeserve.quickstart.scenario.Quickstart`, which sets these attributes)."""

    sup: Supervisor
    token: str
    fleet_url: str
    fleet_service: Service | None
    agents: list[AgentInfo]
    data: DigitsData | None

    @property
    def digits(self) -> DigitsData:
        """The data split from step 1.

        Raises:
            EdgeServeError: step 1 has not run.
        """
        if self.data is None:
            raise EdgeServeError("no data yet: run the train step first")
        return self.data

    def watch(self) -> list[Service]:
        """The fleet server and agents: a wait fails early when one of them dies."""
        return [s for s in (self.fleet_service, *(a.service for a in self.agents)) if s is not None]

    def api(self, path: str) -> Any:
        """``GET /api/v1<path>`` on the fleet server, with the operator token."""
        return request_json(
            "GET",
            f"{self.fleet_url}/api/v1{path}",
            headers={"Authorization": f"Bearer {self.token}"},
        )

    def infer(self, agent: AgentInfo, x: np.ndarray, key: str | None = None) -> dict[str, Any]:
        """Predict ``x`` (rows of 64 pixels) through ``agent``'s OIP API."""
        return infer(agent.url, MODEL, INPUT_NAME, x, key)

    def reported_active(self) -> dict[str, int]:
        """Which version each device reports active, from the fleet server's device list."""
        out: dict[str, int] = {}
        for dev in self.api("/devices")["devices"]:
            active = ((dev.get("models") or {}).get(MODEL) or {}).get("active")
            if active is not None:
                out[str(dev["id"])] = int(active)
        return out

    def agent_active(self, agent: AgentInfo) -> int | None:
        """The active version as the device itself records it (``edgeserve agent models``)."""
        out = self.sup.run(["agent", "models", "--state", str(agent.state_dir)], quiet=True)
        for line in out.splitlines():
            if line.startswith(f"{MODEL}:"):
                for token in line.replace(",", " ").split():
                    if token.endswith("*") and token[:-1].isdigit():
                        return int(token[:-1])
        return None

    def wait_all_active(self, version: int, timeout_s: float) -> float:
        """Wait until every device reports ``version`` active; returns the seconds waited."""

        def done() -> bool:
            active = self.reported_active()
            return len(active) == len(self.agents) and set(active.values()) == {version}

        return self.sup.wait_for(
            f"every agent to serve v{version}", done, timeout_s=timeout_s, watch=self.watch()
        )

    def wait_rollout(self, rollout_id: int, timeout_s: float) -> None:
        """Wait until the rollout completes.

        Raises:
            StepFailed: it was paused, aborted or rolled back (the server's reason included).
        """

        def done() -> bool:
            st = self.api(f"/rollouts/{rollout_id}")
            if st["status"] in ("paused", "aborted", "rolled_back", "failed"):
                raise StepFailed(f"rollout {rollout_id} {st['status']}: {st['reason']}")
            return st["status"] == "completed"

        self.sup.wait_for(f"rollout {rollout_id}", done, timeout_s=timeout_s, watch=self.watch())
