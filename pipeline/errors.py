"""Errors raised inside a Beam pipeline, as a user should read them.

A DoFn's exception reaches the driver wrapped: the in-process runners re-raise it (or a
wrapper whose ``__cause__`` chain leads to it) with `` [while running 'Label']`` appended
once per enclosing transform; a runner with worker processes re-raises a new exception
whose text holds the worker's traceback. ``beam_error_message`` and ``find_error`` undo
both, for every stage that runs a pipeline.
"""

from __future__ import annotations

import errno
import re

__all__ = [
    "strip_beam_suffixes", "root_cause", "beam_error_message", "find_error", "io_error", "io_error_message",
    "os_error_text",
]

# What to do about the usual I/O failures, by errno.
_IO_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space (or pass another --output_dir) and rerun",
    errno.EDQUOT: "the disk quota is exceeded; free some space and rerun",
    errno.EROFS: "the file system is read-only; pass a writable --output_dir",
    errno.EACCES: "no permission; pass an --output_dir you may write, or fix the permissions",
    errno.EPERM: "no permission; pass an --output_dir you may write, or fix the permissions",
    errno.ENOENT: "a file, folder or bucket the run needs is missing",
    # an object store's (pipeline.io raises its client's errors as these)
    errno.ECONNREFUSED: "the store cannot be reached; check that it is up and the endpoint, then rerun",
    errno.EHOSTUNREACH: "the store cannot be reached; check that it is up and the endpoint, then rerun",
    errno.ETIMEDOUT: "the store did not answer in time; check the network and the endpoint, then rerun",
    errno.ECONNRESET: "the connection to the store was lost; rerun once it is back",
}

_WHILE_RUNNING = re.compile(r"\s*\[while running '.*?'\]")


def strip_beam_suffixes(text):
    """``text`` without Beam's `` [while running '…']`` suffixes.

    Args:
        text: an exception's message.

    Returns:
        The stripped text.
    """
    return _WHILE_RUNNING.sub("", str(text)).strip()


def root_cause(error):
    """The innermost exception of ``error``'s chain (``__cause__``, else ``__context__``).

    Args:
        error: an exception.

    Returns:
        The innermost exception (``error`` itself when it has no cause).
    """
    from kdiff.failures import cause_chain  # lazily: kdiff loads TensorFlow, `--help` must not

    return cause_chain(error)[-1]


def beam_error_message(error):
    """What a Beam pipeline's failure says: its innermost cause's message, unwrapped.

    Args:
        error: the exception ``Pipeline.run`` (or leaving ``with beam.Pipeline()``) raised.

    Returns:
        The innermost cause's message without Beam's `` [while running '…']`` suffixes;
        of a multi-line message (a worker's traceback), its last line; the exception's
        type name when it has no message.
    """
    cause = root_cause(error)
    lines = [line.strip() for line in strip_beam_suffixes(cause).splitlines() if line.strip()]
    return lines[-1] if lines else type(cause).__name__


def find_error(error, error_type):
    """The ``error_type`` exception a Beam pipeline's failure carries, or None.

    Looks through ``error``'s chain for an instance of ``error_type``; failing that (a
    worker process's error reaches the driver only as text), for the last line of the
    chain's text that reads ``…error_type.__name__: message`` and rebuilds the exception
    from that message.

    Args:
        error: the exception the pipeline raised.
        error_type: the exception class to look for (constructed from a message).

    Returns:
        An ``error_type`` instance whose message has Beam's suffixes stripped, or None.
    """
    from kdiff.failures import cause_chain

    chain = cause_chain(error)
    for candidate in chain:
        if isinstance(candidate, error_type):
            return error_type(strip_beam_suffixes(candidate))
    pattern = re.compile(rf"(?:^|[\s.:]){re.escape(error_type.__name__)}: (.+)$", re.MULTILINE)
    for candidate in reversed(chain):  # innermost first
        matches = pattern.findall(str(candidate))
        if matches:
            return error_type(strip_beam_suffixes(matches[-1]))
    return None


def io_error(error):
    """The I/O failure in ``error``'s chain (``kdiff.failures.find_io_error``), or one a
    worker process raised, read back from the text the runner re-raised, or None.

    Args:
        error: an exception (a stage's, possibly wrapped by Beam).

    Returns:
        A ``kdiff.failures.IOFailure`` (path, cause, errno), or None.
    """
    from kdiff.failures import find_io_error

    return find_io_error(error) or _worker_os_error(error)


# the last line of a worker's traceback for an OSError: "PermissionError: [Errno 13] cause: 'path'"
_WORKER_OS_ERROR = re.compile(r"(?:^|[\s.:])(\w+): \[Errno (\d+)\] (.+?)(?:: '([^'\n]+)')?$", re.MULTILINE)


def _worker_os_error(error):
    """An ``OSError`` (or subclass) a worker process raised: a runner with worker processes
    (the DirectRunner's, a portable runner's pool) re-raises only its traceback's text.

    Args:
        error: the exception the pipeline raised.

    Returns:
        A ``kdiff.failures.IOFailure`` of the innermost such error, or None.
    """
    import builtins

    from kdiff.failures import IOFailure, cause_chain

    for candidate in reversed(cause_chain(error)):  # innermost first
        for name, code, cause, path in reversed(_WORKER_OS_ERROR.findall(strip_beam_suffixes(candidate))):
            kind = getattr(builtins, name, None)
            if isinstance(kind, type) and issubclass(kind, OSError):
                return IOFailure(path or None, cause, int(code))
    return None


def io_error_message(stage, failure, where=None):
    """A one-line message for an I/O failure in ``stage``: the path, the cause, what to do.

    Args:
        stage: the stage's name.
        failure: what ``io_error`` returned.
        where: what to name when the failure does not say which file (the stage's folder).

    Returns:
        "<stage>: cannot read or write <path>: <cause>; <advice>. Completed stages are kept."
    """
    text = _describe(failure.path, strip_beam_suffixes(failure.cause), failure.errno, where)
    return f"{stage}: {text}. Completed stages are kept."


def os_error_text(error):
    """What an ``OSError`` of ``pipeline.io`` (a disk's, or a store's client error it
    translated) says, with what to do, for a check made before any stage runs.

    Args:
        error: the ``OSError``.

    Returns:
        "cannot read or write <path>: <cause>; <advice>".
    """
    return _describe(error.filename, error.strerror or str(error), error.errno or errno.EIO)


def _describe(path, cause, code, where=None):
    path = path or (f"a file under {where}" if where else "a file")
    if code is not None:
        advice = _IO_ADVICE.get(code, "check the path and rerun")
    else:  # TensorFlow's data loss: a corrupt file
        advice = "the file is corrupt or unreadable; rerun the stage that wrote it (--force)"
    return f"cannot read or write {path}: {cause}; {advice}"
