"""What else the fleet benchmarks measure about processes: the CPU the generator, the broker
and PostgreSQL used beside the server, and a py-spy profile of the server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fleet import _cpu_s
from support.broker import Mosquitto

__all__ = ["other_cpu_s", "py_spy"]


def other_cpu_s(broker: Mosquitto) -> dict[str, float]:
    """CPU seconds so far of the generator (this process), the broker and PostgreSQL's
    processes (its server and connections, which live through the run)."""
    postgres = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().split(" (", 1)[1].startswith("postgres)"):
                postgres += _cpu_s(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    assert broker.process is not None
    return {
        "generator": _cpu_s(os.getpid()),
        "broker": _cpu_s(broker.process.pid),
        "postgres": postgres,
    }


@contextmanager
def py_spy(pid: int, out: Path | None) -> Iterator[None]:
    """Sample ``pid`` (every thread, 20 Hz) into ``out`` as collapsed stacks while the block
    runs; without ``out``, nothing."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [spy, "record", "-p", str(pid), "-r", "20", "-f", "raw", "-o", str(out), "--threads"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the block's work starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        proc.wait(60)
