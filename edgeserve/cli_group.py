"""The ``edgeserve`` click group: lazy registration of each component's group, one error boundary.

Commands are imported only when invoked, so ``edgeserve agent run`` never imports TensorFlow or
onnx tooling. Every :class:`~edgeserve.errors.EdgeServeError`
becomes one line on stderr and its ``exit_code``; anything unexpected becomes one line and
exit 1, with the traceback only when ``EDGESERVE_DEBUG=1`` (:func:`edgeserve.cli.report_error`).
The entry point is :func:`edgeserve.cli.main`, which serves a plain ``agent run`` without
importing click at all.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from edgeserve.cli import _HELP, COMMANDS, DISTRIBUTION, configure_logging, report_error
from edgeserve.errors import EdgeServeError

__all__ = ["LazyGroup", "root"]


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (click docs, "Lazily Loading")."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("edgeserve"):
                return _missing(cmd_name)
            raise EdgeServeError(
                f"'edgeserve {cmd_name}' needs {exc.name}, which is not installed "
                f"(pip install 'edgeserve-toolkit[all]' or the extra for this command)"
            ) from exc
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from a table so that `edgeserve --help` imports no component.
        rows = [(name, _HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        """Run the CLI; the one place where errors become a line on stderr and an exit code."""
        extra.pop("standalone_mode", None)
        try:
            rv = super().main(args, prog_name, standalone_mode=False, **extra)
            # click returns Exit's code instead of raising when standalone_mode is off
            if isinstance(rv, int) and rv:
                sys.exit(rv)
            return rv
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except (EdgeServeError, KeyboardInterrupt, Exception) as exc:
            sys.exit(report_error(exc))


def _missing(name: str) -> click.Command:
    @click.command(name=name, help=_HELP.get(name, ""))
    def placeholder() -> None:
        raise EdgeServeError(f"'edgeserve {name}' is not available in this build")

    return placeholder


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
# name and version from the installed distribution's metadata (read only when asked)
@click.version_option(
    None, "--version", package_name=DISTRIBUTION, message="%(package)s %(version)s"
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def root(verbose: int) -> None:
    """edgeserve: convert a model for an edge device, serve it there, roll it out to a fleet."""
    configure_logging(verbose)
