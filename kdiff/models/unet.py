"""The DDPM U-Net (Ho et al. 2020) with the options of Improved DDPM / ADM (Dhariwal & Nichol).

Architecture of ``diffusion_tf/models/unet.py``: a time embedding (sinusoidal(ch) →
Dense(4ch) → SiLU → Dense(4ch)), ``conv_in``, per resolution level ``num_res_blocks``
residual blocks (each followed by self-attention at the resolutions listed in
``attention_resolutions``) and a downsampling between levels; a middle of ResBlock,
attention, ResBlock; an up path with ``num_res_blocks + 1`` residual blocks per level, each
taking the concatenation with the matching down-path activation, and an upsampling between
levels; then GroupNorm → SiLU → ``conv_out`` (zero-initialized).

Options beyond DDPM (survey, section 3, "Versione migliorata"): multi-head attention
(``num_heads`` / ``head_channels``), AdaGN (``adaptive_norm``), BigGAN-style resampling
inside residual blocks (``resblock_updown``), residual connections rescaled by 1/√2
(``skip_rescale``), a learned variance (``learned_variance``: twice the output channels,
``[ε, v]`` along the channel axis), class conditioning (``num_classes``: a class embedding
added to the time embedding) and Gaussian Fourier features for continuous t or σ
(``embedding="fourier"``, score_sde).

Options for reproducing diffusers' ``UNet2DModel`` exactly (``kdiff.from_diffusers``):
``norm_groups`` / ``norm_eps`` (``norm_num_groups`` / ``norm_eps``), ``downsample_padding``,
``flip_sin_to_cos`` / ``freq_shift`` of the sinusoidal embedding, ``mid_attention``
(``add_attention``) and ``mid_attention_norm``; their defaults are DDPM's, so every earlier kdiff network is unchanged.
"""

from __future__ import annotations

import keras
from keras import ops

from kdiff import checks
from kdiff.models import _shared
from kdiff.models import layers as L
from kdiff.models.layers._common import Conv2D, check_rate
from kdiff.models.layers.unet_blocks import GN_EPSILON, attention_heads

__all__ = ["UNet"]

_GROUPS = 32  # the default of `norm_groups`


def _channel_mult(value):
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            "Expected `channel_mult` to be a non-empty sequence of positive integers. "
            f"Received: channel_mult={value!r}"
        )
    return tuple(checks.positive_int(m, "channel_mult") for m in value)


