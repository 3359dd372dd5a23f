"""Networks: the DDPM / Improved-DDPM U-Net, NCSN's RefineNet, NCSN++, and their layers.

A network maps ``(x, noise level[, class])`` to an output shaped like ``x``; schedules,
losses and samplers live elsewhere (``kdiff.diffusion`` wraps a network into a model).
``kdiff.models.NCSN``, the RefineNet's old name, still works for one release and warns:
``kdiff.NCSN`` is the diffusion model that takes a ``RefineNet``.
"""

import warnings

from kdiff.models import layers
from kdiff.models.layers import *  # noqa: F403 — the layers' own __all__
from kdiff.models.ncsnpp import NCSNpp
from kdiff.models.refinenet import RefineNet
from kdiff.models.unet import UNet

__all__ = ["UNet", "RefineNet", "NCSNpp", *layers.__all__]


def __getattr__(name):
    """``kdiff.models.NCSN``: the RefineNet by its old name, with a ``DeprecationWarning``.

    Args:
        name: the attribute looked up (only ``"NCSN"`` is known here).

    Returns:
        ``RefineNet``.
    """
    if name == "NCSN":
        warnings.warn(
            "kdiff.models.NCSN is now kdiff.models.RefineNet (kdiff.NCSN is the diffusion model); "
            "the old name goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return RefineNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
