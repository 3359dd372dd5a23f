"""Deprecated: the RefineNet's old module; the network is ``kdiff.models.refinenet.RefineNet``.

``from kdiff.models.ncsn import NCSN`` still works for one release, with the
``DeprecationWarning`` of ``kdiff.models.NCSN``.
"""

from kdiff import models as _models

__all__ = []


def __getattr__(name):
    """``NCSN``: ``kdiff.models.RefineNet``, after a ``DeprecationWarning`` that names it.

    Args:
        name: the attribute looked up (only ``"NCSN"`` is known here).

    Returns:
        ``RefineNet``.
    """
    if name == "NCSN":
        return _models.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
