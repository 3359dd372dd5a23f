"""The pipeline's one file-system seam: every read and write of a run goes through here.

Artifacts, ``_DONE.json`` records and their manifests, ``config.json``, the run lock,
reports and their pictures, the experiments' reports, the checkpoints, and the sources a
run reads (image folders, IDX files, ``--config``) are all read and written with the
functions below; no other module of ``pipeline/`` opens, lists, renames or removes a file
itself (``tests/pipeline/test_io.py`` greps for it).

A path is a local path or a URL of an object store: ``s3://bucket/key`` (Amazon S3 and
S3-compatible servers, through boto3) or ``gs://bucket/key`` (Google Cloud Storage, through
google-cloud-storage). Each function hands it to its store, which implements the same
functions: ``pipeline.io.local`` (this machine's disk), or an object store
(``pipeline.io.objects.ObjectStore``, filled in with its client's primitives by
``pipeline.io.s3`` and ``pipeline.io.gcs``); ``STORES`` maps a URL scheme to its store.
What a store provides, function by function:

* ``open_read`` / ``local_output``: whole objects. A write appears complete or not at all:
  locally a temporary name and a rename, in an object store one upload after the local
  write succeeded.
* ``exists`` / ``isdir`` / ``isfile`` / ``getsize`` / ``listdir`` / ``glob`` / ``walk``:
  in an object store by key prefix (a "directory" exists when some key starts with
  ``<path>/``).
* ``file_sizes``: every file under a directory with its size, in one listing.
* ``os_error``: the store's client errors as the ``OSError`` naming the path that
  ``pipeline.io`` raises for them (``pipeline.io.translated``; a local path's errors are
  ``OSError`` already).
* ``remove`` / ``remove_tree`` / ``replace`` / ``copy`` / ``copy_tree``: in an object
  store a rename is a copy then a delete; a tree is every key under its prefix. Between two
  stores (a local source, a bucket target) ``copy`` and ``copy_tree`` download or upload.
* ``atomic_directory``: a stage's commit. Locally a temporary directory renamed into
  place; in an object store a local directory uploaded in place of the old tree, which is
  not atomic and need not be: the orchestrator removes ``_DONE.json`` before a stage runs
  and writes it after the commit, and readers trust an output only with its record.
* ``remove_leftovers``: the hidden directories a killed local commit left.
* ``exclusive_lock``: locally ``fcntl.flock``, which the operating system releases when the
  holder dies; in an object store a lease taken with conditional writes and renewed by a
  heartbeat (``pipeline.io.locks``).
* ``local_copy`` / ``local_output``: a local path to read or write with a library that
  only knows local files (TensorFlow, Keras, PIL, NumPy by name): the path itself (or a
  temporary name beside it) locally, a download or an upload through a temporary folder
  in an object store.
* ``join`` / ``abspath``: a URL is joined with ``/`` and never made absolute.

Libraries that read or write by name (Keras' ``save``, SavedModel ``export``, ``tf.data``,
TensorFlow's TFRecord writer, TensorBoard, PIL) only ever see local paths: inside an
``atomic_directory``, a ``local_copy`` or a ``local_output``, or the local stage folders
the orchestrator stages a remote run through (``pipeline.orchestrator``).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil

from pipeline.io import gcs, local, s3
from pipeline.io.locks import LockHeld
from pipeline.io.translated import Translated

__all__ = [
    "LockHeld", "abspath", "atomic_directory", "check_writable", "copy", "copy_tree", "exclusive_lock", "exists",
    "file_sizes", "getsize", "glob", "is_remote", "isdir", "isfile", "join", "listdir", "local_copy",
    "local_mirror", "local_output", "makedirs", "open_read", "open_write", "read_bytes", "read_json", "read_npz",
    "read_text", "remove", "remove_leftovers", "remove_tree", "replace", "save_weights", "scratch_directory",
    "shared_directory", "walk",
    "write_bytes", "write_json", "write_npz", "write_text",
]

# URL scheme → the store that reads and writes its URLs
STORES = {"gs": gcs.STORE, "s3": s3.STORE}


def _store(path):
    """The store that holds ``path``: the ``local`` module for a path, a store for a URL.

    Raises:
        ValueError: a URL of a store kdiff does not support.
    """
    scheme, separator, _ = os.fspath(path).partition("://")
    if not separator:
        return local
    if scheme not in STORES:
        examples = ", ".join(f"{name}://bucket/key" for name in sorted(STORES))
        raise ValueError(
            f"Expected a local path or a URL of {sorted(STORES)} ({examples}). Received: {os.fspath(path)!r}"
        )
    return STORES[scheme]


def _backend(path):
    """The functions that read and write ``path``: ``local``'s, or a store's raising its
    client's errors as ``OSError`` naming ``path`` (``pipeline.io.translated``)."""
    store = _store(path)
    return store if store is local else Translated(store, path)


