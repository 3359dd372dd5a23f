"""One run per output folder: an exclusive lock on ``<output_dir>/.lock``.

Two runs writing one folder at once delete each other's temporary files and can leave
cached samples that belong to a model the other run replaced. ``RunLock`` holds an
exclusive lock (``pipeline.io.exclusive_lock``) on a lock file that records the holder's
pid, host and start time. On a local disk the lock is released when the holding process
ends — however it ends, ``kill -9`` included — so a lock is never stale; the file left
behind only says who held it last. On an object store it is a lease that the run renews
while it lives: a run killed without deleting it holds the folder until the lease expires
(``pipeline.io.locks.LEASE_SECONDS``), and the next run takes it over then.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from pipeline import io

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

    def __init__(self, output_dir, **options):
        self.output_dir = io.abspath(output_dir)
        self.path = io.join(self.output_dir, LOCK_FILE)
        self.options = options
        self._held = None
        self._lease = None

    def __enter__(self):
        held = contextlib.ExitStack()
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        try:
            self._lease = held.enter_context(io.exclusive_lock(self.path, record, **self.options))
        except io.LockHeld as error:
            raise RunLockedError(
                f"Expected no other run on --output_dir={self.output_dir}. Received: it is in use by "
                f"{_describe(error.record)}; wait for that run to end, or use another --output_dir."
            ) from None
        self._held = held
        return self

    def check(self):
        """Raises if the run no longer holds the folder (its lease expired and another run
        took it over): called before each stage and each commit.

        Raises:
            RunLockedError: naming the folder.
        """
        if self._lease is not None and self._lease.lost.is_set():
            raise RunLockedError(
                f"Expected this run to hold --output_dir={self.output_dir} to the end. Received: its lease "
                f"{self.path} expired unrenewed and another run took it over; this run stops before writing more."
            )

    def __exit__(self, *exc):
        if self._held is not None:
            self._held.close()
            self._held = None
        return False


def _describe(record):
    """Who holds the lock, from the lock file's record."""
    if not record:
        return "another run"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("started", 0)))
    text = f"another run (pid {record.get('pid')} on {record.get('host')}, started {started})"
    if "expires" in record:  # a lease: it says when a dead holder's claim ends
        expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["expires"]))
        text += f", whose lease runs to {expires} unless renewed (a run started after that takes over a dead one's)"
    return text
