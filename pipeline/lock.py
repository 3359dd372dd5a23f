"""One run per output folder: an exclusive lock on ``<output_dir>/.lock``.

Two runs writing one folder at once delete each other's temporary files and can leave
cached samples that belong to a model the other run replaced. ``RunLock`` takes an
exclusive ``fcntl.flock`` on a lock file that records the holder's pid, host and start
time. The operating system releases the lock when the holding process ends — however it
ends, ``kill -9`` included — so a lock is never stale; the file left behind only says who
held it last.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another run holds the output folder: the message names the folder and that run."""


class RunLock:
    """An exclusive lock on an output folder, as a context manager.

    Args:
        output_dir: the run's folder (created if missing).

    Raises:
        RunLockedError: on entering, when another process holds the folder.
    """

    def __init__(self, output_dir):
        self.output_dir = os.path.abspath(output_dir)
        self.path = os.path.join(self.output_dir, LOCK_FILE)
        self._file = None

    def __enter__(self):
        os.makedirs(self.output_dir, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(handle)
            handle.close()
            raise RunLockedError(
                f"Expected no other run on --output_dir={self.output_dir}. Received: it is in use by "
                f"{holder}; wait for that run to end, or use another --output_dir."
            ) from None
        handle.seek(0)
        handle.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, handle)
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        return False


def _describe(handle):
    """Who holds the lock, from the lock file's record."""
    try:
        handle.seek(0)
        record = json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        record = {}
    if not record:
        return "another run"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("started", 0)))
    return f"another run (pid {record.get('pid')} on {record.get('host')}, started {started})"
