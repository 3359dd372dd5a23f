"""The pipeline's one file-system seam: every read and write of a run goes through here.

Artifacts, ``_DONE.json`` records and their manifests, ``config.json``, the run lock,
reports and their pictures, the experiments' reports, the checkpoints, and the sources a
run reads (image folders, IDX files, ``--config``) are all read and written with the
functions below; no other module of ``pipeline/`` opens, lists, renames or removes a file
itself (``tests/pipeline/test_io.py`` greps for it). Making ``--output_dir`` a URL of
another store (``s3://``, ``gs://``, Beam's ``FileSystems``) is then a change of this
module, and of the library calls listed at the end.

This implementation is the local file system's. What a remote one must provide, function
by function:

* ``read_*`` / ``write_*`` / ``open_read`` / ``open_write``: whole objects. A write must
  appear complete or not at all; here that is a temporary name and a rename, on an object
  store a single upload already is.
* ``exists`` / ``isdir`` / ``isfile`` / ``getsize`` / ``listdir`` / ``glob`` / ``walk``:
  by key prefix (a "directory" exists when some key starts with ``<path>/``).
* ``replace`` / ``remove`` / ``remove_tree`` / ``copy`` / ``copy_tree``: a rename is a
  copy then a delete; a tree is every key under its prefix.
* ``atomic_directory``: a stage's commit. Here the temporary directory is renamed into
  place. An object store has no rename of a directory: the remote version writes the
  temporary directory locally, uploads it to a hidden prefix beside ``final_path``, then
  copies it into place and deletes the hidden prefix (copy + delete). That copy is not
  atomic, which is safe because the orchestrator removes ``_DONE.json`` before a stage
  runs and writes it after the commit: readers trust an output only with its record.
* ``remove_leftovers``: the hidden prefixes a killed commit left.
* ``exclusive_lock``: here ``fcntl.flock``, which the operating system releases when the
  holder dies. An object store needs a conditional write (S3 ``If-None-Match: *``, GCS
  ``ifGenerationMatch=0``) of the lock object, and a lease the holder renews, since
  nothing releases the lock of a crashed holder.
* ``local_copy``: a local path to read with TensorFlow, Keras, PIL or NumPy; here the
  path itself, remotely a download (a file, or a tree) to a temporary folder.
* ``local_output``: a local path to write with them; here a temporary name beside the
  target renamed into place, remotely a temporary local file or folder uploaded on success.
* ``join`` / ``abspath``: a URL is joined with ``/`` and never made absolute.

Libraries still read or write by name, outside this module: inside an
``atomic_directory`` that is local by its contract (Beam's ``WriteToTFRecord``, Keras'
``save`` and SavedModel ``export``, PIL, ``kdiff.images``), but also, on run paths, the
train stage's TensorBoard writer (``<output_dir>/train/checkpoints/logs``) and
``tf.data.TFRecordDataset`` over the Examples (TensorFlow's own file systems: ``gs://``
yes, ``s3://`` only with tensorflow-io), and the extractors' weight files, which kdiff
opens itself. A remote store needs those on ``local_copy`` / ``local_output`` paths too.
"""

from __future__ import annotations

import contextlib
import glob as glob_lib
import json
import os
import shutil

# --------------------------------------------------------------------------- paths


def join(*parts):
    """Joins path parts (``/``-separated for URLs as for local paths).

    Args:
        *parts: the path's parts.

    Returns:
        The joined path.
    """
    return os.path.join(*parts)


def abspath(path):
    """The absolute form of a local path (a URL, once supported, is returned as it is).

    Args:
        path: a path.

    Returns:
        The absolute path.
    """
    return os.path.abspath(os.fspath(path))


# --------------------------------------------------------------------------- queries


def exists(path):
    """Whether ``path`` is a file or a directory."""
    return os.path.exists(path)


def isdir(path):
    """Whether ``path`` is a directory."""
    return os.path.isdir(path)


def isfile(path):
    """Whether ``path`` is a file."""
    return os.path.isfile(path)


def getsize(path):
    """The size of the file ``path``, in bytes."""
    return os.path.getsize(path)


def listdir(path):
    """The names in the directory ``path``, sorted.

    Raises:
        OSError: ``path`` is not a directory that can be listed.
    """
    return sorted(os.listdir(path))


def glob(directory, pattern):
    """The entries of ``directory`` whose names match ``pattern`` (``*``, ``?``, ``[…]``).

    Args:
        directory: where to look (taken literally: its own ``*`` or ``[`` match nothing else).
        pattern: a file-name pattern, e.g. ``"train-*.tfrecord"``.

    Returns:
        The matching paths, sorted.
    """
    return sorted(glob_lib.glob(os.path.join(glob_lib.escape(directory), pattern)))


