"""Files that appear complete or not at all, and clean failures of the writes that make them
(a SavedModel directory, a weights file on a full disk): for kdiff's export and the pipeline."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile


def _directory_mode():
    """The mode ``os.mkdir`` would give a directory (0o777 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


@contextlib.contextmanager
def atomic_directory(final_path, before_replace=None):
    """Yields a temporary directory next to ``final_path``, renamed into place on success.

    A killed or failed writer leaves only the temporary directory (``.<name>.tmp-*``),
    never a half-written directory at ``final_path`` that a reader would trust. An existing
    ``final_path`` is replaced: it is moved aside, the new directory renamed in, and the
    old one removed (restored if the rename fails).

    Args:
        final_path: where the finished directory goes.
        before_replace: optional ``fn(final_path)`` called just before the rename (to
            raise if someone wrote there meanwhile).

    Yields:
        The temporary directory path.
    """
    final_path = os.path.abspath(os.fspath(final_path))
    parent, name = os.path.split(final_path)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        yield temporary
        os.chmod(temporary, _directory_mode())  # mkdtemp's 0700 would hide it from other users
        if before_replace is not None:
            before_replace(final_path)
        if os.path.lexists(final_path):
            old = temporary + ".old"
            os.rename(final_path, old)
            try:
                os.rename(temporary, final_path)
            except BaseException:
                os.rename(old, final_path)
                raise
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)
        else:
            os.rename(temporary, final_path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _bytes_of(variables):
    """The bytes ``variables`` (Keras variables) hold."""
    import math

    sizes = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}
    return sum(math.prod(int(d) for d in v.shape) * sizes.get(str(getattr(v.dtype, "name", v.dtype)), 8) for v in variables)


def save_weights(model, path):
    """``model.save_weights(path)`` that fails cleanly when the disk cannot hold the file.

    Before writing, the free space at ``path`` is checked against the weights' size (the
    model's and its optimizer's variables) and, when short, ``OSError(ENOSPC)`` is raised
    naming the file, before anything is written. Should the write fail anyway (another
    writer filled the disk), the half-written HDF5 file is closed and removed before the
    error propagates: h5py otherwise keeps it open, and its finalizer — flushing to a full
    disk at interpreter exit — crashes the process.

    Args:
        model: a built Keras model.
        path: the ``.weights.h5`` file to write.

    Raises:
        OSError: no space, or another write failure; ``filename`` is ``path``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        variables += list(optimizer.variables)
    needed = int(_bytes_of(variables) * 1.05) + (1 << 20)  # HDF5's headers: a margin
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device (the weights need about {needed / 2**20:.1f} MiB; "
            f"{free / 2**20:.1f} MiB are free)",
            path,
        )
    try:
        model.save_weights(path, overwrite=True)
    except BaseException:
        discard_failed_h5(path)
        raise


def discard_failed_h5(path):
    """Closes and removes an HDF5 file at ``path`` whose write failed (no-op if not open).

    The file is truncated first, which frees its space, so that HDF5's final flush on
    closing succeeds even on a full disk.

    Args:
        path: the file's path.
    """
    try:
        import h5py
    except ImportError:  # pragma: no cover - Keras depends on h5py
        return
    target = os.path.abspath(path)
    for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        try:
            name = os.path.abspath(os.fsdecode(file_id.name))
            if name != target:
                continue
            os.ftruncate(file_id.get_vfd_handle(), 0)
            file_id.close()
        except Exception:  # noqa: BLE001 - best effort: the original error is what matters
            continue
    with contextlib.suppress(OSError):
        os.remove(target)
