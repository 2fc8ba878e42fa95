"""Hostile-client figures for ``edgeserve agent run``, against a real agent process on 127.0.0.1.

Prints:

- header growth: the agent's RSS before and after one request whose header never ends
  (``x-big: `` + 256 MiB in 1 MiB writes, no line end), what it answered, how much it read;
- lockout ratio: the share of a normal client's requests (fresh connection each, 5 s timeout)
  answered while 1,500 slow connections send one header byte every 2 s and reconnect when closed;
- schemathesis: cases generated and passed (``not_a_server_error``, the conformance checks and
  ``negative_data_rejection``) against ``/openapi.json``, with generated and with real names.

Usage::

    .venv/bin/python benchmarks/hostile.py [--attackers 1500] [--max-examples 50]
        [--pythonpath DIR]   # run the agent from another build (pip install --target DIR)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=1500, help="slow connections")
    parser.add_argument("--header-mib", type=int, default=256, help="endless header size")
    parser.add_argument("--max-examples", type=int, default=50, help="schemathesis, per operation")
    parser.add_argument(
        "--pythonpath", default=None, help="import edgeserve for the agent from this directory"
    )
    opts = parser.parse_args()

    from edgeserve.agent.store import ModelStore
    from support.agent import start_agent
    from support.conformance import run_schemathesis
    from support.hostile import endless_header, slowloris
    from support.models import make_linear_bundle

    work = Path(tempfile.mkdtemp(prefix="edgeserve-hostile-"))
    ModelStore(work / "state").install(make_linear_bundle(work / "b1").path)
    env = {"PYTHONPATH": opts.pythonpath} if opts.pythonpath else None
    cwd = os.getcwd()
    if opts.pythonpath:
        os.chdir(work)  # so `python -c` does not import this checkout from the current directory
    print(
        f"edgeserve agent under hostile clients — {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
        + (f", agent from {opts.pythonpath}" if opts.pythonpath else "")
    )
    agent = start_agent(work / "state", env=env)
    try:
        head = endless_header(agent.port, agent.process.pid, total_mib=opts.header_mib)
        status = head.reply.split(b"\r\n", 1)[0].decode(errors="replace") or "(no reply)"
        print(
            f"\nendless header ({opts.header_mib} MiB, no line end): answered {status!r} after "
            f"{head.sent_mib} MiB sent; RSS {head.rss_before_mb:.1f} -> {head.rss_after_mb:.1f} MB "
            f"(growth {head.growth_mb:+.1f} MB)"
        )
    finally:
        agent.stop()
    agent = start_agent(work / "state", env=env)
    try:
        run = slowloris(agent.port, attackers=opts.attackers, interval_s=2.0, requests=60)
        print(
            f"slowloris ({run.attackers} connections, a header byte every 2 s, reconnecting; "
            f"{run.attacker_connects} attacker connects in {run.seconds:.0f} s): normal client "
            f"answered {run.normal_ok}/{run.normal_sent} = {run.ok_ratio:.1%}"
        )
    finally:
        agent.stop()
    agent = start_agent(work / "state", env=env)
    try:
        for label, kw in (
            ("generated names", {}),
            (
                "model 'linear' (unload left out)",
                {
                    "parameters": {"model_name": "linear", "model_version": "1"},
                    "exclude_path_regex": "unload$",
                },
            ),
        ):
            st = run_schemathesis(
                agent.url,
                work / "st",
                max_examples=opts.max_examples,
                **kw,  # type: ignore[arg-type]
            )
            verdict = "ok" if st.returncode == 0 else f"FAILED (exit {st.returncode})"
            print(
                f"schemathesis, {label}: {st.generated} cases generated, {st.passed} passed: "
                f"{verdict}"
            )
            if st.returncode != 0:
                print(st.output[-3000:])
    finally:
        agent.stop()
        os.chdir(cwd)


if __name__ == "__main__":
    main()
