"""What produced a result: when, where, with which code and libraries.

Written into results.json so that a number found months later can be traced
to its run: start and end times, wall time, host and devices, this package's
version and git commit (when it runs from a checkout), and the versions of
the libraries that decide the numbers.
"""

import datetime
import importlib.metadata
import os
import socket
import subprocess
from typing import Any

import jax

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-cpu", "numpy")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The checkout's commit (with ``-dirty`` for uncommitted changes), or None outside one."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def describe(*, started_at: str, wall_seconds: float) -> dict[str, Any]:
    devices = jax.devices()
    return {
        "started_at": started_at,
        "ended_at": now(),
        "wall_seconds": round(wall_seconds, 3),
        "host": socket.gethostname(),
        "process_count": jax.process_count(),
        "device_count": len(devices),
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "muscle_jax_version": _version("muscle_jax"),
        "git_commit": git_commit(),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }
