"""Networks: the DDPM / Improved-DDPM U-Net, NCSN's RefineNet, NCSN++, and their layers.

A network maps ``(x, noise level[, class])`` to an output shaped like ``x``; schedules,
losses and samplers live elsewhere (``kdiff.diffusion`` wraps a network into a model).
"""

from kdiff.models import layers
from kdiff.models.layers import *  # noqa: F403 — the layers' own __all__
from kdiff.models.ncsn import NCSN
from kdiff.models.ncsnpp import NCSNpp
from kdiff.models.unet import UNet

__all__ = ["UNet", "NCSN", "NCSNpp", *layers.__all__]
