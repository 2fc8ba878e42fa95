"""Starting, stopping and watching ``edgeserve agent run`` for the benchmarks: readiness polled
with a raw socket, RSS and CPU time from ``/proc``."""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CLI = [sys.executable, "-c", "from edgeserve.cli import main; main()"]


def compile_sources() -> None:
    """Compile the project's packages to bytecode, as ``pip install`` does for a device.

    A source checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (or from a read-only tree) has no
    ``__pycache__``, so every agent start would compile each of its modules again: about 40 ms
    of cold start and 0.6 MB of RSS (4 alternated starts, 2026-12-02) that no installed agent
    pays. Writes ``__pycache__`` beside the sources (ignored by git).
    """
    import compileall

    for package in ("edgeserve", "agent"):
        compileall.compile_dir(ROOT / package, quiet=1)


def device_python(work: Path) -> Path:
    """The interpreter of a virtual environment under ``work`` laid out as a device's.

    This checkout is installed from a wheel built from a copy of it (so the checkout gets no
    ``build/``), with pip's bytecode; the dependencies are the running environment's, its
    site-packages added by a path file so that none of its own path files (an editable
    install's finder: ~17 ms of every Python start, 2026-12-07) runs at start.
    """
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    source = work / "source"
    ignore = shutil.ignore_patterns(".*", "build", "dist", "__pycache__", "*.egg-info")
    shutil.copytree(ROOT, source, ignore=ignore)
    # this environment's setuptools when it has one (Python 3.12+ venvs do not)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *isolation,
         "--disable-pip-version-check", "--target", str(purelib), str(source)],
        check=True,
    )  # fmt: skip
    return venv / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 30) -> float:
    """Poll readiness with a raw socket (cheap, so it does not slow the start it measures)."""
    request = b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n"
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError("agent did not become ready")


def start(state: Path, *args: str) -> tuple[subprocess.Popen, int, float]:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*CLI, "agent", "run", "--state", str(state), "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ready = wait_ready(port, proc)
    return proc, port, ready - t0


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MB (``RssAnon``: its private memory only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat (busy = all but idle and iowait)."""
    cols = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(cols[:8])  # guest time is already counted in user
    return total - cols[3] - cols[4], total


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
