"""The run's working directory: checked before training, locked while a run uses it.

Files are written atomically and readable as the umask allows.
"""

import contextlib
import dataclasses
import datetime
import errno
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import IO, Any

LOCK_NAME = "run.lock"
CONSOLE_LOG_NAME = "console.log"

# Enough for a few WRN-28-8 checkpoints (state + EMA + momentum ~ 300 MB each).
MIN_FREE_BYTES = 64 * 2**20


class WorkdirError(OSError):
    """The workdir cannot hold this run's outputs; the message names the path and the fix."""


def prepare(workdir: str, *, min_free_bytes: int = MIN_FREE_BYTES) -> str:
    """Creates ``workdir`` if needed and checks it is a writable directory with space left.

    A refused workdir is left as it was: the directories made for it are removed.
    """
    path = os.path.abspath(workdir)
    created_root = _topmost_missing(path)
    try:
        return _prepare(path, min_free_bytes)
    except WorkdirError:
        if created_root is not None:
            shutil.rmtree(created_root, ignore_errors=True)
        raise


def _topmost_missing(path: str) -> str | None:
    """The topmost directory of ``path`` that does not exist (itself or a parent), or None."""
    missing = None
    while not os.path.lexists(path):
        missing = path
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _prepare(path: str, min_free_bytes: int) -> str:
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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, owned by another user.
        return True
    return True


def _read_lock(path: str) -> dict[str, Any]:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}  # Being written this instant, or torn: treated as held.


def _live_holder(path: str) -> dict[str, Any] | None:
    """Who holds the lock file ``path``; None when it is stale (a dead process of this host)."""
    other = _read_lock(path)
    stale = (
        other.get("host") == socket.gethostname()
        and isinstance(other.get("pid"), int)
        and not _process_alive(other["pid"])
    )
    return None if stale else other


def _in_use(workdir: str, path: str, other: dict[str, Any]) -> WorkdirError:
    return WorkdirError(
        f"--workdir {workdir} is in use by another run (host "
        f"{other.get('host', '?')}, pid {other.get('pid', '?')}, started "
        f"{other.get('started', '?')}; lock {path}). Wait for it to finish, or use "
        "another --workdir. If that run is gone (e.g. its host died), delete the lock."
    )


def refuse_if_in_use(workdir: str) -> None:
    """Raises `WorkdirError` when a live run holds ``workdir``'s lock; takes nothing.

    The command line asks this at start-up, before the slow imports, so that a
    second run on a busy workdir is refused in seconds; the run itself then
    takes the lock with `lock`, which checks again.
    """
    path = os.path.join(workdir, LOCK_NAME)
    if os.path.exists(path):
        other = _live_holder(path)
        if other is not None:
            raise _in_use(workdir, path, other)