def walk(top, follow_links=False):
    """The tree under ``top``, as ``os.walk`` yields it: ``(directory, subdirectories, files)``,
    top-down; the caller may prune ``subdirectories`` in place.

    Args:
        top: the directory.
        follow_links: descend into symbolic links to directories.

    Yields:
        ``(directory, subdirectory names, file names)``.
    """
    yield from os.walk(top, followlinks=follow_links)


# --------------------------------------------------------------------------- changes


def makedirs(path, exist_ok=True):
    """Creates the directory ``path`` and its parents.

    Args:
        path: the directory.
        exist_ok: False to fail (``FileExistsError``) when it exists already.
    """
    os.makedirs(path, exist_ok=exist_ok)


def remove(path, missing_ok=False):
    """Removes the file ``path``.

    Args:
        path: the file.
        missing_ok: no error when it does not exist.
    """
    try:
        os.remove(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def remove_tree(path, ignore_errors=False):
    """Removes the directory ``path`` and everything under it.

    Args:
        path: the directory.
        ignore_errors: leave what cannot be removed (a missing tree included) without an error.
    """
    shutil.rmtree(path, ignore_errors=ignore_errors)


def replace(source, target):
    """Moves the file ``source`` to ``target``, replacing it (atomic on one local file system)."""
    os.replace(source, target)


def copy(source, target):
    """Copies the file ``source`` to ``target`` (a file path)."""
    shutil.copy(source, target)


def copy_tree(source, target):
    """Copies the directory tree ``source`` to ``target``, which must not exist."""
    shutil.copytree(source, target)


# --------------------------------------------------------------------------- whole files


def _temporary_name(path):
    """The temporary name a write of ``path`` goes to before its rename: beside it, hidden,
    this process's (``.tmp-<pid>-<name>``)."""
    directory, name = os.path.split(os.fspath(path))
    return os.path.join(directory, f".tmp-{os.getpid()}-{name}")


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
    return open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


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


@contextlib.contextmanager
def local_copy(path):
    """A local path holding what ``path`` holds (a file or a directory tree), for the
    libraries that only read local paths (TensorFlow, Keras, PIL by name).

    Args:
        path: the file or directory.

    Yields:
        A local path, valid inside the block (here: ``path`` itself).
    """
    yield os.fspath(path)


@contextlib.contextmanager
def local_output(path):
    """A local path to write ``path`` through with a library that writes by name (Keras'
    ``save_weights``, NumPy, PIL): what the block writes there lands at ``path`` when the
    block ends, and nothing lands when it raises.

    Args:
        path: the file (or directory) to produce; an existing file is replaced, an existing
            directory must be empty (use ``atomic_directory`` to replace a tree).

    Yields:
        A local path (here: a hidden temporary name beside ``path``, ``.tmp-<pid>-<name>``).
    """
    temporary = _temporary_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        if os.path.isdir(temporary) and not os.path.islink(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        elif os.path.lexists(temporary):
            os.remove(temporary)
        raise


def save_weights(model, path):
    """Keras' ``model.save_weights(path)`` to a local path, failing cleanly (an ``OSError``
    naming the file, nothing half-written) when the disk cannot hold it.

    Args:
        model: a built Keras model.
        path: a local ``.weights.h5`` path (from ``local_output``).
    """
    from kdiff.atomic_io import save_weights as save  # lazily: kdiff loads TensorFlow

    save(model, path)


# --------------------------------------------------------------------------- commits


def atomic_directory(final_path):
    """A stage's commit: a temporary local directory beside ``final_path`` that replaces it
    when the block ends, and leaves nothing behind when the block raises.

    Whatever is written under the yielded directory — by this module, Beam, TensorFlow,
    Keras, PIL or Matplotlib — lands at ``final_path``: inside it, libraries may write by
    name. A killed writer leaves only a ``.<name>.tmp-*`` directory (``remove_leftovers``).

    Args:
        final_path: the directory to produce (an existing one is replaced).

    Returns:
        A context manager yielding the temporary directory's path.
    """
    from kdiff.atomic_io import atomic_directory as commit  # lazily: kdiff loads TensorFlow

    return commit(final_path)


def remove_leftovers(final_path):
    """Removes the temporary directories that killed ``atomic_directory`` commits of
    ``final_path`` left beside it (``.<name>.tmp-*``).

    Args:
        final_path: the directory the commits were writing.
    """
    parent, name = os.path.split(os.path.abspath(os.fspath(final_path)))
    for leftover in glob(parent, f".{name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


# --------------------------------------------------------------------------- locks


class LockHeld(RuntimeError):
    """Another process holds the lock.

    Attributes:
        record: what the holder wrote in the lock file (a dict; empty when unreadable).
    """

    def __init__(self, record):
        super().__init__(f"the lock is held by {record or 'another process'}")
        self.record = record


@contextlib.contextmanager
def exclusive_lock(path, record):
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