def is_remote(path):
    """Whether ``path`` is a URL of an object store (not this machine's disk)."""
    return _store(path) is not local


# --------------------------------------------------------------------------- paths


def join(*parts):
    """Joins path parts (``/``-separated for URLs, the OS's separator for local paths).

    Args:
        *parts: the path's parts.

    Returns:
        The joined path.
    """
    parts = [os.fspath(part) for part in parts]
    return posixpath.join(*parts) if is_remote(parts[0]) else os.path.join(*parts)


def abspath(path):
    """The absolute form of a local path; a URL is returned as it is.

    Args:
        path: a path or a URL.

    Returns:
        The absolute path, or the URL.
    """
    path = os.fspath(path)
    return path.rstrip("/") if is_remote(path) else os.path.abspath(path)


# --------------------------------------------------------------------------- queries


def exists(path):
    """Whether ``path`` is a file or a directory."""
    return _backend(path).exists(path)


def isdir(path):
    """Whether ``path`` is a directory."""
    return _backend(path).isdir(path)


def isfile(path):
    """Whether ``path`` is a file."""
    return _backend(path).isfile(path)


def getsize(path):
    """The size of the file ``path``, in bytes."""
    return _backend(path).getsize(path)


def file_sizes(top):
    """Every file under the directory ``top`` with its size, in one listing (on an object
    store, one request per 1,000 keys instead of one per file).

    Args:
        top: the directory.

    Returns:
        A dict path relative to ``top`` (``/``-separated) → bytes; empty when there is none.
    """
    return _backend(top).file_sizes(top)


def listdir(path):
    """The names in the directory ``path``, sorted.

    Raises:
        OSError: ``path`` is not a directory that can be listed.
    """
    return _backend(path).listdir(path)


def glob(directory, pattern):
    """The entries of ``directory`` whose names match ``pattern`` (``*``, ``?``, ``[…]``).

    Args:
        directory: where to look (taken literally: its own ``*`` or ``[`` match nothing else).
        pattern: a file-name pattern, e.g. ``"train-*.tfrecord"``.

    Returns:
        The matching paths, sorted.
    """
    return _backend(directory).glob(directory, pattern)


def walk(top, follow_links=False):
    """The tree under ``top``, as ``os.walk`` yields it: ``(directory, subdirectories, files)``,
    top-down; the caller may prune ``subdirectories`` in place.

    Args:
        top: the directory.
        follow_links: descend into symbolic links to directories (local paths).

    Yields:
        ``(directory, subdirectory names, file names)``.
    """
    yield from _backend(top).walk(top, follow_links)


def check_writable(directory):
    """Fails when ``directory`` cannot be listed, written and deleted from: a run checks its
    output folder with it before anything else, so that an unreachable store, refused
    credentials or a missing bucket fail in seconds, not in a stage.

    Writes and removes an empty ``.write-check-<random>`` file in it (the directory is
    created when missing).

    Args:
        directory: the directory (a run's ``--output_dir``).

    Raises:
        OSError: naming the path (on an object store: the endpoint, or the bucket, or the
            credentials, and what failed).
    """
    import uuid

    makedirs(directory)
    isdir(directory)  # a listing: read access (and, on S3, an error that names its code)
    probe = join(directory, f".write-check-{uuid.uuid4().hex[:12]}")
    write_bytes(probe, b"")
    remove(probe)


# --------------------------------------------------------------------------- changes


