"""The quickstart scenario: the whole loop on one machine, step by step, through the real CLI.

Each step runs ``edgeserve`` commands as separate processes (printed as ``$ edgeserve ...``)
and checks what they did over the same HTTP APIs an operator or an application would use:
the fleet server's operator API (``/api/v1``) and each agent's Open Inference Protocol API.
Nothing here reaches into a component's internals; a step whose component is missing fails
with the reason instead of pretending.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeserve.quickstart.http import answers, infer, request_json
from edgeserve.quickstart.model import INPUT_NAME, DigitsData, load_digits_data, train_digits_onnx
from edgeserve.quickstart.procs import Service, StepFailed, Supervisor, started_id

from edgeserve.errors import EdgeServeError, UnavailableError

__all__ = ["AgentInfo", "Quickstart", "QuickstartResult", "started_id"]

MODEL = "digits"
FLEET = "quickstart"
TARGETS = ("onnx-cpu-int8", "onnx-cpu-fp32")
RELEASE_TARGET = "onnx-cpu-int8"


@dataclass
class AgentInfo:
    """One agent process and how to reach it."""

    device: str
    url: str
    state_dir: Path
    service: Service


@dataclass
class QuickstartResult:
    """What the run established (read by the test and printed at the end)."""

    accuracies: dict[int, float] = field(default_factory=dict)
    active_versions: dict[str, int] = field(default_factory=dict)
    verdict: str = ""
    prediction_accuracy: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Quickstart:
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
        self.fleet_port = _free_port()
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

    def start_services(self) -> None:
        """Step 3: keys, broker, fleet server, devices, agents."""
        self.step(f"start an MQTT broker, a fleet server and {self.n_agents} agents")
        self.sup.run(["keys", "init", "--out", "keys"])
        from edgeserve.fleet_server.broker.embedded import start_embedded_broker

        broker_dir = self.workdir / "broker"
        if self.broker_url:
            self.note(f"broker: the one configured, {self.broker_url}")
        else:
            self.broker = start_embedded_broker(
                kind=self.broker_kind,  # type: ignore[arg-type]
                workdir=broker_dir / "boot",
            )
            self.broker_url = self.broker.url
            self.note(f"broker: {self.broker.kind} on {self.broker.url}")
        (self.workdir / "fleet.toml").write_text(
            "[server]\n"
            f'host = "127.0.0.1"\nport = {self.fleet_port}\ntoken = "{self.token}"\n'
            'data_dir = "fleet-data"\n\n'
            "[broker]\n"
            f'url = "{self.broker_url}"\nfleet = "{FLEET}"\n'
            f'password = "{secrets.token_urlsafe(16)}"\n\n'
            "[rollouts]\ntick_s = 0.5\n\n"
            '[keys]\nfleet_key = "keys/fleet.key"\nkeyring = "keys/keyring.json"\n'
        )
        self.sup.env = {
            "EDGESERVE_FLEET_URL": self.fleet_url,
            "EDGESERVE_FLEET_TOKEN": self.token,
        }
        self.fleet_service = self.sup.start(
            "fleet-server", ["fleet", "serve", "--config", "fleet.toml"]
        )
        self.sup.wait_for(
            "the fleet server",
            lambda: answers(f"{self.fleet_url}/healthz"),
            timeout_s=30,
            watch=[self.fleet_service],
        )
        self.note(f"fleet server: {self.fleet_url}")
        for i in range(1, self.n_agents + 1):
            out = self.sup.run(
                ["fleet", "device", "add", f"dev-{i}", "--tags", f"site=lab,slot={i}", "--json"]
            )
            self.devices.append(json.loads(out))
        # every device gets its own broker user; the ACL lets it read only its own desired
        # state and write only its own reports (Mosquitto password_file + acl_file)
        self.sup.run(["fleet", "broker-config", "--out", "broker/auth"])
        if self.broker is not None:
            self._restart_broker_with_auth(broker_dir / "auth")
        else:
            self.note("a configured broker is left as it is: give it broker/auth/{passwords,acl}")
        for creds in self.devices:
            self.agents.append(self._start_agent(creds))
        for agent in self.agents:
            self.sup.wait_for(
                f"{agent.device} to be live",
                lambda a=agent: answers(f"{a.url}/v2/health/live"),
                timeout_s=30,
                watch=[agent.service],
            )
        self.note(", ".join(f"{a.device}: {a.url}" for a in self.agents))

    def _restart_broker_with_auth(self, auth_dir: Path) -> None:
        from edgeserve.fleet_server.broker.embedded import start_embedded_broker

        # the two files `edgeserve fleet broker-config --out DIR` writes
        password_file, acl_file = auth_dir / "passwords", auth_dir / "acl"
        for path in (password_file, acl_file):
            if not path.is_file():
                raise EdgeServeError(f"edgeserve fleet broker-config wrote no {path}")
        port = self.broker.port
        self.broker.stop()
        self.broker = start_embedded_broker(
            port=port,
            password_file=password_file,
            acl_file=acl_file,
            kind=self.broker_kind,  # type: ignore[arg-type]
            workdir=auth_dir.parent / "run",
        )
        self.note(
            f"broker restarted with {password_file.name} and {acl_file.name} from broker-config"
        )

    def _start_agent(self, creds: dict[str, Any]) -> AgentInfo:
        device = str(creds["id"])
        state = self.workdir / "devices" / device
        state.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        (state / "agent.toml").write_text(
            f'state_dir = "{state}"\n\n'
            f'[server]\nhost = "127.0.0.1"\nport = {port}\n\n'
            "[telemetry]\ninterval_s = 1.0\n\n"
            "[fleet]\n"
            f'broker = "{creds["broker_url"]}"\n'
            f'device = "{device}"\n'
            f'username = "{creds["username"]}"\n'
            f'password = "{creds["password"]}"\n'
            f'fleet = "{creds["fleet"]}"\n'
            f'server_url = "{creds["server_url"]}"\n'
            f'trust_anchor = "{self.workdir / "keys" / "root.json"}"\n'
            "telemetry_interval_s = 1\n"
        )
        service = self.sup.start(device, ["agent", "run", "--config", str(state / "agent.toml")])
        return AgentInfo(device, f"http://127.0.0.1:{port}", state, service)

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

    # -- helpers (also used by the examples) ---------------------------------------------

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

    def close(self) -> None:
        """Stop agents, fleet server and broker (idempotent)."""
        self.sup.stop_all()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
