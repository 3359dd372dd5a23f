"""Building blocks of kdiff's networks, one module a family.

* ``embeddings``: ``SinusoidalEmbedding`` (DDPM's timestep embedding) and
  ``GaussianFourierFeatures`` (score_sde's ``GaussianFourierProjection``);
* ``resampling``: ``Downsample``, ``Upsample``, the FIR resampling of NCSN++
  (``fir_downsample`` / ``fir_upsample``) and the aligned-corners bilinear resize;
* ``unet_blocks``: the DDPM / Improved-DDPM U-Net blocks (Ho et al. 2020; Dhariwal & Nichol
  2021): ``ResBlock``, ``AttentionBlock``, ``GroupNorm``, ``silu``;
* ``refinenet_blocks``: the NCSN RefineNet blocks (Song & Ermon 2019,
  ``ncsn/models/cond_refinenet_dilated.py``): ``ConditionalInstanceNorm2dPlus``,
  ``ConditionalResidualBlock``, ``CondRCUBlock``, ``CondCRPBlock``, ``CondMSFBlock``,
  ``CondRefineBlock``.

Every name is importable from here as before the split (``from kdiff.models.layers import
ResBlock``), and every layer keeps its Keras registered name (``"kdiff.models>ResBlock"``),
so saved models load. Images are channels-last, ``[batch, height, width, channels]``.
Every layer respects its dtype policy: under ``"mixed_bfloat16"`` / ``"mixed_float16"`` it
computes in the compute dtype; embeddings of timesteps and noise levels are computed in
float32 (a bfloat16 t of 999 would read 1000) and only then cast; normalization
statistics are taken in float32.
"""

from kdiff.models._shared import image_output_shape  # noqa: F401 — a network helper, importable here as before
from kdiff.models.layers import embeddings, refinenet_blocks, resampling, unet_blocks
from kdiff.models.layers.embeddings import GaussianFourierFeatures, SinusoidalEmbedding  # noqa: F401 — in __all__
from kdiff.models.layers.refinenet_blocks import (  # noqa: F401 — in __all__
    CondCRPBlock,
    CondMSFBlock,
    CondRCUBlock,
    CondRefineBlock,
    ConditionalInstanceNorm2dPlus,
    ConditionalResidualBlock,
)
from kdiff.models.layers.resampling import (  # noqa: F401 — in __all__, and resize_bilinear_align_corners as before
    Downsample,
    Upsample,
    fir_downsample,
    fir_upsample,
    resize_bilinear_align_corners,
)
from kdiff.models.layers.unet_blocks import AttentionBlock, GroupNorm, ResBlock, silu  # noqa: F401 — in __all__

# Each family module's __all__ is its layers; the helpers they share stay out of it.
__all__ = [*embeddings.__all__, *unet_blocks.__all__, *resampling.__all__, *refinenet_blocks.__all__]