def makedirs(path, exist_ok=True):
    """Creates the directory ``path`` and its parents (nothing to do on an object store).

    Args:
        path: the directory.
        exist_ok: False to fail (``FileExistsError``) when it exists already.
    """
    _backend(path).makedirs(path, exist_ok)


def remove(path, missing_ok=False):
    """Removes the file ``path``.

    Args:
        path: the file.
        missing_ok: no error when it does not exist.
    """
    _backend(path).remove(path, missing_ok)


def remove_tree(path, ignore_errors=False):
    """Removes the directory ``path`` and everything under it.

    Args:
        path: the directory.
        ignore_errors: leave what cannot be removed (a missing tree included) without an error.
    """
    _backend(path).remove_tree(path, ignore_errors)


def replace(source, target):
    """Moves the file ``source`` to ``target``, replacing it (atomic on one local file system)."""
    if _store(source) is _store(target):
        _backend(source).replace(source, target)
    else:
        copy(source, target)
        remove(source)


def copy(source, target):
    """Copies the file ``source`` to ``target`` (a file path), across stores too."""
    if _store(source) is _store(target):
        _backend(source).copy(source, target)
        return
    with local_copy(source) as readable, local_output(target) as writable:
        shutil.copyfile(readable, writable)


def copy_tree(source, target):
    """Copies the directory tree ``source`` to ``target``, which must not exist, across
    stores too."""
    if _store(source) is _store(target):
        _backend(source).copy_tree(source, target)
        return
    with local_copy(source) as readable, local_output(target) as writable:
        shutil.copytree(readable, writable)


# --------------------------------------------------------------------------- whole files


