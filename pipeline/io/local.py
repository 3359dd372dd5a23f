"""The local file system's side of ``pipeline.io``: paths on this machine's disk.

A write appears complete or not at all through a hidden temporary name beside its target
and a rename; a stage's commit renames a temporary directory into place; the run lock is
``fcntl.flock`` (``pipeline.io.locks``).
"""

from __future__ import annotations

import contextlib
import glob as glob_lib
import os
import shutil

from pipeline.io.locks import flock

__all__ = [
    "atomic_directory", "copy", "copy_tree", "exclusive_lock", "exists", "file_sizes", "getsize", "glob", "isdir",
    "isfile", "listdir", "local_copy", "local_mirror", "local_output", "makedirs", "open_read", "remove",
    "remove_leftovers", "remove_tree", "replace", "shared_directory", "walk",
]

exclusive_lock = flock


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


def file_sizes(top):
    """Every file under the directory ``top`` with its size: relative path → bytes."""
    sizes = {}
    for root, _, names in os.walk(top):
        for name in names:
            path = os.path.join(root, name)
            sizes[os.path.relpath(path, top).replace(os.sep, "/")] = os.path.getsize(path)
    return sizes


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


def _temporary_name(path):
    """The temporary name a write of ``path`` goes to before its rename: beside it, hidden,
    this process's (``.tmp-<pid>-<name>``)."""
    directory, name = os.path.split(os.fspath(path))
    return os.path.join(directory, f".tmp-{os.getpid()}-{name}")


def open_read(path, mode="rb"):
    """The file ``path`` opened for reading.

    Args:
        path: the file.
        mode: ``"rb"``, or ``"r"`` for UTF-8 text.

    Returns:
        An open file (a context manager).
    """
    return open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


# --------------------------------------------------------------------------- local paths


@contextlib.contextmanager
def local_copy(path):
    """``pipeline.io.local_copy`` of a local path: the path itself."""
    yield os.fspath(path)


@contextlib.contextmanager
def local_output(path):
    """``pipeline.io.local_output`` of a local path: a hidden temporary name beside it
    (``.tmp-<pid>-<name>``), renamed into place when the block ends, removed when it raises."""
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


@contextlib.contextmanager
def local_mirror(path):
    """The local directory ``path`` itself (created when missing): nothing to mirror.

    Yields:
        ``path``.
    """
    os.makedirs(path, exist_ok=True)
    yield os.fspath(path)


# --------------------------------------------------------------------------- commits


def atomic_directory(final_path):
    """``pipeline.io.atomic_directory`` of a local path: a hidden temporary directory beside
    it, renamed into place (``kdiff.atomic_io.atomic_directory``)."""
    from kdiff.atomic_io import atomic_directory as commit  # lazily: kdiff loads TensorFlow

    return commit(final_path)


def shared_directory(final_path):
    """``pipeline.io.shared_directory`` of a local path: ``atomic_directory``'s (every worker
    of a local runner sees this disk)."""
    return atomic_directory(final_path)


def remove_leftovers(final_path):
    """Removes the ``.<name>.tmp-*`` directories that killed commits of ``final_path`` left."""
    parent, name = os.path.split(os.path.abspath(os.fspath(final_path)))
    for leftover in glob(parent, f".{name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
