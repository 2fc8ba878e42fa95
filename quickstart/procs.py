"""Run the real ``edgeserve`` CLI as child processes: one-shot commands and long-running services.

Every child gets its own process group (``start_new_session``) so that stopping it also stops
anything it started, and every service's output goes to a log file in the work directory so
that a failure can show its last lines. :class:`Supervisor` stops whatever is still running in
reverse start order (SIGTERM, then SIGKILL after a grace period) - also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgeserve.errors import EdgeServeError, UnavailableError

__all__ = ["Service", "StepFailed", "Supervisor", "edgeserve_argv", "started_id"]


class StepFailed(EdgeServeError):
    """A condition being waited for can no longer come true (e.g. a rollout was rolled back)."""


def edgeserve_argv() -> list[str]:
    """How to call the CLI: the ``edgeserve`` script beside this interpreter, else ``python -c``
    (an editable install without scripts on PATH still works)."""
    script = Path(sys.executable).with_name("edgeserve")
    if script.exists():
        return [str(script)]
    found = shutil.which("edgeserve")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return [found]
    return [sys.executable, "-c", "from edgeserve.cli import main; main()"]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


@dataclass
class Service:
    """A long-running child process (broker, fleet server, agent)."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        """Still running."""
        return self.process.poll() is None

    def tail(self, lines: int = 15) -> str:
        """The last lines of its log."""
        return _tail(self.log_path, lines)

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM its process group, SIGKILL after ``grace_s``; returns the exit code."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(5)
        # anything the child left behind in its group goes too
        _signal_group(self.process, signal.SIGKILL)
        return self.process.returncode


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


@dataclass
class Supervisor:
    """Starts CLI commands in ``workdir`` and stops them all at the end.

    Attributes:
        workdir: where logs go and commands run.
        echo: called with each command line before it runs (for the step-by-step output).
        env: extra environment for every child.
    """

    workdir: Path
    echo: Callable[[str], None] = print
    env: Mapping[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)

    def _env(self) -> dict[str, str]:
        # COLUMNS: rich tables printed by children fit the indented step output
        return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "96", **self.env}

    @staticmethod
    def show(args: Sequence[str]) -> str:
        """The command as a user would type it."""
        return "edgeserve " + " ".join(shlex.quote(a) for a in args)

    def run(self, args: Sequence[str], *, timeout_s: float = 120.0, quiet: bool = False) -> str:
        """Run ``edgeserve ARGS`` to completion and return its stdout.

        Raises:
            EdgeServeError: non-zero exit (with its stderr) or timeout.
        """
        if not quiet:
            self.echo(f"  $ {self.show(args)}")
        try:
            proc = subprocess.run(
                [*edgeserve_argv(), *args],
                cwd=self.workdir,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EdgeServeError(f"'{self.show(args)}' did not finish in {timeout_s:.0f}s") from exc
        if proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-5:]
            raise EdgeServeError(
                f"'{self.show(args)}' failed (exit {proc.returncode}): " + " | ".join(detail)
            )
        return proc.stdout

    def start(self, name: str, args: Sequence[str]) -> Service:
        """Start ``edgeserve ARGS`` in the background, output to ``logs/<name>.log``."""
        self.echo(f"  $ {self.show(args)} &")
        log_dir = self.workdir / "logs"
        log_dir.mkdir(exist_ok=True)
        log_path = log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [*edgeserve_argv(), *args],
                cwd=self.workdir,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        service = Service(name, list(args), process, log_path)
        self.services.append(service)
        return service

    def wait_for(
        self,
        what: str,
        check: Callable[[], bool],
        *,
        timeout_s: float,
        watch: Sequence[Service] = (),
        interval_s: float = 0.2,
    ) -> float:
        """Poll ``check`` until true; fail early when a watched service dies.

        Returns:
            Seconds waited.

        Raises:
            UnavailableError: timeout or a watched service exited (its log tail included).
        """
        start = time.monotonic()
        while True:
            for service in watch:
                if not service.alive():
                    raise UnavailableError(
                        f"{service.name} exited ({service.process.returncode}) while waiting for "
                        f"{what}; last lines of {service.log_path}:\n{service.tail()}"
                    )
            try:
                if check():
                    return time.monotonic() - start
            except StepFailed:
                raise
            except EdgeServeError:
                pass  # not up yet
            if time.monotonic() - start > timeout_s:
                logs = "\n".join(f"--- {s.name}:\n{s.tail(8)}" for s in watch)
                raise UnavailableError(
                    f"timed out after {timeout_s:.0f}s waiting for {what}\n{logs}"
                )
            time.sleep(interval_s)

    def stop_all(self) -> None:
        """Stop every service still running, newest first."""
        for service in reversed(self.services):
            service.stop()
        self.services.clear()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def started_id(kind: str, output: str) -> int:
    """The id in ``rollout 3 started ...`` / ``experiment 1 started ...`` (CLI output).

    Raises:
        EdgeServeError: the output does not name one.
    """
    match = re.search(rf"\b{kind} (\d+) started", output)
    if match is None:
        raise EdgeServeError(f"expected '{kind} N started' from the CLI, got: {output[:200]!r}")
    return int(match.group(1))
