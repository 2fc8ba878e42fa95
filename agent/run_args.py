"""``edgeserve agent run`` without click: the command a device starts, parsed by hand.

Importing click and building its command tree costs a device about 1 MB of RSS and 20 ms of
start for a command line that systemd writes once. :func:`parse_agent_run` takes only the plain
form, ``[-v...] agent run`` followed by ``agent run``'s own options as ``--opt value`` or
``--opt=value``, each at most once and every value valid; for anything else (``--help``, an
unknown or repeated option, a value click would reject, neither ``--state`` nor ``--config``)
it returns None and the caller hands the command line to click, whose answer is then the usual
one. :func:`run_command` is what both paths run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunArgs", "agent_config", "parse_agent_run", "run_command"]


@dataclass(frozen=True)
class RunArgs:
    """``agent run``'s options (None: not given) and the root's ``-v`` count."""

    state: Path | None = None
    config_path: Path | None = None
    host: str | None = None
    port: int | None = None
    grpc_port: int | None = None
    token: str | None = None
    batching: bool | None = None
    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    processes: int | None = None
    workers: int | None = None
    threads: int | None = None
    providers: tuple[str, ...] = ()
    verbose: int = 0


# option -> (field, smallest value, largest value) for the integer options
_INTS: dict[str, tuple[str, int, int | None]] = {
    "--port": ("port", 0, 65535),
    "--grpc-port": ("grpc_port", 0, 65535),
    "--max-batch-size": ("max_batch_size", 1, None),
    "--max-queue-delay-us": ("max_queue_delay_us", 0, None),
    "--processes": ("processes", 1, None),
    "--workers": ("workers", 1, None),
    "--threads": ("threads", 0, None),
}
_STRINGS = {"--state": "state", "--config": "config_path", "--host": "host", "--token": "token"}
_FLAGS = {"--batching": True, "--no-batching": False}


def parse_agent_run(argv: Sequence[str], environ: Mapping[str, str]) -> RunArgs | None:
    """``argv`` (without the program name) as :class:`RunArgs`, or None where click decides.

    ``--state`` and ``--token`` fall back to ``EDGESERVE_STATE`` and ``EDGESERVE_AGENT_TOKEN``
    as in click (an empty variable counts as unset).
    """
    verbose = 0
    i = 0
    while i < len(argv) and argv[i] != "agent":
        word = argv[i]
        if word == "--verbose":
            verbose += 1
        elif len(word) > 1 and word.strip("v") == "-":
            verbose += len(word) - 1
        else:
            return None
        i += 1
    if list(argv[i : i + 2]) != ["agent", "run"]:
        return None
    values: dict[str, Any] = {}
    providers: list[str] = []
    rest = list(argv[i + 2 :])
    while rest:
        word = rest.pop(0)
        name, eq, value = word.partition("=")
        if name in _FLAGS and not eq:
            if "batching" in values:
                return None
            values["batching"] = _FLAGS[name]
            continue
        if name not in _INTS and name not in _STRINGS and name != "--provider":
            return None
        if not eq:
            if not rest or rest[0].startswith("-"):
                return None  # a missing value (or one that looks like an option): click says
            value = rest.pop(0)
        if name == "--provider":
            if not value:
                return None
            providers.append(value)
            continue
        field = _INTS[name][0] if name in _INTS else _STRINGS[name]
        if field in values:
            return None
        if name in _INTS:
            if not value.isascii() or not value.isdigit():
                return None
            number, low, high = int(value), _INTS[name][1], _INTS[name][2]
            if number < low or (high is not None and number > high):
                return None
            values[field] = number
        elif not value:
            return None
        else:
            values[field] = value
    for field, var in (("state", "EDGESERVE_STATE"), ("token", "EDGESERVE_AGENT_TOKEN")):
        if field not in values and environ.get(var):
            values[field] = environ[var]
    if "state" in values:
        values["state"] = Path(values["state"])
    if "config_path" in values:
        values["config_path"] = Path(values["config_path"])
        if not values["config_path"].exists():
            return None
    if "state" not in values and "config_path" not in values:
        return None
    return RunArgs(**values, providers=tuple(providers), verbose=verbose)


def run_command(args: RunArgs) -> None:
    """Build the configuration (``agent.toml``, then the options) and serve it (blocking).

    Raises:
        ConfigError: the configuration is invalid or the port cannot be bound.
    """
    from edgeserve.agent.runner import run_agent

    overrides: dict[str, Any] = {
        "server.host": args.host,
        "server.port": args.port,
        "server.grpc_port": args.grpc_port,
        "server.token": args.token,
        "server.processes": args.processes,
        "batching.enabled": args.batching,
        "batching.max_batch_size": args.max_batch_size,
        "batching.max_queue_delay_us": args.max_queue_delay_us,
        "runtime.workers": args.workers,
        "runtime.threads": args.threads,
        "runtime.providers": args.providers or None,
    }
    run_agent(agent_config(args.config_path, args.state, overrides))


def agent_config(config: Path | None, state: Path | None, overrides: dict[str, Any]) -> Any:
    """The agent's configuration: ``agent.toml`` (if given), then ``--state``, then the
    options that were given (the ``None`` ones leave the file's values)."""
    from edgeserve.agent.config import load_config

    if state is not None:
        overrides = {**overrides, "state_dir": str(state)}
    return load_config(config, overrides)
