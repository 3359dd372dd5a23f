"""The network presets: what each name builds, and which families train it.

``pipeline.builders`` owns this table: it turns a preset into a ``kdiff.models`` network.
``pipeline.config`` imports only the names it checks a config against (``NETWORKS``,
``FAMILY_NETWORKS``, …). Nothing here imports TensorFlow, so that the flags parse and
``--help`` stays fast: the factories are named here and looked up by the builders.

``unet_small``
    ``kdiff.models.UNet.small``: ch 32 (or ``base_channels``), mult (1, 2), 2 blocks,
    attention at half the image size — CPU-sized.
``unet_medium``
    Ho et al.'s layout scaled down for 28–32 pixel images on a CPU (about 2.7M parameters
    at 32×32×1): ch 32 (or ``base_channels``), mult (1, 2, 4), 1 block, attention at 8×8
    (at half the image size when 8 is not one of its resolutions).
``unet_ddpm_cifar10``
    Ho et al.'s CIFAR-10 layout (ch 128, mult (1, 2, 2, 2), attention at 16, dropout
    0.1) at the run's image size; attention at half the image size when 16 is not one of
    the network's resolutions.
``unet_improved``
    Improved DDPM / ADM's CIFAR-10 layout with a learned variance (trained with the
    hybrid loss): AdaGN, BigGAN resampling, 64-channel heads.
``ncsn_small`` / ``ncsn_cifar10``
    NCSN's RefineNet (ngf 16 / 128, or ``base_channels``), one class per noise level.
``ncsnpp_small``
    Song et al.'s NCSN++ (``kdiff.models.NCSNpp``) scaled down, for family ``sde``:
    channels ch, 2·ch, 2·ch with ch 32 (or ``base_channels``), 1 block, attention at 8×8
    (or half the image size), Fourier features of log σ (σ conditioning), its input
    taken as is (the pipeline's data range, not NCSN++'s 2x − 1 mapping).

A U-Net with ``loss="hybrid"`` learns its variance (twice the output channels).
"""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class NetworkPreset:
    """What a network preset builds: a ``kdiff.models`` factory and the layout it is given.

    Attributes:
        model: the ``kdiff.models`` class: "UNet", "RefineNet" or "NCSNpp".
        factory: the class's constructor method that makes it ("small", "cifar10", …).
        families: the families that train it, in the order their error messages list them
            (a family's first preset is its default network).
        levels: resolution levels, each halving the image (its size must allow them);
            None: whatever the factory takes.
        attention: the attention resolutions wanted, kept where the network has them (else
            half the image size); None: the factory's.
        channel_mult: each level's channels as multiples of the base; None: the factory's.
        width: the base channels when the config gives none; None: the factory's.
        res_blocks: residual blocks per resolution (a config's ``num_res_blocks`` overrides
            them); None: the factory's.
        head_channels: the channels of an attention head, at most, dividing the base
            channels; None: the factory's.
        learned_variance: True when the network always learns its variance (the factory's
            own; trained with the hybrid loss); None when the loss decides.
        center_input: False to take the input as is (no 2x − 1 mapping); None: the factory's.
    """

    model: str
    factory: str
    families: tuple
    levels: Optional[int] = None
    attention: Optional[tuple] = None
    channel_mult: Optional[tuple] = None
    width: Optional[int] = None
    res_blocks: Optional[int] = None
    head_channels: Optional[int] = None
    learned_variance: Optional[bool] = None
    center_input: Optional[bool] = None


# The presets, in the order --help and the error messages list them.
NETWORK_PRESETS = {
    "unet_small": NetworkPreset("UNet", "small", ("ddpm", "sde")),
    "unet_medium": NetworkPreset(
        "UNet", "small", ("ddpm", "sde"), levels=3, attention=(8,), channel_mult=(1, 2, 4), res_blocks=1
    ),
    "unet_ddpm_cifar10": NetworkPreset("UNet", "ddpm_cifar10", ("ddpm", "sde"), levels=4, attention=(16,)),
    "unet_improved": NetworkPreset(
        "UNet", "improved_cifar10", ("ddpm",), levels=4, attention=(32, 16, 8), width=128, head_channels=64,
        learned_variance=True,
    ),
    "ncsn_small": NetworkPreset("RefineNet", "small", ("ncsn",)),
    "ncsn_cifar10": NetworkPreset("RefineNet", "cifar10", ("ncsn",)),
    "ncsnpp_small": NetworkPreset(
        "NCSNpp", "small", ("sde",), levels=3, attention=(8,), channel_mult=(1, 2, 2), width=32, center_input=False
    ),
}

# The kdiff.models classes whose every level's channels must be a multiple of their
# GroupNorm groups, and those groups.
GROUPNORM_MODELS = ("UNet", "NCSNpp")
UNET_GROUPS = 32


def _named(model):
    return tuple(name for name, preset in NETWORK_PRESETS.items() if preset.model == model)


NETWORKS = tuple(NETWORK_PRESETS)
UNET_PRESETS = _named("UNet")
NCSN_PRESETS = _named("RefineNet")
NCSNPP_PRESETS = _named("NCSNpp")
GROUPNORM_PRESETS = tuple(name for name, preset in NETWORK_PRESETS.items() if preset.model in GROUPNORM_MODELS)
# The presets that always learn their variance: trained with the hybrid loss only.
LEARNED_VARIANCE_PRESETS = tuple(name for name, preset in NETWORK_PRESETS.items() if preset.learned_variance)
# family → the networks it accepts (first: its default).
FAMILY_NETWORKS = {
    family: tuple(name for name, preset in NETWORK_PRESETS.items() if family in preset.families)
    for family in dict.fromkeys(family for preset in NETWORK_PRESETS.values() for family in preset.families)
}
DEFAULT_NETWORKS = {family: networks[0] for family, networks in FAMILY_NETWORKS.items()}

__all__ = [
    "DEFAULT_NETWORKS",
    "FAMILY_NETWORKS",
    "GROUPNORM_MODELS",
    "GROUPNORM_PRESETS",
    "LEARNED_VARIANCE_PRESETS",
    "NCSNPP_PRESETS",
    "NCSN_PRESETS",
    "NETWORKS",
    "NETWORK_PRESETS",
    "NetworkPreset",
    "UNET_GROUPS",
    "UNET_PRESETS",
]