@contextlib.contextmanager
def lock(workdir: str):
    """Holds ``WORKDIR/run.lock`` for one run; a second run on the workdir is refused.

    The lock file names the holder (host, process id, start time) and is
    removed on any exit that runs Python's cleanup (return, exception,
    SIGTERM handled by the trainer). After a crash or ``kill -9`` it stays
    behind; a later run on the same host takes it over when that process id
    is no longer alive. On a shared file system a lock from another host
    cannot be checked that way: it is refused, and the message says to
    delete the file once that run is known to be gone. (Creating the file is
    atomic with O_EXCL on local disks and NFSv3+; the check is advisory, not
    a guarantee against every race on exotic file systems.)
    """
    path = os.path.join(workdir, LOCK_NAME)
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as error:
            if error.errno != errno.EEXIST:
                raise WorkdirError(f"Cannot create the lock {path}: {error}.") from error
            other = _live_holder(path)
            if other is not None:
                raise _in_use(workdir, path, other) from None
            # Left by a run that died without cleaning up: take it over.
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(holder, handle)
        break
    else:
        raise WorkdirError(f"Could not take the lock {path}; another run raced for it.")
    try:
        yield holder
    finally:
        if _read_lock(path).get("pid") == holder["pid"]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def write_atomically(path: str, write: Callable[[IO], None], *, binary: bool = False) -> None:
    """Writes ``path`` by calling ``write(handle)`` on a temporary file, then renaming it.

    A reader never sees half a file, and a crash mid-write leaves the previous
    version in place. The file gets the mode a plain ``open()`` would give.
    """
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(
        "wb" if binary else "w", dir=directory, prefix=".tmp_", delete=False
    ) as handle:
        write(handle)
        temporary = handle.name
    make_readable(temporary)
    os.replace(temporary, path)


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Writes ``payload`` as indented JSON to ``path`` (atomically, see `write_atomically`)."""
    write_atomically(path, lambda handle: json.dump(payload, handle, indent=2, sort_keys=True))


def make_readable(path: str) -> None:
    """Gives ``path`` the mode a plain ``open()`` would (0666 less the umask).

    NamedTemporaryFile creates files 0600, which would hide results from the
    rest of a group on a shared machine.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def console_log(workdir: str):
    """Copies the run's log lines (progress, evaluations, warnings) to ``WORKDIR/console.log``.

    Appended across resumes, so the file tells a workdir's whole history.
    """
    handler = logging.FileHandler(os.path.join(workdir, CONSOLE_LOG_NAME), mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("absl")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What a workdir held before a run touched it (`snapshot`), so `restore` can put it back."""

    path: str
    # The topmost directory of ``path`` that did not exist (``path`` itself, or a
    # parent that ``os.makedirs`` will create); None when ``path`` existed.
    created_root: str | None
    files: dict[str, int]  # Relative path -> size in bytes.
    directories: frozenset[str]
    # (device, inode) of every file: one found under a new name was moved there
    # (e.g. an unreadable checkpoint moved aside), not made by the run.
    inodes: frozenset[tuple[int, int]] = frozenset()


def snapshot(workdir: str) -> Snapshot:
    """Lists ``workdir``'s files and sizes (cheap: names and sizes, no contents)."""
    path = os.path.abspath(workdir)
    created_root = _topmost_missing(path)
    files, directories, inodes = {}, set(), set()
    if created_root is None and os.path.isdir(path):
        for root, dirs, names in os.walk(path):
            for name in dirs:
                directories.add(os.path.relpath(os.path.join(root, name), path))
            for name in names:
                full = os.path.join(root, name)
                with contextlib.suppress(OSError):
                    stat = os.lstat(full)
                    files[os.path.relpath(full, path)] = stat.st_size
                    inodes.add((stat.st_dev, stat.st_ino))
    return Snapshot(path, created_root, files, frozenset(directories), frozenset(inodes))


def restore(before: Snapshot) -> None:
    """Puts the workdir back as `snapshot` found it, for a run refused before training.

    A workdir that did not exist is removed with the parents the run created;
    otherwise every file and directory the run added is removed and a file it
    appended to (``console.log``) is cut back to its old length. Files are
    never rewritten before the first step, so nothing else needs undoing. A
    file that was there before under another name (moved, e.g. an unreadable
    checkpoint moved aside) is kept, and so is the new directory holding it.
    Call it only after the run let go of the workdir (lock released, logs closed).
    """
    if before.created_root is not None:
        shutil.rmtree(before.created_root, ignore_errors=True)
        return
    for root, dirs, names in os.walk(before.path, topdown=False):
        for name in names:
            full = os.path.join(root, name)
            size = before.files.get(os.path.relpath(full, before.path))
            with contextlib.suppress(OSError):
                stat = os.lstat(full)
                if size is None and (stat.st_dev, stat.st_ino) not in before.inodes:
                    os.remove(full)
                elif size is not None and stat.st_size > size:
                    os.truncate(full, size)
        for name in dirs:
            full = os.path.join(root, name)
            if os.path.relpath(full, before.path) not in before.directories:
                # Bottom-up, its new files are gone by now: what is left was moved in.
                with contextlib.suppress(OSError):
                    if os.path.islink(full):
                        os.remove(full)
                    else:
                        os.rmdir(full)
