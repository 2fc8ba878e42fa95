"""An A/B experiment between two versions, split on each device by weight.

    python examples/ab-experiment/run.py [WORK_DIR]

Sets up what `edgeserve quickstart` sets up (digits model, broker, fleet server, three agents,
v1 everywhere; every step through the real CLI), releases v2 and starts an on-device
experiment: every agent keeps v1 as the control and sends 30% of the requests for `digits` to
v2, sticky per request key (the `x-request-key` header), so one user always sees one version.
Traffic goes through each agent's Open Inference Protocol API; the agents count each arm in
their Prometheus metrics and ship per-version telemetry to the fleet server, which reports each
arm's requests, error rate and latency percentiles with confidence intervals, and a verdict.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from edgeserve.quickstart.http import get_text
from edgeserve.quickstart.scenario import MODEL, Quickstart, started_id

SPLIT_B = 30  # percent of requests for v2
USERS = 60


def arm_counts(metrics: str) -> dict[str, float]:
    """``edgeserve_ab_requests`` per arm from an agent's /metrics text."""
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        m = re.match(r"edgeserve_ab_requests_total\{([^}]*)\} ([0-9.e+]+)", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[f"{labels['arm']} (v{labels['version']})"] = float(m.group(2))
    return out


def main(workdir: Path) -> int:
    qs = Quickstart(workdir, agents=3, steps_total=7)
    try:
        qs.setup()  # steps 1-4: model, conversion, broker + fleet server + agents, v1 everywhere

        qs.step(
            f"release {MODEL} v2 and start an on-device experiment: {SPLIT_B}% of requests on v2"
        )
        qs.sup.run(
            [
                "fleet",
                "release",
                str(qs.bundles[2].relative_to(workdir)),
                "--key",
                "keys/release.key",
            ]
        )
        out = qs.sup.run([
            "fleet", "experiment", "start", "--model", MODEL, "--a", "1", "--b", "2",
            "--split", str(SPLIT_B), "--on-device",
        ]).strip()  # fmt: skip
        qs.note(out)
        eid = started_id("experiment", out)
        x = qs.digits.x_test  # type: ignore[union-attr]

        def split_everywhere() -> bool:  # every agent has v2 installed and answers with it
            return all(
                any(
                    str(qs.infer(a, x[i : i + 1], key=f"probe-{i}")["model_version"]) == "2"
                    for i in range(20)
                )
                for a in qs.agents
            )

        waited = qs.sup.wait_for("the split on every agent", split_everywhere, timeout_s=60)
        qs.note(f"every agent splits requests between v1 and v2 ({waited:.1f}s)")

        qs.step(f"traffic: {USERS} users per agent, each sending 4 requests (sticky per user)")
        for agent in qs.agents:
            seen: dict[str, set[str]] = {}
            for _round in range(4):
                for u in range(USERS):
                    body = qs.infer(agent, x[u : u + 1], key=f"user-{u}")
                    seen.setdefault(f"user-{u}", set()).add(str(body["model_version"]))
            sticky = all(len(v) == 1 for v in seen.values())
            share = Counter(next(iter(v)) for v in seen.values())
            qs.note(
                f"{agent.device}: users on v1 {share['1']}, on v2 {share['2']} "
                f"({share['2'] / USERS:.0%}); every user kept one version: {sticky}"
            )
            if not sticky:
                raise SystemExit(f"{agent.device}: a user saw both versions")
            metrics = get_text(f"{agent.url}/metrics")
            qs.note(f"  /metrics edgeserve_ab_requests_total: {arm_counts(metrics)}")

        qs.step("the fleet server's report: per-arm telemetry, intervals, verdict")

        def judged() -> bool:
            for agent in qs.agents:  # keep telemetry flowing until the server can judge
                for u in range(30):
                    qs.infer(agent, x[u : u + 1], key=f"user-{u}")
            rep = qs.api(f"/experiments/{eid}/report")
            return (
                rep["a"]["requests"] > 0
                and rep["b"]["requests"] > 0
                and not str(rep.get("why", "")).startswith("need")
            )

        qs.sup.wait_for("enough telemetry to judge", judged, timeout_s=90, watch=qs.watch())
        report = qs.sup.run(["fleet", "experiment", "report", str(eid)])
        qs.table(report)
        verdict = re.search(r"verdict: (.+?) \(", report)
        if verdict is None:
            raise SystemExit("no verdict in the report")
        qs.echo(f"\nexperiment {eid}: verdict {verdict.group(1)!r}")
        qs.echo(f"next: edgeserve fleet experiment promote {eid} [--version N]")
        return 0
    finally:
        qs.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        work = Path(sys.argv[1])
        work.mkdir(parents=True, exist_ok=True)
        sys.exit(main(work))
    tmp = Path(tempfile.mkdtemp(prefix="edgeserve-ab-"))
    try:
        sys.exit(main(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
