"""Files that appear complete or not at all."""

from __future__ import annotations

import contextlib
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
