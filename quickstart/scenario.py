"""The quickstart scenario: the whole loop on one machine, step by step, through the real CLI.

Each step runs ``edgeserve`` commands as separate processes (printed as ``$ edgeserve ...``)
and checks what they did over the same HTTP APIs an operator or an application would use:
the fleet server's operator API (``/api/v1``) and each agent's Open Inference Protocol API.
Nothing here reaches into a component's internals; a step whose component is missing fails
with the reason instead of pretending.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeserve.quickstart.checks import MODEL, AgentInfo, FleetChecks
from edgeserve.quickstart.model import DigitsData, load_digits_data, train_digits_onnx
from edgeserve.quickstart.procs import Service, StepFailed, Supervisor, started_id
from edgeserve.quickstart.services import FLEET, FleetServices, free_port

from edgeserve.errors import UnavailableError

__all__ = ["FLEET", "MODEL", "AgentInfo", "Quickstart", "QuickstartResult", "started_id"]

TARGETS = ("onnx-cpu-int8", "onnx-cpu-fp32")
RELEASE_TARGET = "onnx-cpu-int8"


@dataclass
class QuickstartResult:
    """What the run established (read by the test and printed at the end)."""

    accuracies: dict[int, float] = field(default_factory=dict)
    active_versions: dict[str, int] = field(default_factory=dict)
    verdict: str = ""
    prediction_accuracy: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class Quickstart(FleetServices, FleetChecks):
    """Drives the steps; :meth:`run` does them all, :meth:`close` stops everything.

    Args:
        workdir: an empty directory that holds everything (keys, bundles, state, logs).
        agents: how many agent processes (devices) to start.
        echo: where the step-by-step output goes.
        broker_kind: ``auto`` (Mosquitto when on PATH, else amqtt), ``mosquitto`` or ``amqtt``.
        broker_url: use this running broker (``mqtt://host:port``, anonymous access) instead
            of starting one; the embedded broker is only the default.
        steps_total: how many steps the run prints (the examples reuse the first four).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        agents: int = 3,
        echo: Callable[[str], None] = print,
        broker_kind: str = "auto",
        broker_url: str | None = None,
        steps_total: int = 8,
    ) -> None:
        self.workdir = workdir
        self.n_agents = agents
        self.echo = echo
        self.broker_kind = broker_kind
        self.broker_url = broker_url or ""
        self.sup = Supervisor(workdir, echo=echo)
        self.result = QuickstartResult()
        self.token = secrets.token_urlsafe(24)
        self.fleet_port = free_port()
        self.fleet_url = f"http://127.0.0.1:{self.fleet_port}"
        self.broker: Any = None
        self.fleet_service: Service | None = None
        self.agents: list[AgentInfo] = []
        self.data: DigitsData | None = None
        self.bundles: dict[int, Path] = {}
        self.devices: list[dict[str, Any]] = []
        self._step = 0
        self._steps_total = steps_total

    # -- output ------------------------------------------------------------------------------

    def step(self, title: str) -> None:
        """Print a step header."""
        self._step += 1
        self.echo(f"\n[{self._step}/{self._steps_total}] {title}")

    def setup(self) -> None:
        """Steps 1-4 (model, conversion, services, v1 everywhere): the base the examples share."""
        for fn in (self.train, self.convert, self.start_services, self.release_v1):
            fn()

    def table(self, text: str) -> None:
        """Print a command's table output, indented under the step."""
        for line in text.rstrip().splitlines():
            self.echo(f"    {line}")

    def note(self, text: str) -> None:
        """Print an indented line of the current step."""
        self.echo(f"  {text}")

    # -- the steps ---------------------------------------------------------------------------

    def run(self, *, keep: bool = False) -> QuickstartResult:
        """All steps; with ``keep``, stop before shutting down."""
        timings = self.result.seconds
        for name, fn in (
            ("model", self.train),
            ("convert", self.convert),
            ("start", self.start_services),
            ("release v1", self.release_v1),
            ("rollout v2", self.rollout_v2),
            ("experiment", self.experiment),
            ("predict", self.predict),
        ):
            t0 = time.monotonic()
            fn()
            timings[name] = time.monotonic() - t0
            self.note(f"({timings[name]:.1f}s)")
        if not keep:
            self.step("shut everything down")
            self.close()
            self.note("all processes stopped")
        return self.result

    def train(self) -> None:
        """Step 1: two versions of a digits classifier, as ONNX."""
        self.step(f"train a small real model: an MLP on scikit-learn's digits ({MODEL} v1, v2)")
        self.data = load_digits_data()
        models = self.workdir / "models"
        for version, (hidden, seed) in {1: (32, 1), 2: (64, 2)}.items():
            acc = train_digits_onnx(
                self.data, models / f"{MODEL}-v{version}.onnx", hidden=hidden, seed=seed
            )
            self.result.accuracies[version] = acc
            self.note(f"v{version}: {hidden} hidden units, test accuracy {acc:.2%}")
        np.save(self.workdir / "models/calibration.npy", self.data.x_train[:300])
        np.save(self.workdir / "models/validation.npy", self.data.x_test)
        np.save(self.workdir / "models/labels.npy", self.data.y_test)
        self.note(
            f"wrote {models}/{MODEL}-v1.onnx, {MODEL}-v2.onnx and calibration/validation data"
        )

    def convert(self) -> None:
        """Step 2: convert v1 to two targets (tables shown), v2 to the release target."""
        self.step(f"convert with the real converter: {', '.join(TARGETS)}")
        for version in (1, 2):
            for target in TARGETS if version == 1 else (RELEASE_TARGET,):
                out = self.workdir / "build" / f"{MODEL}-v{version}-{target}"
                rel = str(out.relative_to(self.workdir))
                args = [
                    "convert", f"models/{MODEL}-v{version}.onnx", "--target", target,
                    "--name", MODEL, "--version", str(version), "--output", rel,
                    "--validation", "models/validation.npy", "--labels", "models/labels.npy",
                    "--max-accuracy-drop", "2",
                ]  # fmt: skip
                if "int8" in target:
                    args += ["--calibration", "models/calibration.npy"]
                table = self.sup.run(args, quiet=version == 2)
                if version == 1:
                    for line in table.rstrip().splitlines():
                        self.echo(f"    {line}")
                if target == RELEASE_TARGET:
                    self.bundles[version] = out
        self.note(f"v2 converted to {RELEASE_TARGET} as well; these bundles get released")

    def release_v1(self) -> None:
        """Step 4: sign and upload v1, roll it out to every device at once."""
        self.step(f"release {MODEL} v1 and roll it out to every device")
        self.sup.run(
            [
                "fleet",
                "release",
                str(self.bundles[1].relative_to(self.workdir)),
                "--key",
                "keys/release.key",
            ]
        )
        out = self.sup.run(
            ["fleet", "rollout", "start", "--model", MODEL, "--version", "1", "--phases", "100"]
        )
        self.note(out.strip())
        waited = self.wait_all_active(1, timeout_s=60)
        self.note(f"every agent serves v1 ({waited:.1f}s)")

    def rollout_v2(self) -> None:
        """Step 5: v2 in phases with health gates."""
        self.step(f"release {MODEL} v2 and roll it out in phases (10%, then 100%)")
        self.sup.run(
            [
                "fleet",
                "release",
                str(self.bundles[2].relative_to(self.workdir)),
                "--key",
                "keys/release.key",
            ]
        )
        out = self.sup.run(
            ["fleet", "rollout", "start", "--model", MODEL, "--version", "2", "--phases", "10,100",
             "--soak", "3s", "--max-failure-pct", "0", "--min-devices", "1"]
        )  # fmt: skip
        self.note(out.strip())
        rollout_id = started_id("rollout", out)
        seen: set[tuple[int, int]] = set()

        def progress() -> bool:
            st = self.api(f"/rollouts/{rollout_id}")
            active = int(st["counts"].get("active", 0))
            key = (int(st["phase_index"]), active)
            if key not in seen:
                seen.add(key)
                self.note(
                    f"phase {key[0] + 1}/{len(st['spec']['phases'])} "
                    f"({st['phase_percent']}% of devices): v2 active on {active}/{len(self.agents)}"
                )
            if st["status"] in ("paused", "aborted", "rolled_back", "failed"):
                raise StepFailed(f"rollout {rollout_id} {st['status']}: {st['reason']}")
            return st["status"] == "completed"

        self.sup.wait_for("the v2 rollout to complete", progress, timeout_s=90, watch=self.watch())
        for line in self.sup.run(["fleet", "rollout", "status"]).rstrip().splitlines():
            self.echo(f"    {line}")

    def experiment(self) -> None:
        """Step 6: v1 against v2 on each device, traffic, report, verdict."""
        self.step(f"A/B experiment: {MODEL} v1 against v2, split on each device; promote")
        out = self.sup.run(
            ["fleet", "experiment", "start", "--model", MODEL, "--a", "1", "--b", "2",
             "--split", "50", "--on-device"]
        ).strip()  # fmt: skip
        self.note(out)
        eid = started_id("experiment", out)
        # traffic through every agent (sticky per request key) until the server has per-arm
        # telemetry from the devices: agents buffer summaries on disk and publish them
        rows = self.digits.x_test[:200]
        sent = 0

        def both_arms() -> bool:
            nonlocal sent
            for agent in self.agents:
                for _ in range(50):
                    self.infer(agent, rows[sent % len(rows)][None, :], key=f"user-{sent}")
                    sent += 1
            rep = self.api(f"/experiments/{eid}/report")
            # the server judges only with enough requests and telemetry windows per arm; its
            # reason starts with "need ..." until then
            enough = rep["a"]["requests"] > 0 and rep["b"]["requests"] > 0
            return bool(enough and not str(rep.get("why", "")).startswith("need"))

        self.sup.wait_for("telemetry for both arms", both_arms, timeout_s=60, watch=self.watch())
        self.note(f"sent {sent} requests through the agents")
        for line in self.sup.run(["fleet", "experiment", "report", str(eid)]).rstrip().splitlines():
            self.echo(f"    {line}")
            if line.startswith("verdict: "):
                self.result.verdict = line[len("verdict: ") :].split(" (")[0].strip()
        if not self.result.verdict:
            raise UnavailableError("`edgeserve fleet experiment report` printed no verdict")
        # end the experiment: the winner when there is one, else the operator's pick (v2: more
        # accurate offline, no worse online) - `promote` starts a rollout of it
        args = ["fleet", "experiment", "promote", str(eid)]
        if not self.result.verdict.endswith("better"):
            args += ["--version", "2"]
        out = self.sup.run(args).strip()
        self.note(out)
        self.wait_rollout(started_id("rollout", out), timeout_s=60)
        waited = self.wait_all_active(self._winner(), timeout_s=60)
        self.note(f"every agent serves v{self._winner()} ({waited:.1f}s)")

    def _winner(self) -> int:
        return 1 if self.result.verdict == "a better" else 2

    def predict(self) -> None:
        """Step 7: predictions through every agent's OIP API, checked against the labels."""
        self.step("send predictions through the agents (Open Inference Protocol v2, JSON)")
        x, y = self.digits.x_test[:32], self.digits.y_test[:32]
        for agent in self.agents:
            body = self.infer(agent, x)
            out = next(o for o in body["outputs"] if o["name"] == "probabilities")
            probs = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
            acc = float((probs.argmax(axis=1) == y).mean())
            self.result.prediction_accuracy[agent.device] = acc
            self.note(
                f"{agent.device}: 32 digits, {acc:.1%} correct, answered by "
                f"{MODEL} v{body.get('model_version', '?')}"
            )
        for agent in self.agents:
            active = self.agent_active(agent)
            if active is not None:
                self.result.active_versions[agent.device] = active

    def close(self) -> None:
        """Stop agents, fleet server and broker (idempotent)."""
        self.sup.stop_all()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
