"""The console commands' start: TensorFlow's and Beam's start-up logs kept quiet unless asked for.

A module of its own, outside the ``kdiff`` package, so that the quieting happens before
anything of kdiff imports TensorFlow. ``kdiff`` (the console script) starts in
``kdiff_main``: it parses its arguments first (``--help`` and usage errors answer without
TensorFlow), then quiets the start of the commands that import it. ``python -m
pipeline.run`` uses ``quiet_logs`` too.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile

__all__ = ["quiet_logs", "kdiff_main"]

# Python loggers that --verbose shows and a quiet run raises to ERROR (restored afterwards):
# TensorFlow's, absl's, and Beam's ("no snappy" and the like).
QUIET_LOGGERS = ("tensorflow", "absl", "apache_beam")
# Modules that write to stderr while they are imported: TensorFlow's C++ start-up lines;
# Beam's optional-GCP note, logged with logging.warning on the root logger.
QUIET_IMPORTS = ("tensorflow", "apache_beam", "apache_beam.options.pipeline_options")


def _import_quietly(module):
    """Imports ``module`` with file descriptor 2 sent to a temporary file.

    TensorFlow's C++ start-up lines ("All log messages before absl::InitializeLog() …",
    the oneDNN and CUDA-probe notes) are written by absl before TF_CPP_MIN_LOG_LEVEL is
    read, so the environment variable alone does not hide them. What was written is
    replayed if the import fails.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module(module)
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def quiet_logs(verbose=False):
    """Hides TensorFlow's C++ and Python logs and Beam's warnings unless ``verbose``.

    Unless the environment sets it, sets ``TF_CPP_MIN_LOG_LEVEL=3`` before TensorFlow is
    imported (Beam's worker processes inherit it): TensorFlow's C++ INFO, WARNING and
    ERROR lines are hidden — the CUDA probe's "failed call to cuInit" on a machine
    without a GPU among them; a real failure still raises a Python exception. Then
    imports the ``QUIET_IMPORTS`` with what they write to stderr hidden, and raises the
    ``QUIET_LOGGERS`` to ERROR. Everything is restored on exit; the root logger is never
    touched.

    Args:
        verbose: leave every log as it is.
    """
    if verbose:
        yield
        return
    previous_env = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    loggers = {name: logging.getLogger(name) for name in QUIET_LOGGERS}
    levels = {name: logger.level for name, logger in loggers.items()}
    try:
        for module in QUIET_IMPORTS:
            if module not in sys.modules:
                _import_quietly(module)
        for logger in loggers.values():
            logger.setLevel(logging.ERROR)
        yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
        if previous_env is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


def kdiff_main(argv=None):
    """The ``kdiff`` console script: ``kdiff.cli``, with quiet logs unless ``--verbose``.

    The arguments are parsed before TensorFlow is imported; a command that never imports
    it (``kdiff.cli.TENSORFLOW_FREE_COMMANDS``: ``info``) runs without the quiet start.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    from kdiff import cli

    parser, args = cli.parse(sys.argv[1:] if argv is None else list(argv))
    tensorflow_free = args.command in cli.TENSORFLOW_FREE_COMMANDS
    with quiet_logs(verbose=args.verbose or tensorflow_free):
        return cli.run(parser, args)


if __name__ == "__main__":
    sys.exit(kdiff_main())
