"""Networks: the DDPM / Improved-DDPM U-Net, NCSN's RefineNet, NCSN++, and their layers.

A network maps ``(x, noise level[, class])`` to an output shaped like ``x``; schedules,
losses and samplers live elsewhere (``kdiff.diffusion`` wraps a network into a model).
``kdiff.models.NCSN``, the RefineNet's old name, still works for one release and warns:
``kdiff.NCSN`` is the diffusion model that takes a ``RefineNet``.
"""

from kdiff import _moved
from kdiff.models import layers
from kdiff.models.layers import *  # noqa: F403 — the layers' own __all__
from kdiff.models.ncsnpp import NCSNpp
from kdiff.models.refinenet import RefineNet
from kdiff.models.unet import UNet

__all__ = ["UNet", "RefineNet", "NCSNpp", *layers.__all__]


# The network's old name, for one release (kdiff.NCSN is the diffusion model).
__getattr__ = _moved.renamed(__name__, {"NCSN": "kdiff.models.RefineNet"}, " (kdiff.NCSN is the diffusion model)")
