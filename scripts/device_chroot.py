"""Running commands in a Debian arm64 root filesystem under qemu-user, for scripts/device_check.py:
the chroot's clean environment, a command in it (as a user), the installed unit's settings and
the rootfs's own ``systemd-analyze verify``, and staging files where the service user reads them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CheckError(Exception):
    """A device check failed; the message says which and why."""


def chroot_env() -> list[str]:
    """``env -i`` arguments: a clean environment plus the host's pip settings (index, cert)
    and the emulated CPU model."""
    # QEMU_CPU: qemu-user reads it at each exec (scripts/test-devices sets the CPU model)
    keep = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k == "QEMU_CPU"}
    keep.pop("PIP_REQUIRE_VIRTUALENV", None)
    return ["/usr/bin/env", "-i", f"PATH={PATH}", "HOME=/root", "LANG=C.UTF-8"] + [
        f"{k}={v}" for k, v in sorted(keep.items())
    ]


def in_root(rootfs: Path, *cmd: str, user: str | None = None, timeout: float = 600) -> str:
    """Run ``cmd`` in the chroot (as ``user``), return stdout; CheckError with output if not 0."""
    spec = [f"--userspec={user}:{user}"] if user else []
    proc = subprocess.run(
        ["chroot", *spec, str(rootfs), *chroot_env(), *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise CheckError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc.stdout


def unit_settings(path: Path) -> tuple[list[str], dict[str, str]]:
    """The unit's ExecStart (split) and Environment= assignments, and its User."""
    exec_start: list[str] = []
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            exec_start = value.split()
        elif key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
        elif key == "User":
            env["__user__"] = value
    if not exec_start:
        raise CheckError(f"{path}: no ExecStart")
    return exec_start, env


def verify_unit(rootfs: Path, unit: str) -> None:
    """The distribution's own ``systemd-analyze verify`` (arm64, in the chroot) on the unit the
    installer wrote: any complaint (unknown directive, bad value, missing ExecStart binary)
    fails."""
    proc = subprocess.run(
        ["chroot", str(rootfs), *chroot_env(), "systemd-analyze", "verify", unit],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0 or (proc.stdout + proc.stderr).strip():
        raise CheckError(f"systemd-analyze verify {unit}:\n{proc.stdout}{proc.stderr}")


def stage_tree(src: Path, dest: Path) -> None:
    """Copy readable by everyone (the service user installs bundles from the stage)."""
    shutil.copytree(src, dest, dirs_exist_ok=True)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
