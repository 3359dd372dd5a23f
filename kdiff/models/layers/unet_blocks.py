"""The blocks of the DDPM / Improved-DDPM U-Net, which NCSN++ builds from too.

After Ho et al. 2020 (``diffusion_tf/models/unet.py``) and Dhariwal & Nichol 2021
(``guided_diffusion/unet.py``): ``ResBlock`` (with AdaGN, BigGAN-style resampling and
score_sde's options), ``AttentionBlock``, the ``GroupNorm`` they normalize with and the
``silu`` they activate with. Images are channels-last; every layer respects its dtype
policy, and normalization statistics are taken in float32 under mixed precision.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kdiff import checks, kernels
from kdiff.kernels.normalization import silu
from kdiff.models.layers._common import (
    PACKAGE,
    check_channels,
    check_rank,
    check_rate,
    conv_layer,
    per_example,
)
from kdiff.models.layers.resampling import (
    avg_pool2,
    fir_downsample,
    fir_upsample,
    resampled_shape,
    upsample_nearest,
)

__all__ = ["silu", "GroupNorm", "ResBlock", "AttentionBlock"]  # also GN_EPSILON, attention_heads: UNet's

GN_EPSILON = 1e-6  # tf.contrib.layers.group_norm, as in the DDPM reference code


@keras.saving.register_keras_serializable(package=PACKAGE)
class GroupNorm(keras.layers.GroupNormalization):
    """``keras.layers.GroupNormalization`` for channels-last images, fused with the SiLU
    that follows it where asked.

    The same layer — the same weights (``gamma``, ``beta``), config and result, to float32
    round-off — computed by ``kdiff.kernels.group_norm``: one fused CPU kernel forward and
    one backward where it can run, else per-channel sums averaged within each group by
    two small constant matmuls (both several times faster than Keras' reductions over a
    ``[..., groups, channels / groups]`` view; timings in docs/benchmarks.md). Statistics
    are taken in float32 under mixed precision. Other axes use Keras' implementation.

    Call arguments:
        inputs: ``[batch, ..., channels]``.
        activation: None, or "silu" for ``silu(GroupNorm(inputs))`` in one pass.
    """

    def call(self, inputs, activation=None):
        if self.axis not in (-1, len(inputs.shape) - 1):
            out = super().call(inputs)
            return out if activation is None else silu(out)
        return kernels.group_norm(
            inputs,
            self.gamma if self.scale else None,
            self.beta if self.center else None,
            self.groups,
            self.epsilon,
            activation,
        )


def _group_norm(groups, name, dtype, epsilon=GN_EPSILON):
    return GroupNorm(groups=groups, epsilon=epsilon, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResBlock(keras.layers.Layer):
    """Residual block of the DDPM / Improved-DDPM U-Net.

    ``h = conv3×3(SiLU(GroupNorm(x)))``, plus the projection ``Dense(SiLU(emb))`` of the
    time (and class) embedding; then ``conv3×3(dropout(SiLU(GroupNorm(h))))`` with the last
    convolution zero-initialized (as in DDPM, so a block starts as its skip path); the
    skip path is ``x`` itself or a 1×1 (``conv_shortcut``: 3×3) convolution when the
    channels change.

    With ``adaptive_norm=True`` the embedding modulates the second normalization instead
    (AdaGN, eq. 17 of the survey): ``y_s·GroupNorm(h) + y_b`` with ``[y_s − 1, y_b]``
    projected from the embedding — guided-diffusion's ``norm(h)·(1 + scale) + shift``.
    ``up`` / ``down`` resample inside the block, BigGAN style (nearest upsampling or 2×2
    average pooling of both paths, after the first normalization; with ``fir=True`` the
    (1, 3, 3, 1) FIR filter of score_sde's NCSN++, ``fir_upsample`` / ``fir_downsample``),
    and ``skip_rescale`` divides the sum by √2.

    Args:
        out_channels: output channels; None keeps the input's.
        dropout: dropout rate before the last convolution.
        adaptive_norm: AdaGN scale-shift conditioning instead of adding the embedding.
        up: upsample ×2 inside the block.
        down: downsample ×2 inside the block.
        skip_rescale: divide the output by √2.
        conv_shortcut: a 3×3 instead of a 1×1 convolution on the skip path when the
            channels change.
        groups: GroupNorm groups (32 in the reference models) of the first normalization.
        groups_out: groups of the second normalization; None for ``groups`` (score_sde's
            NCSN++ takes min(channels / 4, 32) of each norm's own channels).
        epsilon: the GroupNorms' ε (1e-6 as in DDPM's TensorFlow code).
        fir: resample (``up`` / ``down``) with the (1, 3, 3, 1) FIR filter.
        project_skip: a 1×1 convolution on the skip path even when the channels do not
            change (NCSN++'s resampling blocks).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, channels]``.
        emb: optional ``[batch, emb_dim]`` embedding (time, plus class); required if the
            block was built with one.
        training: enables dropout.

    Returns:
        ``[batch, height', width', out_channels]`` (height' = 2·height with ``up``,
        height / 2 with ``down``).
    """

    def __init__(self, out_channels=None, dropout=0.0, adaptive_norm=False, up=False, down=False,
                 skip_rescale=False, conv_shortcut=False, groups=32, groups_out=None,
                 epsilon=GN_EPSILON, fir=False, project_skip=False, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = None if out_channels is None else checks.positive_int(
            out_channels, "out_channels")
        self.dropout = check_rate(dropout)
        self.adaptive_norm = bool(adaptive_norm)
        self.up = bool(up)
        self.down = bool(down)
        if self.up and self.down:
            raise ValueError("Expected at most one of `up` and `down`. Received: up=True, down=True")
        self.skip_rescale = bool(skip_rescale)
        self.conv_shortcut = bool(conv_shortcut)
        self.groups = checks.positive_int(groups, "groups")
        self.groups_out = None if groups_out is None else checks.positive_int(
            groups_out, "groups_out")
        self.epsilon = checks.positive(epsilon, "epsilon")
        self.fir = bool(fir)
        self.project_skip = bool(project_skip)
        out_groups = self.groups_out or self.groups
        if self.out_channels is not None and self.out_channels % out_groups:
            raise ValueError(
                f"Expected `out_channels` divisible by groups_out={out_groups}. "
                f"Received: out_channels={self.out_channels}"
            )

    def build(self, inputs_shape, emb_shape=None):
        check_channels(inputs_shape, self.groups, "inputs", self.name)
        in_ch = inputs_shape[-1]
        out_ch = self.out_channels or in_ch
        check_channels(tuple(inputs_shape[:-1]) + (out_ch,), self.groups_out or self.groups,
                        "output", self.name)
        dt = self.dtype_policy
        self.norm1 = _group_norm(self.groups, "norm1", dt, self.epsilon)
        self.conv1 = conv_layer(out_ch, 3, "conv1", dt)
        self.norm2 = _group_norm(self.groups_out or self.groups, "norm2", dt, self.epsilon)
        self.drop = keras.layers.Dropout(self.dropout, dtype=dt)
        self.conv2 = conv_layer(out_ch, 3, "conv2", dt, zero=True)
        self.emb_proj = None
        if emb_shape is not None:
            units = 2 * out_ch if self.adaptive_norm else out_ch
            self.emb_proj = keras.layers.Dense(units, name="emb_proj", dtype=dt)
            self.emb_proj.build(tuple(emb_shape))
        self.skip = None
        if in_ch != out_ch or self.project_skip:
            self.skip = conv_layer(out_ch, 3 if self.conv_shortcut else 1, "skip", dt)
        shape = tuple(inputs_shape)
        self.norm1.build(shape)
        if self.skip is not None:
            self.skip.build(resampled_shape(shape, self.up, self.down))
        shape = resampled_shape(shape, self.up, self.down)
        self.conv1.build(shape)
        shape = shape[:-1] + (out_ch,)
        self.norm2.build(shape)
        self.conv2.build(shape)

    def call(self, inputs, emb=None, training=None):
        check_rank(inputs, 4, "inputs", self.name)
        if (emb is None) != (self.emb_proj is None):
            raise ValueError(
                f"Expected `emb` {'to be given' if self.emb_proj is not None else 'to be None'} "
                f"in {self.name} (it was built {'with' if self.emb_proj is not None else 'without'} "
                "an embedding). Received: "
                + ("emb=None" if emb is None else f"emb.shape={list(emb.shape)}")
            )
        x = inputs
        h = self.norm1(x, activation="silu")
        if self.up:
            up = fir_upsample if self.fir else upsample_nearest
            h, x = up(h), up(x)
        elif self.down:
            down = fir_downsample if self.fir else avg_pool2
            h, x = down(h), down(x)
        h = self.conv1(h)
        if emb is not None:
            e = per_example(self.emb_proj(silu(emb)))
            if self.adaptive_norm:
                scale, shift = ops.split(e, 2, axis=-1)
                h = silu(self.norm2(h) * (1.0 + scale) + shift)
            else:
                h = self.norm2(h + e, activation="silu")
        else:
            h = self.norm2(h, activation="silu")
        h = self.conv2(self.drop(h, training=training))
        if self.skip is not None:
            x = self.skip(x)
        out = x + h
        if self.skip_rescale:
            out = out * (1.0 / math.sqrt(2.0))
        return out

    def compute_output_shape(self, inputs_shape, emb_shape=None):
        shape = resampled_shape(tuple(inputs_shape), self.up, self.down)
        return shape[:-1] + (self.out_channels or inputs_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            out_channels=self.out_channels, dropout=self.dropout, adaptive_norm=self.adaptive_norm,
            up=self.up, down=self.down, skip_rescale=self.skip_rescale,
            conv_shortcut=self.conv_shortcut, groups=self.groups, groups_out=self.groups_out,
            epsilon=self.epsilon, fir=self.fir, project_skip=self.project_skip,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionBlock(keras.layers.Layer):
    """Multi-head self-attention over the H·W positions, with a residual connection.

    ``x + proj(attention(qkv(GroupNorm(x))))`` (DDPM's ``attn_block``; with several heads,
    guided-diffusion's ``AttentionBlock``). ``qkv`` and ``proj`` are 1×1 convolutions
    (dense layers on the channel axis); ``proj`` is zero-initialized. Softmax runs in
    float32.

    Args:
        num_heads: number of heads, used when ``head_channels`` is None.
        head_channels: channels per head (64 in Dhariwal & Nichol); the number of heads is
            then channels // head_channels.
        skip_rescale: divide the output by √2 (as score_sde's NCSN++ does).
        groups: GroupNorm groups.
        epsilon: the GroupNorm's ε.
        norm: normalize the input first (False: diffusers' middle attention of
            ``resnet_time_scale_shift="scale_shift"`` U-Nets has no GroupNorm).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, channels]``.

    Returns:
        A tensor shaped like ``inputs``.
    """

    def __init__(self, num_heads=1, head_channels=None, skip_rescale=False, groups=32,
                 epsilon=GN_EPSILON, norm=True, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = checks.positive_int(num_heads, "num_heads")
        self.head_channels = None if head_channels is None else checks.positive_int(
            head_channels, "head_channels")
        self.skip_rescale = bool(skip_rescale)
        self.groups = checks.positive_int(groups, "groups")
        self.epsilon = checks.positive(epsilon, "epsilon")
        self.use_norm = bool(norm)

    def heads_for(self, channels):
        """The number of heads for ``channels`` input channels (raises if they don't split)."""
        return attention_heads(channels, self.num_heads, self.head_channels)

    def build(self, input_shape):
        check_channels(input_shape, self.groups if self.use_norm else None, "inputs", self.name)
        channels = input_shape[-1]
        self._heads = self.heads_for(channels)
        dt = self.dtype_policy
        self.norm = _group_norm(self.groups, "norm", dt, self.epsilon) if self.use_norm else None
        self.qkv = keras.layers.Dense(3 * channels, name="qkv", dtype=dt)
        self.proj = keras.layers.Dense(channels, kernel_initializer="zeros", name="proj", dtype=dt)
        if self.norm is not None:
            self.norm.build(tuple(input_shape))
        self.qkv.build(tuple(input_shape))
        self.proj.build(tuple(input_shape))

    def call(self, inputs):
        check_rank(inputs, 4, "inputs", self.name)
        x = inputs
        channels = x.shape[-1]
        heads = self._heads
        d = channels // heads
        _, height, width, _ = ops.shape(x)  # static sizes as ints: reshapes without shape ops
        h = self.norm(x) if self.norm is not None else x
        # The projections on [batch·positions, channels] rows are plain MatMuls (Keras'
        # Dense on a rank-4 input is a tensordot with its shape arithmetic), and the
        # attention two batched matmuls: fewer graph ops (docs/benchmarks.md).
        # q, k and v are split off as columns (a Split, whose gradient is a concat): indexing
        # a stacked [3, …] tensor is three StridedSlices, whose gradients each write a zero
        # tensor of the stack's size.
        q, k, v = (
            ops.transpose(ops.reshape(part, (-1, height * width, heads, d)), (0, 2, 1, 3))  # [batch, heads, positions, d]
            for part in ops.split(self.qkv(ops.reshape(h, (-1, channels))), 3, axis=-1)
        )
        logits = ops.matmul(q, ops.transpose(k * (1.0 / math.sqrt(d)), (0, 1, 3, 2)))
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), v.dtype)
        h = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))  # [batch, positions, heads, d]
        h = ops.reshape(self.proj(ops.reshape(h, (-1, channels))), (-1, height, width, channels))
        out = x + h
        if self.skip_rescale:
            out = out * (1.0 / math.sqrt(2.0))
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, head_channels=self.head_channels,
                      skip_rescale=self.skip_rescale, groups=self.groups, epsilon=self.epsilon,
                      norm=self.use_norm)
        return config


def attention_heads(channels, num_heads, head_channels):
    """The number of attention heads for ``channels`` (``AttentionBlock``'s and ``UNet``'s rule).

    Args:
        channels: the attention's channels.
        num_heads: the heads, used when ``head_channels`` is None.
        head_channels: channels per head, or None.

    Returns:
        The number of heads; raises when the channels do not split evenly.
    """
    if head_channels is not None:
        if channels % head_channels:
            raise ValueError(
                f"Expected `head_channels` to divide the attention channels ({channels}). "
                f"Received: head_channels={head_channels}"
            )
        return channels // head_channels
    if channels % num_heads:
        raise ValueError(
            f"Expected `num_heads` to divide the attention channels ({channels}). "
            f"Received: num_heads={num_heads}"
        )
    return num_heads
