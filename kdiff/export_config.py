"""An export's ``config.json``: its file name, the format version, and reading it without TensorFlow.

``kdiff info`` prints a config at once with :func:`read_config`; ``kdiff.export.read_config``
also checks that the config's process builds, which imports TensorFlow.
"""

from __future__ import annotations

import json
import os

__all__ = ["CONFIG_NAME", "FORMAT_VERSION", "read_config"]

# 2: a Sigmas process is stored as its config ({"name": ..., "sigmas": [...]}); format-1
# exports (a bare list of σ's) still load.
FORMAT_VERSION = 2
CONFIG_NAME = "config.json"


def read_config(path):
    """Reads an export's ``config.json``, checking that ``path`` is a kdiff export of a format this kdiff reads.

    Args:
        path: the export's directory.

    Returns:
        The config, a dict.

    Raises:
        ValueError: naming the path when it is missing, not a kdiff export, or of a newer format.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"Expected a kdiff export directory. Received: path={path!r} does not exist")
    if not os.path.isdir(path):
        raise ValueError(f"Expected a kdiff export directory. Received: path={path!r} is not a directory")
    missing = [name for name in ("saved_model.pb", CONFIG_NAME) if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise ValueError(
            f"Expected a kdiff export (saved_model.pb and {CONFIG_NAME}, written by kdiff.export.export). "
            f"Received: path={path!r} has no {' or '.join(missing)}"
        )
    try:
        with open(os.path.join(path, CONFIG_NAME), encoding="utf-8") as file:
            config = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"Expected a readable JSON {CONFIG_NAME} in path={path!r}. Received: {error}") from error
    if not isinstance(config, dict) or "family" not in config or "format" not in config:
        raise ValueError(f"Expected a kdiff export {CONFIG_NAME} (with family and format) in path={path!r}.")
    if int(config["format"]) > FORMAT_VERSION:
        raise ValueError(
            f"Expected an export of format <= {FORMAT_VERSION} (this kdiff's). Received: format={config['format']} "
            f"in path={path!r}; upgrade kdiff to load it."
        )
    return config
