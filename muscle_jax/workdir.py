"""The run's working directory: checked before training, written atomically."""

import json
import os
import shutil
import tempfile
from typing import Any

# Enough for a few WRN-28-8 checkpoints (state + EMA + momentum ~ 300 MB each).
MIN_FREE_BYTES = 64 * 2**20


class WorkdirError(OSError):
    """The workdir cannot hold this run's outputs; the message names the path and the fix."""


def prepare(workdir: str, *, min_free_bytes: int = MIN_FREE_BYTES) -> str:
    """Creates ``workdir`` if needed and checks it is a writable directory with space left."""
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"--workdir {path} exists and is not a directory; choose another path.")
    try:
        os.makedirs(path, exist_ok=True)
        # os.access is unreliable as root and on network file systems: try a real write.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_probe_"):
            pass
    except OSError as error:
        raise WorkdirError(
            f"--workdir {path} is not writable ({error.strerror or error}); fix its "
            "permissions or choose another --workdir."
        ) from error
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise WorkdirError(
            f"--workdir {path} has only {free / 2**20:.1f} MiB free, less than the "
            f"{min_free_bytes / 2**20:.0f} MiB checkpoints need; free space or choose another "
            "--workdir."
        )
    return path


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Writes ``payload`` to ``path`` through a temporary file and a rename.

    A reader never sees half a file, and a crash mid-write leaves the previous
    version in place.
    """
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(
        "w", dir=directory, prefix=".tmp_", suffix=".json", delete=False
    ) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        temporary = handle.name
    os.replace(temporary, path)
