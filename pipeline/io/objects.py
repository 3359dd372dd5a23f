"""What every object store's side of ``pipeline.io`` shares, built on a few primitives.

A store names its objects by ``<scheme>://bucket/key`` URLs. A "directory" is a key prefix:
it exists when some key starts with ``<path>/``. A write is one upload made after the local
write it stages has succeeded, so an object appears complete or not at all. A rename is a
copy and a delete; a stage's commit uploads its local directory in place of the old tree —
not atomic, which is safe because readers trust an output only with its ``_DONE.json``,
written last. The run lock is a lease taken with conditional writes
(``pipeline.io.locks``).

``ObjectStore`` implements ``pipeline.io``'s functions once, for every store; a store
(``pipeline.io.s3``, ``pipeline.io.gcs``) subclasses it with its client and primitives:
listing keys, the size of one, reading one into a file, uploading, downloading, copying and
deleting, and the four conditional writes the lease takes its turns with.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import io as stdio
import os
import posixpath
import shutil
import tempfile

from pipeline.io import locks

__all__ = ["ObjectStore", "not_found"]


def not_found(path):
    """The ``FileNotFoundError`` for the missing object or prefix ``path``."""
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


@functools.lru_cache(maxsize=8)
def _cached_client(store, environment):
    del environment  # the cache key: the client library reads the same variables itself
    return store.new_client()


class ObjectStore:
    """``pipeline.io``'s functions for the URLs of one object store.

    Subclasses set ``scheme`` and ``client_environment`` and implement ``new_client``, the
    primitives (``list_objects``, ``list_children``, ``size``, ``read_into``, ``upload``,
    ``download``, ``copy_object``, ``delete_keys``) and the conditional writes
    (``put_if_absent``, ``put_if_match``, ``read_with_etag``, ``delete_if_match``). A
    primitive takes a bucket and a key (a prefix ends with ``/``, or is empty for the
    whole bucket); the functions take URLs.
    """

    # the URL scheme ("s3" for s3://bucket/key)
    scheme = ""
    # the environment variables that configure the client: a change makes a new client
    client_environment = ()
    # objects up to this size are read into memory; larger ones spill to a temporary file
    SPOOL_BYTES = 64 << 20

    # ----------------------------------------------------------------------- the store's own

    def new_client(self):
        """A new client of the store, configured from the environment."""
        raise NotImplementedError

    def os_error(self, error, path):
        """The ``OSError`` naming ``path`` for an error of the store's client met while reading
        or writing it, or None for an error that is not the client's (it propagates as it is;
        ``pipeline.io.translated`` calls this for every store call).

        Args:
            error: the exception.
            path: the URL being read or written.

        Returns:
            An ``OSError`` with ``filename=path``, or None.
        """
        return None

    def list_objects(self, bucket, prefix, limit=None):
        """``(key, size in bytes)`` of the objects whose keys start with ``prefix`` (at most
        ``limit`` of them)."""
        raise NotImplementedError

    def list_children(self, bucket, prefix):
        """What is one level under ``prefix``: its keys, and the sub-prefixes (ending in ``/``)
        of the deeper ones."""
        raise NotImplementedError

    def size(self, bucket, key):
        """The size of the object ``key`` in bytes, or None when there is none."""
        raise NotImplementedError

    def read_into(self, bucket, key, handle):
        """Writes the object's bytes into the open file ``handle`` in chunks (never all in
        memory at once).

        Returns:
            False when there is no such object (and nothing was written).
        """
        raise NotImplementedError

    def upload(self, local, bucket, key):
        """Uploads the local file ``local`` as the object ``key``."""
        raise NotImplementedError

    def download(self, bucket, key, local):
        """Downloads the object ``key`` to the local file ``local``."""
        raise NotImplementedError

    def copy_object(self, source_bucket, source_key, bucket, key):
        """Copies an object on the server."""
        raise NotImplementedError

    def delete_keys(self, bucket, keys):
        """Deletes the objects ``keys`` (a missing one is no error)."""
        raise NotImplementedError

    def put_if_absent(self, path, data):
        """Creates the object ``path`` with ``data`` unless it exists (of several writers
        racing, exactly one succeeds).

        Returns:
            The new object's version tag, or None when another object is there.
        """
        raise NotImplementedError

    def put_if_match(self, path, data, etag):
        """Replaces the object ``path`` if it is still the version ``etag``.

        Returns:
            The new version tag, or None when the object changed or is gone.
        """
        raise NotImplementedError

    def read_with_etag(self, path):
        """The object's bytes and version tag, or None when it does not exist."""
        raise NotImplementedError

    def delete_if_match(self, path, etag):
        """Deletes the object ``path`` if it is still the version ``etag``.

        Returns:
            True when this call deleted it.
        """
        raise NotImplementedError

    # ----------------------------------------------------------------------- paths

    def client(self):
        """The store's client for the current environment (one per configuration, reused:
        making one costs about 0.1 s)."""
        return _cached_client(self, tuple(os.environ.get(name) for name in self.client_environment))

    def split(self, path):
        """``<scheme>://bucket/a/b`` → ``("bucket", "a/b")`` (the key without a trailing ``/``).

        Raises:
            ValueError: not a URL of this store with a bucket.
        """
        path, start = os.fspath(path), f"{self.scheme}://"
        if not path.startswith(start) or not path[len(start):].split("/", 1)[0]:
            raise ValueError(f"Expected a {start}bucket/key URL. Received: {path!r}")
        bucket, _, key = path[len(start):].partition("/")
        return bucket, key.strip("/")

    def _url(self, bucket, key):
        return f"{self.scheme}://{bucket}/{key}"

    def _keys(self, path):
        """``(bucket, every key under the "directory" path, the prefix they start with)``."""
        bucket, key = self.split(path)
        prefix = _prefix(key)
        return bucket, [name for name, _ in self.list_objects(bucket, prefix)], prefix

    # ----------------------------------------------------------------------- queries

    def isfile(self, path):
        """Whether an object has the key ``path``."""
        bucket, key = self.split(path)
        return bool(key) and self.size(bucket, key) is not None

    def isdir(self, path):
        """Whether some key starts with ``<path>/`` (the bucket itself: whether it holds any)."""
        bucket, key = self.split(path)
        return any(True for _ in self.list_objects(bucket, _prefix(key), limit=1))

    def exists(self, path):
        """Whether ``path`` is an object or a non-empty prefix."""
        return self.isfile(path) or self.isdir(path)

    def file_sizes(self, top):
        """Every object under the "directory" ``top`` and its size, from one listing (a request
        per page of keys, not one per object).

        Returns:
            A dict relative path (``/``-separated) → bytes; empty when no key is there.
        """
        bucket, key = self.split(top)
        prefix = _prefix(key)
        return {name[len(prefix):]: size for name, size in self.list_objects(bucket, prefix)}

    def getsize(self, path):
        """The size of the object ``path``, in bytes."""
        bucket, key = self.split(path)
        size = self.size(bucket, key) if key else None
        if size is None:
            raise not_found(path)
        return size

    def listdir(self, path):
        """The names one level under ``path``, sorted.

        Raises:
            FileNotFoundError: no key starts with ``<path>/``.
        """
        bucket, key = self.split(path)
        prefix = _prefix(key)
        names = {name[len(prefix):].rstrip("/") for name in self.list_children(bucket, prefix)}
        names.discard("")  # a "folder" placeholder object
        if not names:
            raise not_found(path)
        return sorted(names)

    def glob(self, directory, pattern):
        """The entries of ``directory`` whose names match ``pattern``, sorted."""
        try:
            names = self.listdir(directory)
        except FileNotFoundError:
            return []
        return [posixpath.join(directory, name) for name in names if fnmatch.fnmatchcase(name, pattern)]

    def walk(self, top, follow_links=False):
        """The tree under ``top`` as ``os.walk`` yields it, top-down (prune in place).

        Args:
            top: the "directory".
            follow_links: unused (an object store has no links).

        Yields:
            ``(directory, subdirectory names, file names)``.
        """
        del follow_links
        _, keys, prefix = self._keys(top)
        tree = {}
        for name in keys:
            node = tree
            parts = name[len(prefix):].split("/")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            if parts[-1]:  # not a "folder" placeholder object
                node[parts[-1]] = None
        yield from _walk(top.rstrip("/"), tree)

    # ----------------------------------------------------------------------- changes

    def makedirs(self, path, exist_ok=True):
        """Nothing to create: a prefix exists once a key is written under it.

        Raises:
            FileExistsError: ``exist_ok`` is False and ``path`` exists.
        """
        if not exist_ok and self.exists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)

    def remove(self, path, missing_ok=False):
        """Deletes the object ``path``."""
        if not self.isfile(path):
            if missing_ok:
                return
            raise not_found(path)
        bucket, key = self.split(path)
        self.delete_keys(bucket, [key])

    def remove_tree(self, path, ignore_errors=False):
        """Deletes every object under ``<path>/``."""
        bucket, keys, _ = self._keys(path)
        if not keys and not ignore_errors:
            raise not_found(path)
        self.delete_keys(bucket, keys)

    def copy(self, source, target):
        """Copies the object ``source`` to ``target`` (both in this store; the server copies)."""
        if not self.isfile(source):
            raise not_found(source)
        self.copy_object(*self.split(source), *self.split(target))

    def replace(self, source, target):
        """Moves the object ``source`` to ``target``: a copy, then a delete."""
        self.copy(source, target)
        self.remove(source)

    def copy_tree(self, source, target):
        """Copies every object under ``source`` to the same key under ``target``."""
        bucket, keys, prefix = self._keys(source)
        if not keys:
            raise not_found(source)
        target_bucket, target_key = self.split(target)
        for name in keys:
            self.copy_object(bucket, name, target_bucket, posixpath.join(target_key, name[len(prefix):]))

    # ----------------------------------------------------------------------- reads and writes

    def open_read(self, path, mode="rb"):
        """The object ``path`` as a seekable file: read in chunks into memory, or into a
        temporary file past ``SPOOL_BYTES`` (a manifest hashes multi-gigabyte TFRecords).

        Args:
            path: the object.
            mode: ``"rb"``, or ``"r"`` for UTF-8 text.

        Returns:
            A file positioned at its start (a text wrapper for ``"r"``).
        """
        bucket, key = self.split(path)
        handle = tempfile.SpooledTemporaryFile(max_size=self.SPOOL_BYTES)
        if not key or not self.read_into(bucket, key, handle):
            handle.close()
            raise not_found(path)
        handle.seek(0)
        return handle if "b" in mode else stdio.TextIOWrapper(handle, encoding="utf-8")

    def _upload(self, local, target):
        """Uploads the local file or tree ``local`` to ``target``."""
        bucket, key = self.split(target)
        if not os.path.isdir(local):
            self.upload(local, bucket, key)
            return
        for root, _, names in os.walk(local):
            for name in names:
                relative = os.path.relpath(os.path.join(root, name), local).replace(os.sep, "/")
                self.upload(os.path.join(root, name), bucket, posixpath.join(key, relative))

    def _download(self, source, local):
        """Downloads the object or tree ``source`` to ``local``."""
        if self.isfile(source):
            self.download(*self.split(source), local)
            return
        bucket, keys, prefix = self._keys(source)
        if not keys:
            raise not_found(source)
        for name in keys:
            if name.endswith("/"):  # a "folder" placeholder object
                continue
            destination = os.path.join(local, *name[len(prefix):].split("/"))
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            self.download(bucket, name, destination)

    @contextlib.contextmanager
    def _scratch(self, path):
        """A temporary local folder, removed after the block, and the local name of ``path`` in it."""
        folder = tempfile.mkdtemp(prefix=f"kdiff-{self.scheme}-")
        try:
            yield os.path.join(folder, posixpath.basename(os.fspath(path).rstrip("/")) or "root")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @contextlib.contextmanager
    def local_copy(self, path):
        """A local copy of the object or tree ``path``, for libraries that read by name;
        removed after the block.

        Yields:
            The local path.
        """
        with self._scratch(path) as local:
            self._download(path, local)
            yield local

    @contextlib.contextmanager
    def local_output(self, path):
        """A local path whose file (or tree) is uploaded to ``path`` when the block ends;
        nothing is uploaded when it raises.

        Yields:
            The local path.
        """
        with self._scratch(path) as local:
            yield local
            if os.path.lexists(local):
                self._upload(local, path)

    @contextlib.contextmanager
    def atomic_directory(self, final_path):
        """A stage's commit: a local directory whose tree replaces ``final_path``'s when the
        block ends (the old objects deleted, the new uploaded); nothing changes when it raises.

        Yields:
            The local directory.
        """
        with self._scratch(final_path) as local:
            os.makedirs(local)
            yield local
            self.remove_tree(final_path, ignore_errors=True)
            self._upload(local, final_path)

    @contextlib.contextmanager
    def local_mirror(self, path):
        """A local copy of the tree at ``path`` (empty when there is none) that is written back
        when the block ends: every local file uploaded, every object no longer there locally
        deleted. Nothing is written back when the block raises.

        Yields:
            The local directory.
        """
        with self._scratch(path) as local:
            os.makedirs(local)
            if self.isdir(path):
                self._download(path, local)
            yield local
            bucket, keys, prefix = self._keys(path)
            kept = set()
            for root, _, names in os.walk(local):
                for name in names:
                    kept.add(prefix + os.path.relpath(os.path.join(root, name), local).replace(os.sep, "/"))
            self.delete_keys(bucket, [name for name in keys if name not in kept])
            self._upload(local, path)

    @contextlib.contextmanager
    def shared_directory(self, final_path):
        """``pipeline.io.shared_directory`` in a store: ``final_path`` itself, emptied first.

        Yields:
            ``final_path``.
        """
        self.remove_tree(final_path, ignore_errors=True)
        yield final_path

    def remove_leftovers(self, final_path):
        """Nothing to remove: a commit leaves no hidden objects (it stages locally)."""
        del final_path

    # ----------------------------------------------------------------------- the lock

    def exclusive_lock(self, path, record, seconds=locks.LEASE_SECONDS):
        """A lease on the lock object ``path`` (``pipeline.io.locks.lease``)."""
        return locks.lease(self, path, record, seconds)

    def __repr__(self):
        return f"<{type(self).__name__} {self.scheme}://>"


def _prefix(key):
    return f"{key}/" if key else ""


def _walk(directory, node):
    subdirectories = sorted(name for name, child in node.items() if child is not None)
    files = sorted(name for name, child in node.items() if child is None)
    yield directory, subdirectories, files
    for name in subdirectories:
        yield from _walk(posixpath.join(directory, name), node[name])