@contextlib.contextmanager
def open_write(path, mode="wb"):
    """A file to write ``path`` through: it appears at ``path`` complete when the block ends,
    and nothing appears when the block raises.

    Args:
        path: the file to write (an existing one is replaced).
        mode: ``"wb"``, or ``"w"`` for UTF-8 text.

    Yields:
        The open file.
    """
    with local_output(path) as temporary:
        with open(temporary, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f


def open_read(path, mode="rb"):
    """The file ``path`` opened for reading.

    Args:
        path: the file.
        mode: ``"rb"``, or ``"r"`` for UTF-8 text.

    Returns:
        An open file (a context manager).
    """
    return _backend(path).open_read(path, mode)


def read_bytes(path):
    """The bytes of the file ``path``."""
    with open_read(path) as f:
        return f.read()


def write_bytes(path, data):
    """Writes ``data`` to ``path`` (complete or not at all)."""
    with open_write(path) as f:
        f.write(data)


def read_text(path):
    """The UTF-8 text of the file ``path``."""
    with open_read(path, "r") as f:
        return f.read()


def write_text(path, text):
    """Writes ``text`` as UTF-8 to ``path`` (complete or not at all)."""
    with open_write(path, "w") as f:
        f.write(text)


def read_json(path):
    """The JSON value in the file ``path``.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not JSON (``json.JSONDecodeError``).
    """
    return json.loads(read_text(path))


def write_json(path, value):
    """Writes ``value`` as JSON (indented, keys sorted, other types as ``str``) with a
    trailing newline, complete or not at all."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_npz(path, names=None):
    """Arrays of an ``.npz`` file.

    Args:
        path: the file.
        names: the arrays to read (None: all of them); a missing one raises ``KeyError``.

    Returns:
        A dict name → ``np.ndarray``, in the file's order (or ``names``').
    """
    import numpy as np

    with open_read(path) as f, np.load(f) as data:
        return {name: data[name] for name in (data.files if names is None else names)}


def write_npz(path, compressed=False, **arrays):
    """Writes ``arrays`` (name → array) to an ``.npz`` file, complete or not at all.

    Args:
        path: the file.
        compressed: deflate the arrays (``np.savez_compressed``).
        **arrays: the arrays.
    """
    import numpy as np

    with open_write(path) as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


# --------------------------------------------------------------------------- local paths


def local_copy(path):
    """A local path holding what ``path`` holds (a file or a directory tree), for the
    libraries that only read local paths (TensorFlow, Keras, PIL by name).

    Args:
        path: the file or directory.

    Returns:
        A context manager yielding a local path, valid inside the block (a local path
        itself; a download of a URL, removed after the block).
    """
    return _backend(path).local_copy(path)


def local_output(path):
    """A local path to write ``path`` through with a library that writes by name (Keras'
    ``save_weights``, NumPy, PIL): what the block writes there lands at ``path`` when the
    block ends, and nothing lands when it raises.

    Args:
        path: the file (or directory) to produce; an existing file is replaced, an existing
            directory must be empty (use ``atomic_directory`` to replace a tree).

    Returns:
        A context manager yielding the local path (a hidden temporary name beside a local
        ``path``; a temporary folder's file, uploaded at the end, for a URL).
    """
    return _backend(path).local_output(path)


def save_weights(model, path):
    """Keras' ``model.save_weights(path)`` to a local path, failing cleanly (an ``OSError``
    naming the file, nothing half-written) when the disk cannot hold it.

    Args:
        model: a built Keras model.
        path: a local ``.weights.h5`` path (from ``local_output``).
    """
    from kdiff.atomic_io import save_weights as save  # lazily: kdiff loads TensorFlow

    save(model, path)


def scratch_directory(prefix="kdiff-"):
    """A local temporary directory for the block, removed with its contents afterwards: for
    files a process needs by name but the run keeps nowhere (a follower's unused model).

    Args:
        prefix: the directory name's start.

    Returns:
        A context manager yielding the directory's path.
    """
    import tempfile

    return tempfile.TemporaryDirectory(prefix=prefix)


def local_mirror(path):
    """A local directory standing for the directory ``path`` during the block, for work that
    reads and writes a whole folder by name (a stage of a run on an object store): a local
    ``path`` itself; for a URL, a download of its tree, written back when the block ends
    (every file uploaded, every object no longer there deleted), and not when it raises.

    Args:
        path: the directory.

    Returns:
        A context manager yielding the local directory.
    """
    return _backend(path).local_mirror(path)


# --------------------------------------------------------------------------- commits


def atomic_directory(final_path):
    """A stage's commit: a temporary local directory whose tree replaces ``final_path``'s
    when the block ends, and that leaves nothing behind when the block raises.

    Whatever is written under the yielded directory — by this module, Beam, TensorFlow,
    Keras, PIL or Matplotlib — lands at ``final_path``: inside it, libraries may write by
    name. A killed local writer leaves only a ``.<name>.tmp-*`` directory
    (``remove_leftovers``).

    Args:
        final_path: the directory to produce (an existing one is replaced).

    Returns:
        A context manager yielding the temporary directory's path.
    """
    return _backend(final_path).atomic_directory(final_path)


def shared_directory(final_path):
    """A stage's output that its Beam workers write through this module (never by name):
    locally ``atomic_directory``'s temporary directory (renamed into place at the end); in a
    store ``final_path`` itself, emptied first, so that workers on other machines write where
    the run's files are. The orchestrator trusts the output only once its ``_DONE.json``
    is written, after the block.

    Args:
        final_path: the directory to produce (an existing one is replaced).

    Returns:
        A context manager yielding the directory (a local path or a URL).
    """
    return _backend(final_path).shared_directory(final_path)


def remove_leftovers(final_path):
    """Removes what killed ``atomic_directory`` commits of ``final_path`` left beside it.

    Args:
        final_path: the directory the commits were writing.
    """
    _backend(final_path).remove_leftovers(final_path)


# --------------------------------------------------------------------------- locks


def exclusive_lock(path, record, **options):
    """Holds an exclusive lock on ``path`` for the block, with ``record`` in it.

    Locally the operating system releases the lock when the holder ends, however it ends
    (``kill -9`` included); on an object store the lock is a lease that expires unless
    renewed, and an expired lease is taken over (``pipeline.io.locks``).

    Args:
        path: the lock file or object.
        record: a JSON-able dict identifying the holder.
        **options: the store's lock options (an object store's: ``seconds``, the lease's length).

    Returns:
        A context manager (yielding None locally, the ``Lease`` on an object store).

    Raises:
        LockHeld: another process holds the lock (with that holder's record).
    """
    return _backend(path).exclusive_lock(path, record, **options)
