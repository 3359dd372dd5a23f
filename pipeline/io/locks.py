"""Run locks: ``flock`` for a local folder, ``lease`` for an object store.

Two runs writing one output folder at once would delete each other's files; the run holds
an exclusive lock on ``<output_dir>/.lock`` (``pipeline.lock.RunLock``). On a local disk
the operating system's ``flock`` releases it when the holder ends, however it ends. An
object store has no such lock: the holder creates the lock object with a conditional put
(S3's ``If-None-Match: *``, GCS's ``ifGenerationMatch=0``: exactly one of several writers
succeeds), holding an owner token, its host, pid and an expiry; a heartbeat renews the
expiry while the run lives (a put conditional on the object being still the holder's own
version: S3's ``If-Match`` on its ETag, GCS's ``ifGenerationMatch`` on its generation),
and the object is deleted at exit. A lease whose holder died without deleting it expires,
and the next run takes it over then, saying so: it replaces exactly the expired version
with a conditional put, so of several runs taking it over at once one succeeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import uuid

# How long a lease lasts without renewal, and how often its holder renews it.
LEASE_SECONDS = 60.0
RENEWALS_PER_LEASE = 3


class LockHeld(RuntimeError):
    """Another process holds the lock.

    Attributes:
        record: what the holder wrote in the lock file (a dict; empty when unreadable).
    """

    def __init__(self, record):
        super().__init__(f"the lock is held by {record or 'another process'}")
        self.record = record


@contextlib.contextmanager
def flock(path, record):
    """Holds an exclusive lock on the file ``path`` for the block, with ``record`` in it.

    The operating system releases the lock when the holder ends, however it ends (``kill
    -9`` included), so a lock is never stale; the file left behind says who held it last.

    Args:
        path: the lock file (created, with its directory, when missing).
        record: a JSON-able dict written into the file once the lock is held.

    Yields:
        None.

    Raises:
        LockHeld: another process holds the lock (with that holder's record).
    """
    import fcntl

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(_lock_record(handle)) from None
        handle.seek(0)
        handle.truncate()
        json.dump(record, handle)
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


def _lock_record(handle):
    """The record in an open lock file (an empty dict when it is empty or unreadable)."""
    try:
        handle.seek(0)
        record = json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


class LeaseLost(RuntimeError):
    """The run's lease could not be renewed (it expired and another run took it over)."""


class Lease:
    """A lease on an object store's lock object, held by this process.

    Args:
        store: the object store (``pipeline.io.objects.ObjectStore``), whose
            ``put_if_absent``, ``put_if_match``, ``read_with_etag`` and ``delete_if_match``
            take the turns; an "etag" is the store's version tag (S3's ETag, GCS's generation).
        path: the lock object's URL.
        record: what identifies the holder (pid, host, start time), stored in the lease.
        seconds: how long the lease lasts without renewal.

    Attributes:
        lost: set when a renewal failed: the run must stop writing.
    """

    def __init__(self, store, path, record, seconds=LEASE_SECONDS):
        self.store, self.path, self.seconds = store, path, float(seconds)
        self.record = {**record, "owner": uuid.uuid4().hex}
        self.lost = threading.Event()
        self._etag = None
        self._stop = threading.Event()
        self._thread = None

    def _body(self):
        return json.dumps({**self.record, "expires": time.time() + self.seconds, "lease_seconds": self.seconds},
                          sort_keys=True).encode()

    def acquire(self):
        """Takes the lease, or takes over an expired one.

        Raises:
            LockHeld: a live holder has it (with that holder's record, its expiry included).
        """
        etag = self.store.put_if_absent(self.path, self._body())
        self._etag = self._take_over() if etag is None else etag
        self._thread = threading.Thread(target=self._renew, name="kdiff-lease", daemon=True)
        self._thread.start()
        return self

    def _take_over(self):
        """Replaces an expired lease with this one: a put conditional on the expired version,
        which of several runs taking it over at once only one makes.

        Returns:
            The new lease's version tag.

        Raises:
            LockHeld: a live holder has it.
        """
        current = self.store.read_with_etag(self.path)
        if current is None:  # released meanwhile
            etag = self.store.put_if_absent(self.path, self._body())
        else:
            data, held_etag = current
            holder = _parse(data)
            if holder.get("expires", 0) > time.time():
                raise LockHeld(holder)
            etag = self.store.put_if_match(self.path, self._body(), held_etag)
            if etag is not None:
                print(f"lock: took over {self.path}: its lease by {_who(holder)} expired at "
                      f"{_when(holder.get('expires'))}", file=sys.stderr, flush=True)
        if etag is None:  # another run was quicker
            current = self.store.read_with_etag(self.path)
            raise LockHeld(_parse(current[0]) if current else {})
        return etag

    def _renew(self):
        while not self._stop.wait(self.seconds / RENEWALS_PER_LEASE):
            try:
                etag = self.store.put_if_match(self.path, self._body(), self._etag)
            except Exception as error:  # noqa: BLE001 - a store outage: retried at the next beat
                print(f"lock: could not renew the lease {self.path} ({error}); retrying", file=sys.stderr, flush=True)
                continue
            if etag is None:
                print(f"lock: the lease {self.path} was taken over by another run; stopping", file=sys.stderr,
                      flush=True)
                self.lost.set()
                return
            self._etag = etag

    def release(self):
        """Stops the renewals and deletes the lease (only if it is still this holder's).

        A store that cannot be reached leaves the lease to expire, with a line on stderr:
        the run's own error (a stage that lost the store) is what the run reports.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost.is_set() and self._etag is not None:
            try:
                self.store.delete_if_match(self.path, self._etag)
            except Exception as error:  # noqa: BLE001 - a store outage: the lease expires by itself
                print(f"lock: could not delete the lease {self.path} ({error}); it expires "
                      f"unrenewed within {self.seconds:g} s", file=sys.stderr, flush=True)


@contextlib.contextmanager
def lease(store, path, record, seconds=LEASE_SECONDS):
    """Holds a lease on the lock object ``path`` of an object store for the block.

    Args:
        store: the object store (``pipeline.io.objects.ObjectStore``).
        path: the lock object's URL.
        record: a JSON-able dict identifying the holder.
        seconds: how long the lease lasts without renewal (renewed every third of it).

    Yields:
        The ``Lease`` (its ``lost`` event is set if a renewal finds another holder).

    Raises:
        LockHeld: another live run holds it.
    """
    held = Lease(store, path, record, seconds).acquire()
    try:
        yield held
    finally:
        held.release()


def _parse(data):
    try:
        record = json.loads(data or b"{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _who(record):
    return f"pid {record.get('pid')} on {record.get('host')}"


def _when(seconds):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds or 0))
