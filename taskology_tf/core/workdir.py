"""Work folders: created with clear errors, and locked so that two trainers never share one.

A trainer holds an exclusive ``flock`` on ``<dir>/taskology.lock`` for as long as it runs; the file
also records who holds it (PID, host, command, start time), so a second trainer on the same folder
stops at once with a message naming the holder. The kernel drops the lock when its process dies, so
the lock of a killed trainer (``kill -9``, a crash, a reboot) is taken over by the next one; its
record is replaced. Within one process the lock is re-entrant (the experiment takes it before it
renders any data, the trainer again when it is built); it is released when the last holder releases it.

The lock is advisory and POSIX-only (``fcntl``); on NFS it relies on the server's lock support. A
work folder on a filesystem URL (``gs://...``, ``ram://...``) is created through ``tf.io.gfile`` and
not locked: object stores have no locks, so there one trainer per task is up to whoever starts them
(on Kubernetes, the task's Job).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import threading
import time

log = logging.getLogger(__name__)

LOCK_FILE = "taskology.lock"


class WorkdirError(RuntimeError):
    """A work folder that cannot be used: not creatable, not writable, or in use by another trainer."""


class WorkdirLockedError(WorkdirError):
    """Another live process holds the folder's lock; ``holder`` is its record (pid, host, command, since)."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


def _blocking_component(path: str) -> str | None:
    """The first existing component of ``path`` that is not a folder (a file in the way), if any."""
    current = os.path.abspath(path)
    parts = []
    while True:
        parts.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for candidate in reversed(parts):
        if os.path.lexists(candidate) and not os.path.isdir(candidate):
            return candidate
    return None


def prepare(path: str, what: str = "--workdir") -> str:
    """Create folder ``path`` (and its parents) if needed and check that it is writable; returns it.

    Raises ``WorkdirError`` naming the problem (a file in the way, no permission, a read-only file
    system) instead of a bare ``OSError``.
    """
    path = os.fspath(path)
    if "://" in path:
        return _prepare_url(path, what)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        blocking = _blocking_component(path)
        if blocking is not None or e.errno in (errno.ENOTDIR, errno.EEXIST):
            raise WorkdirError(
                f"cannot use {what} {path}: {blocking or e.filename} is a file, not a folder. Choose another {what} "
                "(or move the file away)."
            ) from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise WorkdirError(
                f"cannot create {what} {path}: permission denied for {e.filename or path}. Choose a folder you can "
                f"write to (e.g. under {os.path.expanduser('~')}) or fix its permissions."
            ) from None
        if e.errno == errno.EROFS:
            raise WorkdirError(f"cannot create {what} {path}: {e.filename or path} is on a read-only file system. "
                               f"Choose another {what}.") from None
        raise WorkdirError(f"cannot create {what} {path}: {e.strerror} ({e.filename or path}).") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise WorkdirError(f"{what} {path} is not writable by this user; choose another {what} or fix its permissions.")
    return path


def _prepare_url(path: str, what: str) -> str:
    import tensorflow as tf

    try:
        tf.io.gfile.makedirs(path)
    except (tf.errors.OpError, NotImplementedError) as e:  # unknown scheme, no credentials, no permission
        message = getattr(e, "message", None) or str(e)
        raise WorkdirError(f"cannot create {what} {path}: {message.strip().splitlines()[0] if message else e}.") from None
    return path


def _describe(holder: dict) -> str:
    since = holder.get("since")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    command = f", running `{holder['command']}`" if holder.get("command") else ""
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}{when}{command}"


def _read_record(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 65536).decode("utf-8", errors="replace")
        record = json.loads(data) if data.strip() else {}
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError) as e:
        return isinstance(e, PermissionError)
    return True


class _Held:
    def __init__(self, fd: int):
        self.fd = fd
        self.count = 0


_held: dict[str, _Held] = {}
_held_lock = threading.Lock()


class WorkdirLock:
    """A hold on a folder's lock; ``release()`` (idempotent) gives it up. Use ``lock()`` to get one."""

    def __init__(self, key: str):
        self.path = key
        self._released = False

    def release(self) -> None:
        with _held_lock:
            if self._released:
                return
            self._released = True
            held = _held.get(self.path)
            if held is None:
                return
            held.count -= 1
            if held.count == 0:
                del _held[self.path]
                try:
                    os.close(held.fd)  # closing drops the flock
                except OSError:
                    pass

    def __enter__(self) -> "WorkdirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock(path: str, what: str = "--workdir") -> WorkdirLock:
    """Create ``path`` if needed and take its lock (re-entrant within this process).

    Raises ``WorkdirLockedError`` at once, naming the holder's PID and host, when another process holds it;
    ``WorkdirError`` when the folder cannot be created or written.
    """
    import fcntl

    path = prepare(path, what)
    if "://" in path:
        log.info("%s %s is a filesystem URL: not locked (object stores have no locks).", what, path)
        return WorkdirLock(path)  # holds nothing; release() is a no-op
    key = os.path.realpath(path)
    with _held_lock:
        held = _held.get(key)
        if held is not None:
            held.count += 1
            return WorkdirLock(key)
        lock_path = os.path.join(key, LOCK_FILE)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise WorkdirError(f"cannot create the lock file {lock_path}: {e.strerror}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_record(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WorkdirError(f"cannot lock {lock_path}: {e.strerror}.") from None
            raise WorkdirLockedError(
                f"{what} {path} is in use by another trainer: {_describe(holder)}. Two trainers in one folder "
                f"overwrite each other's checkpoints; wait for it to finish or stop it, or choose another {what}.",
                holder,
            ) from None
        previous = _read_record(fd)
        host = socket.gethostname()
        if previous and previous.get("pid") != os.getpid():
            alive = previous.get("host") == host and _pid_alive(previous.get("pid"))
            log.info("%s %s: taking over the lock left by %s%s.", what, path, _describe(previous),
                     "" if alive else " (no longer running)")
        record = {"pid": os.getpid(), "host": host, "since": time.time(), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode("utf-8"))
        held = _held[key] = _Held(fd)
        held.count = 1
        return WorkdirLock(key)
