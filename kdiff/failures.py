"""The failure inside a wrapped exception: an exception's cause chain, and the I/O failure in
it (the file, the operating system's reason, the errno), so that a message can name the file
that could not be written instead of the wrapper's traceback. Beam, Keras and TensorFlow wrap
the ``OSError`` they meet; kdiff's CLI and the pipeline unwrap it with these."""

from __future__ import annotations

import collections
import errno
import os
import re

__all__ = ["IOFailure", "cause_chain", "find_io_error"]

IOFailure = collections.namedtuple("IOFailure", ["path", "cause", "errno"])
IOFailure.__doc__ = """An I/O failure as a user reads it: the path, the cause (one line), the errno (or None)."""

# TensorFlow's errors that are I/O failures, and the OS error each message reports.
_TF_IO_ERRORS = ("DataLossError", "PermissionDeniedError", "ResourceExhaustedError", "NotFoundError")
_TF_CAUSES = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
    "No such file or directory": errno.ENOENT,
}
# HDF5's messages (h5py's OSErrors carry no filename) name the file as ``filename = '…'``.
_HDF5_FILENAME = re.compile(r"filename = '([^']+)'")
_TF_NODE = re.compile(r"\{\{[^}]*\}\}\s*")
_TF_OP = re.compile(r"\s*\[Op:[^\]]*\]")


def cause_chain(error):
    """``error`` and its causes, outermost first (``__cause__``, else ``__context__``; no cycles)."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def find_io_error(error):
    """The innermost I/O failure in ``error``'s cause chain, or None.

    An I/O failure is an ``OSError``, or one of TensorFlow's data-loss, permission,
    not-found or resource-exhausted errors whose message reports a file system's error
    ("No space left on device", …); a resource-exhausted error that is out of memory is
    not one.

    Args:
        error: an exception (possibly wrapping the failure, as Beam and Keras do).

    Returns:
        An ``IOFailure``, or None.
    """
    for candidate in reversed(cause_chain(error)):
        if isinstance(candidate, OSError):
            return _os_failure(candidate)
        if type(candidate).__name__ in _TF_IO_ERRORS:
            failure = _tf_failure(candidate)
            if failure is not None:
                return failure
    return None


def _os_failure(error):
    hdf5_path = _HDF5_FILENAME.search(str(error))
    path = error.filename or (hdf5_path and hdf5_path.group(1))
    if hdf5_path and error.errno:
        cause = os.strerror(error.errno)  # HDF5's own text is a page of internals
    else:
        cause = error.strerror or _first_line(error)
    return IOFailure(path and os.fspath(path), cause, error.errno)


def _tf_failure(error):
    """TensorFlow's message reads ``[{{node …}}] <path>; <cause> [Op:…]`` for file errors."""
    text = _TF_OP.sub("", _TF_NODE.sub("", _first_line(getattr(error, "message", error))))
    for cause, code in _TF_CAUSES.items():
        if cause in text:
            path = text.split(";", 1)[0].strip() if ";" in text else None
            return IOFailure(path, cause, code)
    if type(error).__name__ == "DataLossError":
        return IOFailure(None, text, None)
    return None


def _first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
