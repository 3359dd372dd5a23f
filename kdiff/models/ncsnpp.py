"""NCSN++ (Song et al. 2021, score_sde's ``ncsnpp.py``) in the layout diffusers converts it to.

The network of score_sde's VE checkpoints (google/ncsnpp-celebahq-256 and its siblings)
as diffusers' ``UNet2DModel`` represents it with ``SkipDownBlock2D`` /
``AttnSkipDownBlock2D`` / ``SkipUpBlock2D`` / ``AttnSkipUpBlock2D``:

* the input is mapped 2x − 1 (``center_input``; the data is in [0, 1]);
* the noise level σ enters through Gaussian Fourier features of log σ (scale 16), then
  Dense(4ch) → SiLU → Dense(4ch);
* every level has ``num_res_blocks`` residual blocks (BigGAN style, residual sums
  rescaled by 1/√2), each followed by self-attention at the ``attention_resolutions``;
  between levels a residual block that downsamples with the FIR filter (1, 3, 3, 1)
  (``kdiff.models.layers.fir_downsample``), and the *progressive input*: the input image,
  FIR-downsampled alongside, enters every level through a 1×1 convolution added to the
  features;
* a middle of ResBlock, attention, ResBlock (rescaled by 1/√2);
* the up path has ``num_res_blocks + 1`` residual blocks per level on the concatenation
  with the matching down-path activation, one self-attention after them at the
  attention resolutions, and between levels a FIR-upsampling residual block; the
  *progressive output* sums, level by level, GroupNorm → SiLU → conv3×3 of the features
  onto a FIR-upsampled image-sized skip;
* GroupNorm → SiLU → conv3×3, plus the progressive output, divided by σ
  (score_sde's ``scale_by_sigma``): the network returns the score of a VE SDE.

GroupNorm groups follow diffusers' blocks exactly (``min(channels / 4, 32)`` in the
residual blocks; 32 in the attention blocks; ``norm_groups`` in the middle and the output
head — and, in the up-path blocks of the attention levels, diffusers' count
``min(prev + skip / 4, 32)``), so that converted checkpoints give the same outputs.
"""

from __future__ import annotations


import keras
from keras import ops

from kdiff import checks
from kdiff.models import _shared
from kdiff.models import layers as L
from kdiff.models.layers._common import Conv2D, check_rate

__all__ = ["NCSNpp"]

_ATTENTION_GROUPS = 32  # the attention blocks of diffusers' skip blocks


def _channels(value):
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            "Expected `channels` to be a non-empty sequence of positive integers (one per "
            f"resolution level). Received: channels={value!r}"
        )
    return tuple(checks.positive_int(c, "channels") for c in value)


