"""Progress output that suits where it goes: a live bar on a terminal, whole lines in a log.

Keras' progress bar redraws itself with backspaces, carriage returns and ANSI colours on
every POSIX system, terminal or not (``keras.utils.Progbar`` counts ``"posix" in
sys.modules`` as an interactive display), so a log file of a run gets those bytes. Its
``verbose=2`` mode writes one plain line per epoch (``fit``) or per finished bar instead.
"""

from __future__ import annotations

import sys


def is_interactive(stream=None):
    """Whether ``stream`` shows a live progress bar: a terminal, or a Jupyter kernel's output.

    Args:
        stream: the stream the progress goes to (default: ``sys.stdout``, where Keras
            prints it).

    Returns:
        True for a TTY or an IPython kernel; False for a file, a pipe or a closed stream.
    """
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty (a custom writer), or closed
        return False
    return "ipykernel" in sys.modules


def keras_verbosity(verbose="auto", stream=None):
    """Keras' ``verbose`` for ``fit`` / ``Progbar`` with "auto" resolved by where output goes.

    Args:
        verbose: "auto", or Keras' 0 (silent), 1 (progress bar) or 2 (one line per epoch),
            returned as given.
        stream: the stream the progress goes to (default: ``sys.stdout``).

    Returns:
        ``verbose`` itself unless "auto"; then 1 on a terminal (or Jupyter), 2 otherwise.
    """
    if not isinstance(verbose, str) or verbose != "auto":
        return verbose
    return 1 if is_interactive(stream) else 2
