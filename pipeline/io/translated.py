"""A store's functions with its client library's errors raised as ``OSError`` naming the path.

An object store's module (``pipeline.io.s3``) raises its client's own errors (botocore's
``ClientError``, ``EndpointConnectionError``, …), which name neither the URL being read nor
what to do. ``pipeline.io`` calls a store through ``Translated``: every such error, raised
by a call, by entering or leaving a context manager the call returned (``local_copy``,
``atomic_directory``, …) or by iterating a generator it returned (``walk``), is raised again
as the ``OSError`` that the store's ``os_error(error, path)`` makes of it — the one place
that knows the client's errors — so that callers and ``pipeline.errors`` handle a store's
failures as they handle a disk's. Errors the store does not recognise pass unchanged.

The ``OSError`` is raised without the client's exception chained to it: its message says
what failed, and ``kdiff.failures.find_io_error`` reads the innermost ``OSError`` of a
chain, which would otherwise be the socket's, without the URL.
"""

from __future__ import annotations

import inspect

__all__ = ["Translated"]

# The store functions that return a context manager: errors when it is entered or left are
# translated too (those of the block's own body are not touched).
CONTEXT_FUNCTIONS = frozenset(
    {"atomic_directory", "exclusive_lock", "local_copy", "local_mirror", "local_output", "shared_directory"}
)


class Translated:
    """A store module's functions, called for one path, raising ``OSError`` for its errors.

    Args:
        store: the store's module (with ``os_error(error, path) -> OSError | None``).
        path: the path or URL the call reads or writes (named by the ``OSError``).
    """

    def __init__(self, store, path):
        self._store = store
        self._path = path

    def __getattr__(self, name):
        function = getattr(self._store, name)
        if not callable(function):
            return function

        def call(*args, **kwargs):
            result = self._call(function, *args, **kwargs)
            if name in CONTEXT_FUNCTIONS:
                return _Context(self._call, result)
            if inspect.isgenerator(result):
                return self._iterate(result)
            return result

        return call

    def _call(self, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - the store's os_error decides which are its own
            # (some of botocore's are OSErrors already, through requests', without the URL)
            failure = self._store.os_error(error, self._path)
            if failure is None:
                raise
        raise failure  # outside the handler: not chained to the client's error (module docstring)

    def _iterate(self, generator):
        while True:
            try:
                item = self._call(next, generator)
            except StopIteration:
                return
            yield item


class _Context:
    """A store's context manager whose entering and clean leaving raise translated errors; an
    exception of the block itself is handed to it unchanged."""

    def __init__(self, call, manager):
        self._call = call  # Translated._call
        self._manager = manager

    def __enter__(self):
        return self._call(self._manager.__enter__)

    def __exit__(self, error_type, error, traceback):
        if error_type is None:
            return self._call(self._manager.__exit__, None, None, None)
        return self._manager.__exit__(error_type, error, traceback)