def _groups(channels):
    """score_sde's GroupNorm groups: min(channels / 4, 32)."""
    return min(channels // 4, 32)


@keras.saving.register_keras_serializable(package="kdiff.models")
class NCSNpp(keras.Model):
    """NCSN++: score_sde's network with FIR resampling and progressive input / output skips.

    Args:
        image_size: height and width of the (square) images; divisible by
            2^(len(channels) − 1).
        in_channels: image channels.
        out_channels: output channels; None for ``in_channels``.
        channels: channels of each resolution level (diffusers' ``block_out_channels``).
        num_res_blocks: residual blocks per level on the down path (the up path has one
            more; diffusers' ``layers_per_block``).
        attention_resolutions: resolutions at which self-attention follows the residual
            blocks; each must be one of the network's resolutions.
        dropout: dropout rate inside the residual blocks.
        embedding: "fourier" (Gaussian Fourier features of log σ; the output is divided
            by σ — a VE score network, called with σ) or "sinusoidal" (the sinusoidal
            embedding of the level as given, output not rescaled — e.g. consistency
            models' skip-block U-Nets).
        fourier_scale: scale of the Fourier frequencies (16 in score_sde).
        flip_sin_to_cos: the sinusoidal embedding puts its cosines first.
        freq_shift: the sinusoidal embedding's frequency shift.
        center_input: map the input x to 2x − 1 first (data in [0, 1]).
        head_channels: channels per attention head; None for a single head.
        norm_eps: ε of every GroupNorm.
        norm_groups: groups of the middle blocks' and the output head's GroupNorms;
            None for min(channels / 4, 32).
        **kwargs: base model arguments (``name``, ``dtype``).

    Call arguments:
        x: float tensor ``[batch, image_size, image_size, in_channels]``, or a list
            ``[x, level]``.
        level: ``[batch]`` noise levels σ > 0 (``embedding="fourier"``) or timesteps; a
            scalar is broadcast to the batch.
        training: enables dropout.

    Returns:
        ``[batch, image_size, image_size, out_channels]``: the score ∇log p_σ(x) for
        ``embedding="fourier"``.
    """

    num_classes = None  # unconditional

    def __init__(
        self,
        image_size,
        in_channels=3,
        out_channels=None,
        channels=(128, 128, 256, 256, 256, 256, 256),
        num_res_blocks=2,
        attention_resolutions=(16,),
        dropout=0.0,
        embedding="fourier",
        fourier_scale=16.0,
        flip_sin_to_cos=True,
        freq_shift=0,
        center_input=True,
        head_channels=None,
        norm_eps=1e-6,
        norm_groups=32,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)  # σ stays float32; x is cast in call
        super().__init__(**kwargs)
        self._allow_non_tensor_positional_args = True
        self.image_size = checks.positive_int(image_size, "image_size")
        self.in_channels = checks.positive_int(in_channels, "in_channels")
        self.out_channels = None if out_channels is None else checks.positive_int(
            out_channels, "out_channels")
        self.channels = _channels(channels)
        self.num_res_blocks = checks.positive_int(num_res_blocks, "num_res_blocks")
        self.attention_resolutions = _shared.attention_resolutions(attention_resolutions)
        self.dropout = check_rate(dropout)
        self.embedding = checks.one_of(embedding, "embedding", ("fourier", "sinusoidal"))
        self.fourier_scale = checks.positive(fourier_scale, "fourier_scale")
        self.flip_sin_to_cos = bool(flip_sin_to_cos)
        self.freq_shift = freq_shift
        self.center_input = bool(center_input)
        self.head_channels = None if head_channels is None else checks.positive_int(
            head_channels, "head_channels")
        self.norm_eps = checks.positive(norm_eps, "norm_eps")
        self.norm_groups = None if norm_groups is None else checks.positive_int(
            norm_groups, "norm_groups")

        levels = len(self.channels)
        factor = 2 ** (levels - 1)
        if self.image_size % factor:
            raise ValueError(
                f"Expected `image_size` divisible by 2^(len(channels) - 1) = {factor} for "
                f"{levels} resolution levels. Received: image_size={self.image_size}"
            )
        resolutions = [self.image_size // 2**i for i in range(levels)]
        for r in self.attention_resolutions:
            if r not in resolutions:
                raise ValueError(
                    f"Expected every `attention_resolutions` entry to be one of the network's "
                    f"resolutions {resolutions}. Received: attention_resolutions="
                    f"{self.attention_resolutions}"
                )
        self._check_groups(resolutions)
        self._make_layers(resolutions)
        self.build()

    @property
    def conditioning(self):
        """How ``kdiff.ScoreSDE`` calls this network: "sigma" (σ(t) in, the score out) with
        Fourier features, "time" (t·(N−1) in, the noise out) otherwise."""
        return "sigma" if self.embedding == "fourier" else "time"

    @property
    def output_channels(self):
        """Channels of the output."""
        return self.out_channels or self.in_channels

    def _mid_groups(self, channels):
        return self.norm_groups if self.norm_groups is not None else _groups(channels)

    def _check_groups(self, resolutions):
        problems = []
        for level, ch in enumerate(self.channels):
            if _groups(ch) < 1 or ch % _groups(ch):
                problems.append(f"level {level}: {ch} channels, {_groups(ch)} groups")
            if resolutions[level] in self.attention_resolutions and ch % _ATTENTION_GROUPS:
                problems.append(f"attention at level {level}: {ch} channels, "
                                f"{_ATTENTION_GROUPS} groups")
        for name, ch in (("middle", self.channels[-1]), ("output head", self.channels[0])):
            groups = self._mid_groups(ch)
            if groups < 1 or ch % groups:
                problems.append(f"{name}: {ch} channels, {groups} groups")
        if problems:
            raise ValueError(
                "Expected every GroupNorm's channels divisible by its groups (min(channels / 4, "
                "32) in the residual blocks, 32 in attention, `norm_groups` in the middle and "
                f"head). Received: channels={self.channels}, norm_groups={self.norm_groups} "
                f"({'; '.join(problems)})"
            )

    # ------------------------------------------------------------------ construction

    def _make_layers(self, resolutions):
        dt = self.dtype_policy
        ch0 = self.channels[0]
        temb_ch = 4 * ch0
        if self.embedding == "fourier":
            self.time_features = L.GaussianFourierFeatures(
                2 * ch0, scale=self.fourier_scale, name="time_features", dtype=dt)
        else:
            self.time_features = L.SinusoidalEmbedding(
                ch0, flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift,
                name="time_features", dtype=dt)
        self.time_dense0 = keras.layers.Dense(temb_ch, name="time_dense0", dtype=dt)
        self.time_dense1 = keras.layers.Dense(temb_ch, name="time_dense1", dtype=dt)

        def res(out_ch, groups, name, groups_out=None, up=False, down=False):
            return L.ResBlock(out_ch, dropout=self.dropout, up=up, down=down, skip_rescale=True,
                              groups=groups, groups_out=groups_out, epsilon=self.norm_eps,
                              fir=up or down, project_skip=up or down, name=name, dtype=dt)

        def attn(groups, name):
            return L.AttentionBlock(head_channels=self.head_channels, skip_rescale=True,
                                    groups=groups, epsilon=self.norm_eps, name=name, dtype=dt)

        self.conv_in = Conv2D(ch0, 3, padding="same", name="conv_in", dtype=dt)
        levels = len(self.channels)
        self.down_blocks, self.downsamplers, self.down_skips = [], [], []
        stack = [ch0]  # channels of the activations the up path concatenates
        in_ch = ch0
        for level, ch in enumerate(self.channels):
            use_attn = resolutions[level] in self.attention_resolutions
            blocks = []
            for i in range(self.num_res_blocks):
                blocks.append((res(ch, _groups(in_ch), f"down_{level}_block_{i}", _groups(ch)),
                               attn(_ATTENTION_GROUPS, f"down_{level}_attn_{i}") if use_attn
                               else None))
                in_ch = ch
                stack.append(ch)
            self.down_blocks.append(blocks)
            if level != levels - 1:
                self.downsamplers.append(res(ch, _groups(ch), f"down_{level}_downsample", down=True))
                self.down_skips.append(Conv2D(ch, 1, name=f"down_{level}_skip",
                                                           dtype=dt))
                stack.append(ch)
        mid_ch, mid_groups = self.channels[-1], self._mid_groups(self.channels[-1])
        self.mid_block1 = res(mid_ch, mid_groups, "mid_block_1")
        self.mid_attn = attn(mid_groups, "mid_attn_1")
        self.mid_block2 = res(mid_ch, mid_groups, "mid_block_2")

        out = self.output_channels
        self.up_blocks, self.up_attns, self.upsamplers = [], [], []
        self.up_skip_norms, self.up_skip_convs = [], []
        prev = mid_ch
        for level in reversed(range(levels)):
            ch = self.channels[level]
            use_attn = resolutions[level] in self.attention_resolutions
            blocks = []
            for i in range(self.num_res_blocks + 1):
                skip_ch = stack.pop()
                # diffusers' AttnSkipUpBlock2D counts min(prev + skip / 4, 32) groups.
                groups = min(prev + skip_ch // 4, 32) if use_attn else _groups(prev + skip_ch)
                blocks.append(res(ch, groups, f"up_{level}_block_{i}", _groups(ch)))
                prev = ch
            self.up_blocks.append(blocks)
            self.up_attns.append(attn(_ATTENTION_GROUPS, f"up_{level}_attn") if use_attn else None)
            if level != 0:
                self.up_skip_norms.append(L.GroupNorm(_groups(ch), epsilon=self.norm_eps,
                                                      name=f"up_{level}_skip_norm", dtype=dt))
                self.up_skip_convs.append(Conv2D(
                    out, 3, padding="same", name=f"up_{level}_skip_conv", dtype=dt))
                self.upsamplers.append(res(ch, _groups(ch), f"up_{level}_upsample", up=True))
        # The output head runs in the variable dtype (float32 under mixed precision).
        head_dt = keras.DTypePolicy(self.dtype_policy.variable_dtype)
        self.norm_out = L.GroupNorm(self._mid_groups(ch0), epsilon=self.norm_eps,
                                    name="norm_out", dtype=head_dt)
        self.conv_out = Conv2D(out, 3, padding="same", kernel_initializer="zeros",
                                            name="conv_out", dtype=head_dt)

    def build(self, input_shape=None):
        """Creates every weight (shapes come from the constructor; ``input_shape`` is unused)."""
        if self.built:
            return
        x = keras.KerasTensor((1, self.image_size, self.image_size, self.in_channels),
                              dtype=self.compute_dtype)
        self._forward(x, keras.KerasTensor((1,), dtype="float32"), False)

    def get_build_config(self):
        return {"input_shape": [None, self.image_size, self.image_size, self.in_channels]}

    def build_from_config(self, config):
        self.build()

    # ------------------------------------------------------------------ forward pass

    def call(self, x, level=None, training=None):
        x, level, _ = _shared.unpack_inputs(self, x, level, None)
        return self._forward(x, level, training)

    def _forward(self, x, level, training):
        if self.embedding == "fourier":
            temb = self.time_features(ops.log(level))
        else:
            temb = self.time_features(level)
        temb = self.time_dense1(L.silu(self.time_dense0(temb)))
        if self.center_input:
            x = 2.0 * x - 1.0

        skip = x
        h = self.conv_in(x)
        hs = [h]
        for level_index, blocks in enumerate(self.down_blocks):
            for block, attn in blocks:
                h = block(h, temb, training=training)
                if attn is not None:
                    h = attn(h)
                hs.append(h)
            if level_index < len(self.downsamplers):
                h = self.downsamplers[level_index](h, temb, training=training)
                skip = L.fir_downsample(skip)
                h = self.down_skips[level_index](skip) + h
                hs.append(h)

        h = self.mid_block1(h, temb, training=training)
        h = self.mid_attn(h)
        h = self.mid_block2(h, temb, training=training)

        out_skip = None
        for i, blocks in enumerate(self.up_blocks):
            for block in blocks:
                h = block(ops.concatenate([h, hs.pop()], axis=-1), temb, training=training)
            if self.up_attns[i] is not None:
                h = self.up_attns[i](h)
            if out_skip is not None:
                out_skip = L.fir_upsample(out_skip)
            if i < len(self.upsamplers):
                s = self.up_skip_convs[i](self.up_skip_norms[i](h, activation="silu"))
                out_skip = s if out_skip is None else out_skip + s
                h = self.upsamplers[i](h, temb, training=training)

        h = self.conv_out(self.norm_out(h, activation="silu"))
        if out_skip is not None:
            h = h + ops.cast(out_skip, h.dtype)
        if self.embedding == "fourier":
            h = h / ops.cast(ops.reshape(level, (-1, 1, 1, 1)), h.dtype)
        return h

    def compute_output_shape(self, x_shape, level_shape=None):
        return _shared.image_output_shape(x_shape, self.image_size, self.output_channels)

    # ------------------------------------------------------------------ config and presets

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            channels=list(self.channels),
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=list(self.attention_resolutions),
            dropout=self.dropout,
            embedding=self.embedding,
            fourier_scale=self.fourier_scale,
            flip_sin_to_cos=self.flip_sin_to_cos,
            freq_shift=self.freq_shift,
            center_input=self.center_input,
            head_channels=self.head_channels,
            norm_eps=self.norm_eps,
            norm_groups=self.norm_groups,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def celebahq_256(cls, **overrides):
        """google/ncsnpp-celebahq-256 (score_sde's ``celebahq_256_ncsnpp_continuous``):
        256×256, channels 128, 128, 256, 256, 256, 256, 256, 2 residual blocks per level,
        attention at 16×16, Fourier features of log σ (scale 16), input mapped 2x − 1,
        GroupNorm ε 1e-6.

        Args:
            **overrides: constructor arguments to change.

        Returns:
            An NCSNpp.
        """
        config = dict(image_size=256, in_channels=3, channels=(128, 128, 256, 256, 256, 256, 256),
                      num_res_blocks=2, attention_resolutions=(16,), dropout=0.0,
                      embedding="fourier", fourier_scale=16.0, center_input=True,
                      norm_eps=1e-6, norm_groups=32)
        config.update(overrides)
        return cls(**config)

    @classmethod
    def small(cls, image_size=16, in_channels=3, **overrides):
        """A CPU-sized NCSN++: channels (32, 32), one residual block per level, attention at
        the lowest resolution.

        Args:
            image_size: image height and width (even).
            in_channels: image channels.
            **overrides: other constructor arguments to change.

        Returns:
            An NCSNpp.
        """
        config = dict(image_size=image_size, in_channels=in_channels, channels=(32, 32),
                      num_res_blocks=1, attention_resolutions=(image_size // 2,))
        config.update(overrides)
        return cls(**config)
