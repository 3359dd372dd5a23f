"""Networks: the DDPM / Improved-DDPM U-Net, NCSN's RefineNet, and their layers.

A network maps ``(x, noise level[, class])`` to an output shaped like ``x``; schedules,
losses and samplers live elsewhere (``kdiff.diffusion`` wraps a network into a model).
"""

from kdiff.models.layers import (
    AttentionBlock,
    CondCRPBlock,
    ConditionalInstanceNorm2dPlus,
    ConditionalResidualBlock,
    CondMSFBlock,
    CondRCUBlock,
    CondRefineBlock,
    Downsample,
    GaussianFourierFeatures,
    ResBlock,
    SinusoidalEmbedding,
    Upsample,
)
from kdiff.models.ncsn import NCSN
from kdiff.models.unet import UNet

__all__ = [
    "UNet",
    "NCSN",
    "SinusoidalEmbedding",
    "GaussianFourierFeatures",
    "ResBlock",
    "AttentionBlock",
    "Downsample",
    "Upsample",
    "ConditionalInstanceNorm2dPlus",
    "ConditionalResidualBlock",
    "CondRCUBlock",
    "CondCRPBlock",
    "CondMSFBlock",
    "CondRefineBlock",
]