@keras.saving.register_keras_serializable(package="kdiff.models")
class UNet(keras.Model):
    """The U-Net of DDPM (Ho et al. 2020), with Improved-DDPM / ADM options.

    Args:
        image_size: height and width of the (square) images; divisible by
            2^(len(channel_mult) − 1).
        in_channels: image channels.
        out_channels: output channels; None for ``in_channels``. Doubled when
            ``learned_variance``.
        base_channels: channels of the first level (``ch``); every level's channels
            (``base_channels · mult``) must be divisible by the ``norm_groups``.
        channel_mult: channel multiplier of each resolution level.
        num_res_blocks: residual blocks per level on the down path (the up path has one
            more).
        attention_resolutions: spatial resolutions (e.g. 16 for 16×16 feature maps) at
            which self-attention follows the residual blocks; each must be one of the
            network's resolutions.
        dropout: dropout rate inside the residual blocks.
        num_heads: attention heads (when ``head_channels`` is None).
        head_channels: channels per attention head; overrides ``num_heads``.
        adaptive_norm: AdaGN (scale-shift) conditioning in the residual blocks.
        resblock_updown: resample with residual blocks (BigGAN) instead of a strided
            convolution / nearest upsampling + convolution.
        skip_rescale: rescale residual and attention outputs by 1/√2.
        learned_variance: output ``[ε, v]``, twice the channels (Improved DDPM).
        num_classes: None, or the number of classes for class conditioning.
        embedding: "sinusoidal" (DDPM; t are timesteps, int or float) or "fourier"
            (Gaussian Fourier features of a continuous value: t, σ or log σ as the caller
            chooses).
        fourier_scale: scale of the Fourier frequencies.
        max_period: longest period of the sinusoidal embedding.
        norm_groups: groups of every GroupNorm (32 in DDPM).
        norm_eps: ε of every GroupNorm (1e-6 as in DDPM; diffusers' default is 1e-5).
        downsample_padding: the strided downsampling convolution's padding: 0 pads one
            row and column after the image (DDPM's "SAME"), 1 one on every side
            (diffusers' default).
        flip_sin_to_cos: the sinusoidal embedding puts its cosines first.
        freq_shift: the sinusoidal embedding's frequency shift (1 in DDPM: frequencies
            exp(−log(max_period)·i / (half − freq_shift))).
        mid_attention: self-attention between the two middle residual blocks.
        mid_attention_norm: the middle attention normalizes its input (diffusers' U-Nets
            with ``resnet_time_scale_shift="scale_shift"``, i.e. ``adaptive_norm``, have no
            GroupNorm there).
        **kwargs: base model arguments (``name``, ``dtype``).

    Call arguments:
        x: float tensor ``[batch, image_size, image_size, in_channels]``, or a list
            ``[x, t]`` / ``[x, t, y]`` holding all the inputs.
        t: ``[batch]`` timesteps (int or float) or noise levels (float); a scalar is
            broadcast to the batch.
        y: int ``[batch]`` class labels; required exactly when ``num_classes`` is set.
        training: enables dropout.

    Returns:
        ``[batch, image_size, image_size, out_channels]`` (``2·out_channels`` with
        ``learned_variance``), in the compute dtype.
    """

    def __init__(
        self,
        image_size,
        in_channels=3,
        out_channels=None,
        base_channels=128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(16,),
        dropout=0.1,
        num_heads=1,
        head_channels=None,
        adaptive_norm=False,
        resblock_updown=False,
        skip_rescale=False,
        learned_variance=False,
        num_classes=None,
        embedding="sinusoidal",
        fourier_scale=16.0,
        max_period=10000,
        norm_groups=_GROUPS,
        norm_eps=GN_EPSILON,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
        mid_attention=True,
        mid_attention_norm=True,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)  # a float t stays float32; x is cast in call
        super().__init__(**kwargs)
        self._allow_non_tensor_positional_args = True
        self.image_size = checks.positive_int(image_size, "image_size")
        self.in_channels = checks.positive_int(in_channels, "in_channels")
        self.out_channels = None if out_channels is None else checks.positive_int(
            out_channels, "out_channels")
        self.base_channels = checks.positive_int(base_channels, "base_channels")
        self.channel_mult = _channel_mult(channel_mult)
        self.num_res_blocks = checks.positive_int(num_res_blocks, "num_res_blocks")
        self.attention_resolutions = _shared.attention_resolutions(attention_resolutions)
        self.dropout = check_rate(dropout)
        self.num_heads = checks.positive_int(num_heads, "num_heads")
        self.head_channels = None if head_channels is None else checks.positive_int(
            head_channels, "head_channels")
        self.adaptive_norm = bool(adaptive_norm)
        self.resblock_updown = bool(resblock_updown)
        self.skip_rescale = bool(skip_rescale)
        self.learned_variance = bool(learned_variance)
        self.num_classes = None if num_classes is None else checks.positive_int(
            num_classes, "num_classes")
        self.embedding = checks.one_of(embedding, "embedding", ("sinusoidal", "fourier"))
        self.fourier_scale = checks.positive(fourier_scale, "fourier_scale")
        self.max_period = checks.positive(max_period, "max_period")
        self.norm_groups = checks.positive_int(norm_groups, "norm_groups")
        self.norm_eps = checks.positive(norm_eps, "norm_eps")
        if downsample_padding not in (0, 1) or isinstance(downsample_padding, bool):
            raise ValueError(
                f"Expected `downsample_padding` 0 or 1. Received: downsample_padding={downsample_padding!r}"
            )
        self.downsample_padding = int(downsample_padding)
        self.flip_sin_to_cos = bool(flip_sin_to_cos)
        self.freq_shift = freq_shift
        self.mid_attention = bool(mid_attention)
        self.mid_attention_norm = bool(mid_attention_norm)

        levels = len(self.channel_mult)
        factor = 2 ** (levels - 1)
        if self.image_size % factor:
            raise ValueError(
                f"Expected `image_size` divisible by 2^(len(channel_mult) - 1) = {factor} "
                f"for {levels} resolution levels. Received: image_size={self.image_size}"
            )
        for mult in self.channel_mult:
            if (self.base_channels * mult) % self.norm_groups:
                raise ValueError(
                    f"Expected `base_channels` × every `channel_mult` entry divisible by "
                    f"norm_groups={self.norm_groups} (the GroupNorm groups). Received: "
                    f"base_channels={self.base_channels}, channel_mult={self.channel_mult}"
                )
        resolutions = [self.image_size // 2**i for i in range(levels)]
        for r in self.attention_resolutions:
            if r not in resolutions:
                raise ValueError(
                    f"Expected every `attention_resolutions` entry to be one of the network's "
                    f"resolutions {resolutions}. Received: attention_resolutions="
                    f"{self.attention_resolutions}"
                )
        attention_channels = {self.base_channels * self.channel_mult[-1]} if self.mid_attention else set()
        for level, r in enumerate(resolutions):
            if r in self.attention_resolutions:
                attention_channels.add(self.base_channels * self.channel_mult[level])
        for channels in sorted(attention_channels):
            attention_heads(channels, self.num_heads, self.head_channels)

        self._make_layers()
        self.build()

    # ------------------------------------------------------------------ construction

    def _make_layers(self):
        dt = self.dtype_policy
        ch = self.base_channels
        temb_ch = 4 * ch
        if self.embedding == "sinusoidal":
            self.time_features = L.SinusoidalEmbedding(
                ch, max_period=self.max_period, flip_sin_to_cos=self.flip_sin_to_cos,
                freq_shift=self.freq_shift, name="time_features", dtype=dt)
        else:
            self.time_features = L.GaussianFourierFeatures(2 * ch, scale=self.fourier_scale,
                                                           name="time_features", dtype=dt)
        self.time_dense0 = keras.layers.Dense(temb_ch, name="time_dense0", dtype=dt)
        self.time_dense1 = keras.layers.Dense(temb_ch, name="time_dense1", dtype=dt)
        self.class_embedding = None
        if self.num_classes is not None:
            self.class_embedding = keras.layers.Embedding(
                self.num_classes, temb_ch, name="class_embedding", dtype=dt)

        def res(out_ch, name, up=False, down=False):
            return L.ResBlock(out_ch, dropout=self.dropout, adaptive_norm=self.adaptive_norm,
                              up=up, down=down, skip_rescale=self.skip_rescale,
                              groups=self.norm_groups, epsilon=self.norm_eps, name=name, dtype=dt)

        def attn(name, norm=True):
            return L.AttentionBlock(num_heads=self.num_heads, head_channels=self.head_channels,
                                    skip_rescale=self.skip_rescale, groups=self.norm_groups,
                                    epsilon=self.norm_eps, norm=norm, name=name, dtype=dt)

        self.conv_in = Conv2D(ch, 3, padding="same", name="conv_in", dtype=dt)
        levels = len(self.channel_mult)
        self.down_blocks = []  # per level: list of (res, attn or None), then a downsampler
        self.downsamplers = []
        res_size = self.image_size
        in_ch = ch
        for level, mult in enumerate(self.channel_mult):
            blocks = []
            for i in range(self.num_res_blocks):
                use_attn = res_size in self.attention_resolutions
                blocks.append((res(ch * mult, f"down_{level}_block_{i}"),
                               attn(f"down_{level}_attn_{i}") if use_attn else None))
                in_ch = ch * mult
            self.down_blocks.append(blocks)
            if level != levels - 1:
                if self.resblock_updown:
                    self.downsamplers.append(res(in_ch, f"down_{level}_downsample", down=True))
                else:
                    self.downsamplers.append(L.Downsample(
                        padding=self.downsample_padding, name=f"down_{level}_downsample", dtype=dt))
                res_size //= 2
        self.mid_block1 = res(in_ch, "mid_block_1")
        self.mid_attn = attn("mid_attn_1", self.mid_attention_norm) if self.mid_attention else None
        self.mid_block2 = res(in_ch, "mid_block_2")
        self.up_blocks = []
        self.upsamplers = []
        for level in reversed(range(levels)):
            blocks = []
            for i in range(self.num_res_blocks + 1):
                use_attn = res_size in self.attention_resolutions
                blocks.append((res(ch * self.channel_mult[level], f"up_{level}_block_{i}"),
                               attn(f"up_{level}_attn_{i}") if use_attn else None))
            self.up_blocks.append(blocks)
            if level != 0:
                out = ch * self.channel_mult[level]
                if self.resblock_updown:
                    self.upsamplers.append(res(out, f"up_{level}_upsample", up=True))
                else:
                    self.upsamplers.append(L.Upsample(name=f"up_{level}_upsample", dtype=dt))
                res_size *= 2
        # The output head runs in the variable dtype (float32 under mixed precision).
        head_dt = keras.DTypePolicy(self.dtype_policy.variable_dtype)
        self.norm_out = L.GroupNorm(self.norm_groups, epsilon=self.norm_eps, name="norm_out",
                                    dtype=head_dt)
        self.conv_out = Conv2D(
            self.output_channels, 3, padding="same", kernel_initializer="zeros",
            name="conv_out", dtype=head_dt)

    @property
    def output_channels(self):
        """Channels of the output: ``out_channels`` (or ``in_channels``), ×2 if learned variance."""
        out = self.out_channels or self.in_channels
        return 2 * out if self.learned_variance else out

    def build(self, input_shape=None):
        """Creates every weight (shapes come from the constructor; ``input_shape`` is unused)."""
        if self.built:
            return
        x = keras.KerasTensor((1, self.image_size, self.image_size, self.in_channels),
                              dtype=self.compute_dtype)
        t = keras.KerasTensor((1,), dtype="float32")
        y = keras.KerasTensor((1,), dtype="int32") if self.num_classes is not None else None
        self._forward(x, t, y, False)  # a symbolic pass: every sublayer builds itself

    def get_build_config(self):
        return {"input_shape": [None, self.image_size, self.image_size, self.in_channels]}

    def build_from_config(self, config):
        self.build()

    # ------------------------------------------------------------------ forward pass

    def call(self, x, t=None, y=None, training=None):
        x, t, y = _shared.unpack_inputs(self, x, t, y)
        return self._forward(x, t, y, training)

    def _forward(self, x, t, y, training):
        temb = self.time_features(t)
        temb = self.time_dense1(L.silu(self.time_dense0(temb)))
        if self.class_embedding is not None:
            temb = temb + self.class_embedding(y)

        hs = [self.conv_in(x)]
        for level, blocks in enumerate(self.down_blocks):
            for block, attn in blocks:
                h = block(hs[-1], temb, training=training)
                if attn is not None:
                    h = attn(h)
                hs.append(h)
            if level < len(self.downsamplers):
                down = self.downsamplers[level]
                if self.resblock_updown:
                    hs.append(down(hs[-1], temb, training=training))
                else:
                    hs.append(down(hs[-1]))

        h = self.mid_block1(hs[-1], temb, training=training)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid_block2(h, temb, training=training)

        for i, blocks in enumerate(self.up_blocks):
            for block, attn in blocks:
                h = block(ops.concatenate([h, hs.pop()], axis=-1), temb, training=training)
                if attn is not None:
                    h = attn(h)
            if i < len(self.upsamplers):
                up = self.upsamplers[i]
                h = up(h, temb, training=training) if self.resblock_updown else up(h)

        h = self.norm_out(h, activation="silu")
        return self.conv_out(h)

    def compute_output_shape(self, x_shape, t_shape=None, y_shape=None):
        return _shared.image_output_shape(x_shape, self.image_size, self.output_channels)

    # ------------------------------------------------------------------ config and presets

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            base_channels=self.base_channels,
            channel_mult=list(self.channel_mult),
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=list(self.attention_resolutions),
            dropout=self.dropout,
            num_heads=self.num_heads,
            head_channels=self.head_channels,
            adaptive_norm=self.adaptive_norm,
            resblock_updown=self.resblock_updown,
            skip_rescale=self.skip_rescale,
            learned_variance=self.learned_variance,
            num_classes=self.num_classes,
            embedding=self.embedding,
            fourier_scale=self.fourier_scale,
            max_period=self.max_period,
            norm_groups=self.norm_groups,
            norm_eps=self.norm_eps,
            downsample_padding=self.downsample_padding,
            flip_sin_to_cos=self.flip_sin_to_cos,
            freq_shift=self.freq_shift,
            mid_attention=self.mid_attention,
            mid_attention_norm=self.mid_attention_norm,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def ddpm_cifar10(cls, **overrides):
        """Ho et al.'s CIFAR-10 model: 32×32, ch 128, mult (1, 2, 2, 2), 2 blocks, attention
        at 16, dropout 0.1 — 35.7M parameters.

        Args:
            **overrides: constructor arguments to change.

        Returns:
            A UNet.
        """
        config = dict(image_size=32, in_channels=3, base_channels=128, channel_mult=(1, 2, 2, 2),
                      num_res_blocks=2, attention_resolutions=(16,), dropout=0.1)
        config.update(overrides)
        return cls(**config)

    @classmethod
    def ddpm_celebahq(cls, **overrides):
        """Ho et al.'s 256×256 model (CelebA-HQ, LSUN): ch 128, mult (1, 1, 2, 2, 4, 4),
        2 blocks, attention at 16, dropout 0 — 113,673,219 parameters.

        The network of google/ddpm-celebahq-256 (and its LSUN siblings) as diffusers'
        config describes it: ``block_out_channels`` 128, 128, 256, 256, 512, 512,
        ``AttnDownBlock2D`` at 16×16, one attention head (``attention_head_dim`` null),
        GroupNorm ε 1e-6, ``downsample_padding`` 0, ``freq_shift`` 1, no sin/cos flip —
        the defaults of this class; ``kdiff.from_diffusers`` loads its weights.

        Args:
            **overrides: constructor arguments to change.

        Returns:
            A UNet.
        """
        config = dict(image_size=256, in_channels=3, base_channels=128,
                      channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                      attention_resolutions=(16,), dropout=0.0)
        config.update(overrides)
        return cls(**config)

    @classmethod
    def improved_cifar10(cls, **overrides):
        """CIFAR-10 with Dhariwal & Nichol's changes: 64-channel heads, attention at 32, 16
        and 8, AdaGN, BigGAN resampling, 1/√2 skips, learned variance (ch 128, mult
        (1, 2, 2, 2), 3 blocks and dropout 0.3 as in Improved DDPM's CIFAR-10 run).

        Args:
            **overrides: constructor arguments to change.

        Returns:
            A UNet.
        """
        config = dict(image_size=32, in_channels=3, base_channels=128, channel_mult=(1, 2, 2, 2),
                      num_res_blocks=3, attention_resolutions=(32, 16, 8), dropout=0.3,
                      head_channels=64, adaptive_norm=True, resblock_updown=True,
                      skip_rescale=True, learned_variance=True)
        config.update(overrides)
        return cls(**config)

    @classmethod
    def small(cls, image_size=16, in_channels=1, **overrides):
        """A CPU-sized U-Net: ch 32, mult (1, 2), 2 blocks, attention at the lowest resolution.

        Args:
            image_size: image height and width (even).
            in_channels: image channels.
            **overrides: other constructor arguments to change.

        Returns:
            A UNet.
        """
        config = dict(image_size=image_size, in_channels=in_channels, base_channels=32,
                      channel_mult=(1, 2), num_res_blocks=2,
                      attention_resolutions=(image_size // 2,),
                      dropout=0.0)
        config.update(overrides)
        return cls(**config)
