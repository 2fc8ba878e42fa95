"""The ``edgeserve`` command's entry point, its command table and its error reporting.

The click group itself is :mod:`edgeserve.cli_group` (``root`` and ``LazyGroup`` are also
reachable here): commands are imported only when invoked, so ``edgeserve agent run`` never
imports TensorFlow or onnx tooling. A plain ``edgeserve [-v] agent run --opt value ...``, the
command a device runs, does not import click either: :mod:`edgeserve.agent.run_args` parses it
and anything it does not take as given (help, an unknown option, a bad value) goes to click,
which then answers exactly as it always does. Every :class:`~edgeserve.errors.EdgeServeError`
becomes one line on stderr and its ``exit_code``; anything unexpected becomes one line and
exit 1, with the traceback only when ``EDGESERVE_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

__all__ = ["AGENT_RUN", "COMMANDS", "DISTRIBUTION", "configure_logging", "main", "report_error"]

#: The distribution's name on PyPI (``pip install edgeserve-toolkit``); the import package and
#: the command are ``edgeserve``.
DISTRIBUTION = "edgeserve-toolkit"

# name -> "module:attribute" of the click command; imported on first use.
COMMANDS: dict[str, str] = {
    "convert": "edgeserve.converter.cli:convert",
    "bundle": "edgeserve.bundle_cli:bundle",
    "keys": "edgeserve.keys_cli:keys",
    "agent": "edgeserve.agent.cli:agent",
    "fleet": "edgeserve.fleet_server.cli:fleet",
    "quickstart": "edgeserve.quickstart.cli:quickstart",
}

#: the module that parses and runs a plain ``agent run`` without click (see the docstring)
AGENT_RUN = "edgeserve.agent.run_args"

_HELP: dict[str, str] = {
    "convert": "Quantize and compile a model into an edge bundle for a target or device.",
    "bundle": "Inspect and check bundles.",
    "keys": "Create and rotate signing keys.",
    "agent": "Run the on-device agent: install, serve, batch.",
    "fleet": "Run the fleet server and manage releases, rollouts and experiments.",
    "quickstart": "Run the whole loop on this machine: convert, release, roll out, serve.",
}


def configure_logging(verbose: int) -> None:
    """Log warnings and above; ``-v`` adds info, ``-vv`` debug."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def report_error(exc: BaseException) -> int:
    """Write the one stderr line for an error that ended a command; return the exit code.

    An :class:`~edgeserve.errors.EdgeServeError` gives ``error: <message>`` and its
    ``exit_code``, an interrupt ``interrupted`` and 130, anything else ``internal error: ...``
    and 1 (the traceback too when ``EDGESERVE_DEBUG=1``).
    """
    from edgeserve.errors import EdgeServeError

    if isinstance(exc, KeyboardInterrupt):
        _echo_err("interrupted")
        return 130
    _debug_traceback()
    if isinstance(exc, EdgeServeError):
        _echo_err(f"error: {_one_line(exc)}")
        return exc.exit_code
    _echo_err(
        f"internal error: {type(exc).__name__}: {_one_line(exc)} "
        "(set EDGESERVE_DEBUG=1 for the traceback)"
    )
    return 1


def _echo_err(line: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _debug_traceback() -> None:
    if os.environ.get("EDGESERVE_DEBUG") == "1":
        import traceback

        traceback.print_exc()


def __getattr__(name: str) -> Any:
    # the click group, imported with click only when asked for
    if name in ("root", "LazyGroup"):
        from edgeserve import cli_group

        return getattr(cli_group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point."""
    try:
        # by name, like COMMANDS: the core imports no component
        run_args: Any = importlib.import_module(AGENT_RUN)
    except ModuleNotFoundError:  # a build without the agent: click says so
        run_args = None
    args = run_args.parse_agent_run(sys.argv[1:], os.environ) if run_args is not None else None
    if args is not None:
        configure_logging(args.verbose)
        try:
            run_args.run_command(args)
        except (Exception, KeyboardInterrupt) as exc:
            sys.exit(report_error(exc))
        return
    from edgeserve.cli_group import root

    root.main(prog_name="edgeserve")
