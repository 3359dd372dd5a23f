"""Building blocks of kdiff's networks: embeddings, residual blocks, attention, norms.

Two families of layers live here:

* the DDPM / Improved-DDPM U-Net blocks (Ho et al. 2020, ``diffusion_tf/models/unet.py``;
  Dhariwal & Nichol 2021, ``guided_diffusion/unet.py``): ``SinusoidalEmbedding``,
  ``GaussianFourierFeatures`` (score_sde's ``GaussianFourierProjection``), ``ResBlock``,
  ``AttentionBlock``, ``Downsample``, ``Upsample``;
* the NCSN RefineNet blocks (Song & Ermon 2019, ``ncsn/models/cond_refinenet_dilated.py``):
  ``ConditionalInstanceNorm2dPlus``, ``ConditionalResidualBlock``, ``CondRCUBlock``,
  ``CondCRPBlock``, ``CondMSFBlock``, ``CondRefineBlock``.

Images are channels-last, ``[batch, height, width, channels]``. Every layer respects its
dtype policy: under ``"mixed_bfloat16"`` / ``"mixed_float16"`` it computes in the compute
dtype; embeddings of timesteps and noise levels are computed in float32 (a bfloat16 t of
999 would read 1000) and only then cast; normalization statistics are taken in float32.
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
from keras import ops

from kdiff import _checks

__all__ = [
    "silu",
    "GroupNorm",
    "SinusoidalEmbedding",
    "GaussianFourierFeatures",
    "ResBlock",
    "AttentionBlock",
    "Downsample",
    "Upsample",
    "fir_downsample",
    "fir_upsample",
    "ConditionalInstanceNorm2dPlus",
    "ConditionalResidualBlock",
    "CondRCUBlock",
    "CondCRPBlock",
    "CondMSFBlock",
    "CondRefineBlock",
]

_PACKAGE = "kdiff.models"  # not "kdiff": kdiff.diffusion registers its own NCSN
_GN_EPSILON = 1e-6  # tf.contrib.layers.group_norm, as in the DDPM reference code
_IN_EPSILON = 1e-5  # torch.nn.InstanceNorm2d, as in the NCSN reference code


# --------------------------------------------------------------------------- helpers


def silu(x):
    """x·σ(x) (SiLU / swish), written out.

    TensorFlow's ``tf.nn.silu`` (which ``keras.activations.silu`` calls) is a
    ``tf.custom_gradient``: a SavedModel then either traces a gradient function for every
    activation (half the time of an export) or, without them, loads with wrong gradients
    for the likelihood's divergence. Written out, its gradient is TensorFlow's own.

    Args:
        x: a tensor.

    Returns:
        x·σ(x), like x.
    """
    return x * ops.sigmoid(x)


def _check_rank(x, rank, name, layer):
    if len(x.shape) != rank:
        raise ValueError(
            f"Expected `{name}` of rank {rank} in {layer}"
            + (" ([batch, height, width, channels])" if rank == 4 else "")
            + f". Received: {name}.shape={list(x.shape)}"
        )


def _check_channels(shape, expected, name, layer):
    if shape[-1] is None:
        raise ValueError(
            f"Expected `{name}` with a known channel (last) dimension in {layer}. "
            f"Received: {name}.shape={list(shape)}"
        )
    if expected is not None and shape[-1] % expected:
        raise ValueError(
            f"Expected the channels of `{name}` divisible by {expected} (the GroupNorm "
            f"groups) in {layer}. Received: {name}.shape={list(shape)}"
        )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GroupNorm(keras.layers.GroupNormalization):
    """``keras.layers.GroupNormalization`` with the statistics taken per channel first.

    The same layer — the same weights (``gamma``, ``beta``), config and result, to float32
    round-off — computed for channels-last images ``[batch, height, width, channels]`` as
    per-channel sums over the spatial axes, averaged within each group by two small
    constant matmuls (none when each group is one channel): TensorFlow's reductions over
    the leading spatial axes are several times faster than Keras' reduction over a
    ``[..., groups, channels / groups]`` view, and the sums' gradients take far fewer ops
    than a dynamic-shape mean's (op counts in docs/benchmarks.md). The variance is the
    centered (two-pass) one, as Keras computes it; statistics are taken in float32 under
    mixed precision. Other ranks and axes use Keras' implementation.
    """

    def call(self, inputs):
        if len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return super().call(inputs)
        x = ops.cast(inputs, "float32")
        mean = self._group_mean(x)
        centered = x - mean
        scale = ops.rsqrt(self._group_mean(ops.square(centered)) + self.epsilon)
        if self.scale:
            scale = scale * ops.cast(self.gamma, "float32")
        out = centered * scale
        if self.center:
            out = out + ops.cast(self.beta, "float32")
        return ops.cast(out, self.compute_dtype)

    def _group_mean(self, x):
        """The mean of ``x`` ``[batch, height, width, channels]`` over the spatial axes and
        each group's channels, per channel: ``[batch, 1, 1, channels]``."""
        height, width, channels = x.shape[1:]
        size = channels // self.groups  # channels per group
        if height is None or width is None:  # an unknown spatial size: a dynamic divisor
            total, divisor = ops.mean(x, axis=(1, 2), keepdims=size == 1), 1
        else:
            total, divisor = ops.sum(x, axis=(1, 2), keepdims=size == 1), height * width
        if size == 1:
            return total if divisor == 1 else total * (1.0 / divisor)
        members = np.repeat(np.eye(self.groups, dtype="float32"), size, axis=0)  # [channels, groups]
        group = ops.matmul(total, members * np.float32(1.0 / (size * divisor)))  # [batch, groups]
        return ops.reshape(ops.matmul(group, members.T), (-1, 1, 1, channels))


def _group_norm(groups, name, dtype, epsilon=_GN_EPSILON):
    return GroupNorm(groups=groups, epsilon=epsilon, name=name, dtype=dtype)


def _conv(filters, kernel_size, name, dtype, strides=1, dilation=1, use_bias=True, zero=False,
          initializer="glorot_uniform"):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        dilation_rate=dilation,
        use_bias=use_bias,
        kernel_initializer="zeros" if zero else initializer,
        name=name,
        dtype=dtype,
    )


def _upsample_nearest(x):
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


def _avg_pool2(x):
    return ops.average_pool(x, pool_size=2, strides=2, padding="valid")


_FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # score_sde's and StyleGAN2's resampling filter


def _fir_kernel(channels, gain, dtype):
    """The separable (1, 3, 3, 1) filter as a depthwise kernel [4, 4, channels, 1], sum = gain."""
    taps = np.asarray(_FIR_TAPS, np.float64)
    kernel = np.outer(taps, taps)
    kernel = kernel * (gain / kernel.sum())
    kernel = np.broadcast_to(kernel[:, :, None, None], (4, 4, channels, 1))
    return ops.cast(np.ascontiguousarray(kernel, np.float32), dtype)


def _check_fir_input(x, name):
    if len(x.shape) != 4 or x.shape[-1] is None:
        raise ValueError(
            f"Expected `x` of rank 4 with a known channel dimension in {name}. "
            f"Received: x.shape={list(x.shape)}"
        )


def fir_downsample(x):
    """Halves height and width with the FIR filter (1, 3, 3, 1) (score_sde's ``downsample_2d``).

    Each output pixel is the (1, 3, 3, 1)ᵀ(1, 3, 3, 1) / 64 weighted sum of the 4×4 input
    window around it: the input padded by one zero on every side, filtered, and every second
    row and column kept.

    Args:
        x: ``[batch, height, width, channels]`` with even height and width.

    Returns:
        ``[batch, height / 2, width / 2, channels]``, in ``x``'s dtype.
    """
    _check_fir_input(x, "fir_downsample")
    kernel = _fir_kernel(x.shape[-1], 1.0, x.dtype)
    x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return ops.depthwise_conv(x, kernel, strides=2, padding="valid")


def fir_upsample(x):
    """Doubles height and width with the FIR filter (1, 3, 3, 1) (score_sde's ``upsample_2d``).

    The input is spread onto the even rows and columns of a zero image twice its size,
    padded (2 before, 1 after) and filtered with the (1, 3, 3, 1)ᵀ(1, 3, 3, 1) kernel scaled
    to sum 4 (the upsampling factor squared, so that a constant image stays constant).

    Args:
        x: ``[batch, height, width, channels]``.

    Returns:
        ``[batch, 2·height, 2·width, channels]``, in ``x``'s dtype.
    """
    _check_fir_input(x, "fir_upsample")
    channels = x.shape[-1]
    shape = ops.shape(x)
    batch, height, width = shape[0], shape[1], shape[2]
    zeros = ops.zeros_like(x)
    rows = ops.stack([x, zeros], axis=2)  # [b, h, 2, w, c]
    rows = ops.reshape(rows, (batch, 2 * height, width, channels))
    cols = ops.stack([rows, ops.zeros_like(rows)], axis=3)  # [b, 2h, w, 2, c]
    stuffed = ops.reshape(cols, (batch, 2 * height, 2 * width, channels))
    stuffed = ops.pad(stuffed, [[0, 0], [2, 1], [2, 1], [0, 0]])
    return ops.depthwise_conv(stuffed, _fir_kernel(channels, 4.0, x.dtype), strides=1, padding="valid")


def _torch_uniform():
    """PyTorch's default conv initializer (kaiming_uniform, a=√5): U(±1/√fan_in)."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


def _bilinear_matrix(size_in, size_out):
    """[size_out, size_in] matrix of bilinear interpolation with aligned corners."""
    m = np.zeros((size_out, size_in), dtype=np.float32)
    if size_in == 1 or size_out == 1:
        m[:, 0] = 1.0
        return m
    pos = np.arange(size_out) * (size_in - 1) / (size_out - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, size_in - 1)
    hi = np.clip(lo + 1, 0, size_in - 1)
    frac = pos - lo
    m[np.arange(size_out), lo] += 1.0 - frac
    m[np.arange(size_out), hi] += frac
    return m


def resize_bilinear_align_corners(x, size):
    """Bilinear resize with ``align_corners=True`` (``F.interpolate`` of the NCSN code).

    Written as two small matrix products so that it runs in any float dtype and compiles
    with XLA; needs static spatial sizes.

    Args:
        x: ``[batch, height, width, channels]`` tensor with static height and width.
        size: ``(height, width)`` of the output.

    Returns:
        The resized tensor, in ``x``'s dtype.
    """
    h, w = x.shape[1], x.shape[2]
    if (h, w) == tuple(size):
        return x
    mh = ops.cast(_bilinear_matrix(h, size[0]), x.dtype)
    mw = ops.cast(_bilinear_matrix(w, size[1]), x.dtype)
    x = ops.einsum("Hh,bhwc->bHwc", mh, x)
    return ops.einsum("Ww,bhwc->bhWc", mw, x)


def image_output_shape(x_shape, image_size, channels):
    """A network's output shape ``(batch, image_size, image_size, channels)``, from the
    shape of its image input — or of its first input, when Keras passes all of them.

    Args:
        x_shape: the image input's shape, or a list of the inputs' shapes.
        image_size: the output's height and width.
        channels: the output's channels.

    Returns:
        A shape tuple.
    """
    if isinstance(x_shape, (list, tuple)) and x_shape and isinstance(x_shape[0], (list, tuple)):
        x_shape = x_shape[0]
    return (x_shape[0], image_size, image_size, channels)


def _per_example(values):
    """``[batch, channels]`` → ``[batch, 1, 1, channels]``, to broadcast over an image.

    A reshape rather than ``values[:, None, None, :]``: the indexing is a ``StridedSlice``,
    whose gradient (``StridedSliceGrad``) cost about a millisecond a call on this project's
    CPU, a tenth of the default run's train step; a reshape's gradient is a reshape.

    Args:
        values: a rank-2 tensor.

    Returns:
        The same values, rank 4.
    """
    return ops.reshape(values, (-1, 1, 1, values.shape[-1]))


def _as_labels(labels):
    labels = ops.convert_to_tensor(labels)
    if "int" not in str(labels.dtype):
        labels = ops.cast(labels, "int32")
    return ops.reshape(labels, (-1,))


# --------------------------------------------------------------------------- embeddings


def _sin_cos(args):
    """[sin(args), cos(args)] along the last axis: both embeddings' features."""
    return ops.concatenate([ops.sin(args), ops.cos(args)], axis=-1)


def _embedding_shape(input_shape, dim):
    return (input_shape[0] if len(input_shape) else 1, dim)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SinusoidalEmbedding(keras.layers.Layer):
    """Sinusoidal timestep embedding of DDPM (``nn.get_timestep_embedding``).

    ``emb[:, i] = sin(t·f_i)`` and ``emb[:, half + i] = cos(t·f_i)`` with
    ``f_i = exp(−log(max_period)·i / (half − freq_shift))``, ``half = dim // 2``; an odd
    ``dim`` is zero-padded. ``freq_shift=1`` is DDPM's (and the default); diffusers'
    ``Timesteps`` exposes it as ``freq_shift`` (``downscale_freq_shift``) together with
    ``flip_sin_to_cos`` (cosines first). Computed in float32 and cast to the layer's
    compute dtype.

    Args:
        dim: size of the embedding, ≥ 4.
        max_period: the longest period, 10000 in DDPM (and in the Transformer).
        flip_sin_to_cos: put the cosines first (``[cos, sin]``).
        freq_shift: the shift of the frequency denominator, a number < ``dim // 2``
            (1 in DDPM, 0 in guided-diffusion and most diffusers models).
        **kwargs: base layer arguments (``name``, ``dtype``).

    Call arguments:
        t: int or float tensor ``[batch]`` (a scalar is read as a batch of one).

    Returns:
        A ``[batch, dim]`` tensor in the compute dtype.
    """

    def __init__(self, dim, max_period=10000, flip_sin_to_cos=False, freq_shift=1, **kwargs):
        kwargs.setdefault("autocast", False)  # keep a float t in float32
        super().__init__(**kwargs)
        self.dim = _checks.int_in_range(dim, "dim", 4, None)
        self.max_period = _checks.positive(max_period, "max_period")
        if self.max_period <= 1:
            raise ValueError(f"Expected `max_period` > 1. Received: max_period={max_period!r}")
        self.flip_sin_to_cos = bool(flip_sin_to_cos)
        if isinstance(freq_shift, bool) or not isinstance(freq_shift, numbers.Real) or not (
                freq_shift < self.dim // 2):
            raise ValueError(
                f"Expected `freq_shift` a number below dim // 2 = {self.dim // 2}. "
                f"Received: freq_shift={freq_shift!r}"
            )
        self.freq_shift = freq_shift

    def call(self, t):
        t = ops.reshape(ops.cast(ops.convert_to_tensor(t), "float32"), (-1,))
        half = self.dim // 2
        freqs = ops.exp(
            ops.arange(half, dtype="float32")
            * (-math.log(self.max_period) / (half - self.freq_shift))
        )
        emb = _sin_cos(t[:, None] * freqs[None, :])
        if self.flip_sin_to_cos:
            emb = ops.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
        if self.dim % 2:
            emb = ops.pad(emb, [[0, 0], [0, 1]])
        return ops.cast(emb, self.compute_dtype)

    def compute_output_shape(self, t_shape):
        return _embedding_shape(t_shape, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, max_period=self.max_period,
                      flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GaussianFourierFeatures(keras.layers.Layer):
    """Random Fourier features of a scalar (score_sde's ``GaussianFourierProjection``).

    ``emb = [sin(2π·v·W), cos(2π·v·W)]`` with fixed ``W ~ N(0, scale²)`` of size ``dim // 2``
    (a non-trainable weight, so it is saved with the model). The value is used as given:
    score_sde feeds ``log σ`` for VE models and ``t`` for VP ones — that choice belongs to
    the caller. Computed in float32 and cast to the compute dtype.

    Args:
        dim: size of the embedding, even, ≥ 2.
        scale: standard deviation of the random frequencies (16 in score_sde).
        **kwargs: base layer arguments.

    Call arguments:
        values: float tensor ``[batch]`` (continuous t, σ or log σ).

    Returns:
        A ``[batch, dim]`` tensor in the compute dtype.
    """

    def __init__(self, dim, scale=16.0, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.dim = _checks.int_in_range(dim, "dim", 2, None)
        if self.dim % 2:
            raise ValueError(f"Expected `dim` to be even. Received: dim={dim}")
        self.scale = _checks.positive(scale, "scale")

    def build(self, input_shape=None):
        self.frequencies = self.add_weight(
            name="frequencies",
            shape=(self.dim // 2,),
            initializer=keras.initializers.RandomNormal(stddev=self.scale),
            trainable=False,
            dtype="float32",
        )

    def call(self, values):
        v = ops.reshape(ops.cast(ops.convert_to_tensor(values), "float32"), (-1,))
        w = ops.cast(self.frequencies, "float32")
        emb = _sin_cos(v[:, None] * w[None, :] * (2.0 * math.pi))
        return ops.cast(emb, self.compute_dtype)

    def compute_output_shape(self, values_shape):
        return _embedding_shape(values_shape, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, scale=self.scale)
        return config


# --------------------------------------------------------------------------- U-Net blocks


@keras.saving.register_keras_serializable(package=_PACKAGE)
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
                 epsilon=_GN_EPSILON, fir=False, project_skip=False, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = None if out_channels is None else _checks.positive_int(
            out_channels, "out_channels")
        self.dropout = _check_rate(dropout)
        self.adaptive_norm = bool(adaptive_norm)
        self.up = bool(up)
        self.down = bool(down)
        if self.up and self.down:
            raise ValueError("Expected at most one of `up` and `down`. Received: up=True, down=True")
        self.skip_rescale = bool(skip_rescale)
        self.conv_shortcut = bool(conv_shortcut)
        self.groups = _checks.positive_int(groups, "groups")
        self.groups_out = None if groups_out is None else _checks.positive_int(
            groups_out, "groups_out")
        self.epsilon = _checks.positive(epsilon, "epsilon")
        self.fir = bool(fir)
        self.project_skip = bool(project_skip)
        out_groups = self.groups_out or self.groups
        if self.out_channels is not None and self.out_channels % out_groups:
            raise ValueError(
                f"Expected `out_channels` divisible by groups_out={out_groups}. "
                f"Received: out_channels={self.out_channels}"
            )

    def build(self, inputs_shape, emb_shape=None):
        _check_channels(inputs_shape, self.groups, "inputs", self.name)
        in_ch = inputs_shape[-1]
        out_ch = self.out_channels or in_ch
        _check_channels(tuple(inputs_shape[:-1]) + (out_ch,), self.groups_out or self.groups,
                        "output", self.name)
        dt = self.dtype_policy
        self.norm1 = _group_norm(self.groups, "norm1", dt, self.epsilon)
        self.conv1 = _conv(out_ch, 3, "conv1", dt)
        self.norm2 = _group_norm(self.groups_out or self.groups, "norm2", dt, self.epsilon)
        self.drop = keras.layers.Dropout(self.dropout, dtype=dt)
        self.conv2 = _conv(out_ch, 3, "conv2", dt, zero=True)
        self.emb_proj = None
        if emb_shape is not None:
            units = 2 * out_ch if self.adaptive_norm else out_ch
            self.emb_proj = keras.layers.Dense(units, name="emb_proj", dtype=dt)
            self.emb_proj.build(tuple(emb_shape))
        self.skip = None
        if in_ch != out_ch or self.project_skip:
            self.skip = _conv(out_ch, 3 if self.conv_shortcut else 1, "skip", dt)
        shape = tuple(inputs_shape)
        self.norm1.build(shape)
        if self.skip is not None:
            self.skip.build(_resampled(shape, self.up, self.down))
        shape = _resampled(shape, self.up, self.down)
        self.conv1.build(shape)
        shape = shape[:-1] + (out_ch,)
        self.norm2.build(shape)
        self.conv2.build(shape)

    def call(self, inputs, emb=None, training=None):
        _check_rank(inputs, 4, "inputs", self.name)
        if (emb is None) != (self.emb_proj is None):
            raise ValueError(
                f"Expected `emb` {'to be given' if self.emb_proj is not None else 'to be None'} "
                f"in {self.name} (it was built {'with' if self.emb_proj is not None else 'without'} "
                "an embedding). Received: "
                + ("emb=None" if emb is None else f"emb.shape={list(emb.shape)}")
            )
        x = inputs
        h = silu(self.norm1(x))
        if self.up:
            up = fir_upsample if self.fir else _upsample_nearest
            h, x = up(h), up(x)
        elif self.down:
            down = fir_downsample if self.fir else _avg_pool2
            h, x = down(h), down(x)
        h = self.conv1(h)
        if emb is not None:
            e = _per_example(self.emb_proj(silu(emb)))
            if self.adaptive_norm:
                scale, shift = ops.split(e, 2, axis=-1)
                h = self.norm2(h) * (1.0 + scale) + shift
            else:
                h = self.norm2(h + e)
        else:
            h = self.norm2(h)
        h = silu(h)
        h = self.conv2(self.drop(h, training=training))
        if self.skip is not None:
            x = self.skip(x)
        out = x + h
        if self.skip_rescale:
            out = out * (1.0 / math.sqrt(2.0))
        return out

    def compute_output_shape(self, inputs_shape, emb_shape=None):
        shape = _resampled(tuple(inputs_shape), self.up, self.down)
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


def _check_rate(dropout):
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"Expected `dropout` in [0, 1). Received: dropout={dropout!r}")
    return float(dropout)


def _resampled(shape, up, down):
    def scale(n):
        if n is None:
            return None
        return n * 2 if up else (n // 2 if down else n)

    return (shape[0], scale(shape[1]), scale(shape[2])) + tuple(shape[3:])


@keras.saving.register_keras_serializable(package=_PACKAGE)
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
                 epsilon=_GN_EPSILON, norm=True, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = _checks.positive_int(num_heads, "num_heads")
        self.head_channels = None if head_channels is None else _checks.positive_int(
            head_channels, "head_channels")
        self.skip_rescale = bool(skip_rescale)
        self.groups = _checks.positive_int(groups, "groups")
        self.epsilon = _checks.positive(epsilon, "epsilon")
        self.use_norm = bool(norm)

    def heads_for(self, channels):
        """The number of heads for ``channels`` input channels (raises if they don't split)."""
        return _heads_for(channels, self.num_heads, self.head_channels)

    def build(self, input_shape):
        _check_channels(input_shape, self.groups if self.use_norm else None, "inputs", self.name)
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
        _check_rank(inputs, 4, "inputs", self.name)
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


def _heads_for(channels, num_heads, head_channels):
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


class _Resample(keras.layers.Layer):
    """What ``Downsample`` and ``Upsample`` share: an optional 3×3 convolution."""

    def __init__(self, with_conv=True, out_channels=None, **kwargs):
        super().__init__(**kwargs)
        self.with_conv = bool(with_conv)
        self.out_channels = None if out_channels is None else _checks.positive_int(
            out_channels, "out_channels")
        if not self.with_conv and self.out_channels is not None:
            raise ValueError(
                "Expected `out_channels` None without a convolution. "
                f"Received: with_conv=False, out_channels={out_channels}"
            )

    def get_config(self):
        config = super().get_config()
        config.update(with_conv=self.with_conv, out_channels=self.out_channels)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Downsample(_Resample):
    """Halves height and width: a 3×3 convolution with stride 2, or 2×2 average pooling.

    Args:
        with_conv: use the strided convolution (DDPM's default) rather than pooling.
        out_channels: output channels of the convolution; None keeps the input's.
        padding: the convolution's zero padding: 0 pads one row and column after the
            image (DDPM's TensorFlow "SAME", diffusers' ``downsample_padding=0``), 1 pads
            one on every side (PyTorch's ``padding=1``, diffusers' default).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, channels]`` with even height and width.

    Returns:
        ``[batch, height / 2, width / 2, out_channels]``.
    """

    def __init__(self, with_conv=True, out_channels=None, padding=0, **kwargs):
        super().__init__(with_conv=with_conv, out_channels=out_channels, **kwargs)
        if padding not in (0, 1) or isinstance(padding, bool):
            raise ValueError(f"Expected `padding` 0 or 1. Received: padding={padding!r}")
        self.padding = int(padding)

    def build(self, input_shape):
        _check_channels(input_shape, None, "inputs", self.name)
        if self.with_conv:
            self.conv = keras.layers.Conv2D(
                self.out_channels or input_shape[-1], 3, strides=2,
                padding="same" if self.padding == 0 else "valid", name="conv",
                dtype=self.dtype_policy)
            shape = tuple(input_shape)
            if self.padding:
                shape = (shape[0],) + tuple(None if n is None else n + 2 for n in shape[1:3]) + (
                    shape[3],)
            self.conv.build(shape)

    def call(self, inputs):
        _check_rank(inputs, 4, "inputs", self.name)
        if not self.with_conv:
            return _avg_pool2(inputs)
        if self.padding:
            inputs = ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
        return self.conv(inputs)

    def compute_output_shape(self, input_shape):
        shape = _resampled(tuple(input_shape), False, True)
        return shape[:-1] + (self.out_channels or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Upsample(_Resample):
    """Doubles height and width: nearest-neighbour upsampling, then a 3×3 convolution.

    Args:
        with_conv: follow the upsampling with a 3×3 convolution (DDPM's default).
        out_channels: output channels of the convolution; None keeps the input's.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, channels]``.

    Returns:
        ``[batch, 2·height, 2·width, out_channels]``.
    """

    def build(self, input_shape):
        _check_channels(input_shape, None, "inputs", self.name)
        if self.with_conv:
            self.conv = _conv(self.out_channels or input_shape[-1], 3, "conv", self.dtype_policy)
            self.conv.build(_resampled(tuple(input_shape), True, False))

    def call(self, inputs):
        _check_rank(inputs, 4, "inputs", self.name)
        x = _upsample_nearest(inputs)
        return self.conv(x) if self.with_conv else x

    def compute_output_shape(self, input_shape):
        shape = _resampled(tuple(input_shape), True, False)
        return shape[:-1] + (self.out_channels or input_shape[-1],)



# --------------------------------------------------------------------------- NCSN blocks


def _cin_initializer(num_features, bias):
    """γ, α ~ N(1, 0.02) and β = 0, as in NCSN's ConditionalInstanceNorm2dPlus."""

    def init(shape, dtype=None):
        scales = keras.random.normal((shape[0], 2 * num_features), mean=1.0, stddev=0.02,
                                     dtype=dtype)
        if not bias:
            return scales
        return ops.concatenate([scales, ops.zeros((shape[0], num_features), dtype=dtype)], axis=1)

    return init


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConditionalInstanceNorm2dPlus(keras.layers.Layer):
    """NCSN's conditional instance normalization++ (Song & Ermon 2019, eq. 8 of the paper).

    With μ_k, s_k the spatial mean and standard deviation of channel k, and m, v the mean
    and (unbiased) variance of the μ_k over the channels:
    ``z_k = γ[y]_k · ((x_k − μ_k)/s_k + α[y]_k · (μ_k − m)/√(v + ε)) + β[y]_k``.
    γ, α, β are rows of a ``[num_classes, 3·num_features]`` embedding looked up by the
    class (noise-level) index y; γ, α start at N(1, 0.02) and β at 0.

    Args:
        num_features: channels of the input.
        num_classes: number of classes (noise levels).
        bias: learn β (the reference's default); without it the embedding holds γ, α.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, num_features]``.
        labels: int tensor ``[batch]`` of class indices in [0, num_classes).

    Returns:
        A tensor shaped like ``inputs``.
    """

    def __init__(self, num_features, num_classes, bias=True, **kwargs):
        kwargs.setdefault("autocast", False)  # computes in float32, full-precision γ, α, β
        super().__init__(**kwargs)
        self.num_features = _checks.int_in_range(num_features, "num_features", 2, None)
        self.num_classes = _checks.positive_int(num_classes, "num_classes")
        self.bias = bool(bias)

    def build(self, input_shape):
        if input_shape[-1] != self.num_features:
            raise ValueError(
                f"Expected `inputs` with num_features={self.num_features} channels in "
                f"{self.name}. Received: inputs.shape={list(input_shape)}"
            )
        width = (3 if self.bias else 2) * self.num_features
        self.embedding = self.add_weight(
            name="embedding",
            shape=(self.num_classes, width),
            initializer=_cin_initializer(self.num_features, self.bias),
        )

    def call(self, inputs, labels):
        _check_rank(inputs, 4, "inputs", self.name)
        x = ops.cast(inputs, "float32")
        params = ops.cast(ops.take(self.embedding, _as_labels(labels), axis=0), "float32")
        f = self.num_features
        parts = [_per_example(part) for part in ops.split(params, [f, 2 * f] if self.bias else [f], axis=-1)]
        gamma, alpha = parts[0], parts[1]
        mean, var = ops.moments(x, axes=(1, 2), keepdims=True)  # per example and channel
        h = (x - mean) * ops.rsqrt(var + _IN_EPSILON)
        means = ops.reshape(mean, (-1, f))
        m = ops.mean(means, axis=-1, keepdims=True)
        v = ops.sum(ops.square(means - m), axis=-1, keepdims=True) / (f - 1)  # torch.var
        means = (means - m) * ops.rsqrt(v + _IN_EPSILON)
        h = h + _per_example(means) * alpha
        out = gamma * h
        if self.bias:
            out = out + parts[2]
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_features=self.num_features, num_classes=self.num_classes, bias=self.bias)
        return config


def _check_resample(resample):
    if resample not in (None, "down"):
        raise ValueError(f"Expected `resample` None or 'down'. Received: resample={resample!r}")
    return resample


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConditionalResidualBlock(keras.layers.Layer):
    """NCSN's conditional residual block: CIN++ → ELU → conv → CIN++ → ELU → conv, + skip.

    Without dilation, ``resample="down"`` halves the resolution: the second convolution is
    followed by 2×2 mean pooling and the skip path is a 1×1 convolution + mean pooling
    (``ConvMeanPool``). With a dilation, every convolution is a dilated 3×3 one and the
    resolution is kept — the reference trades the later downsamplings for dilation.
    Convolutions have biases and PyTorch's default initialization.

    Args:
        output_dim: output channels.
        num_classes: number of noise levels for the conditional norms.
        resample: None or "down".
        dilation: None or the dilation rate of the 3×3 convolutions.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, input_dim]``.
        labels: int tensor ``[batch]`` of noise-level indices.

    Returns:
        ``[batch, height', width', output_dim]``; height' = height / 2 when
        ``resample="down"`` without dilation.
    """

    def __init__(self, output_dim, num_classes, resample=None, dilation=None, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = _checks.int_in_range(output_dim, "output_dim", 2, None)
        self.num_classes = _checks.positive_int(num_classes, "num_classes")
        self.resample = _check_resample(resample)
        self.dilation = None if dilation is None else _checks.positive_int(dilation, "dilation")

    def build(self, input_shape):
        _check_channels(input_shape, None, "inputs", self.name)
        in_dim, out_dim = input_shape[-1], self.output_dim
        dt, init = self.dtype_policy, _torch_uniform()
        dil = self.dilation or 1
        mid = in_dim if self.resample == "down" else out_dim
        self._pool = self.resample == "down" and self.dilation is None
        self.norm1 = ConditionalInstanceNorm2dPlus(in_dim, self.num_classes, name="norm1", dtype=dt)
        self.conv1 = _conv(mid, 3, "conv1", dt, dilation=dil, initializer=init)
        self.norm2 = ConditionalInstanceNorm2dPlus(mid, self.num_classes, name="norm2", dtype=dt)
        self.conv2 = _conv(out_dim, 3, "conv2", dt, dilation=dil, initializer=init)
        self.shortcut = None
        if in_dim != out_dim or self.resample is not None:
            size = 3 if self.dilation is not None else 1
            self.shortcut = _conv(out_dim, size, "shortcut", dt, dilation=dil, initializer=init)
            self.shortcut.build(tuple(input_shape))
        shape = tuple(input_shape)
        self.norm1.build(shape)
        self.conv1.build(shape)
        self.norm2.build(shape[:-1] + (mid,))
        self.conv2.build(shape[:-1] + (mid,))

    def call(self, inputs, labels):
        _check_rank(inputs, 4, "inputs", self.name)
        h = self.conv1(keras.activations.elu(self.norm1(inputs, labels)))
        h = self.conv2(keras.activations.elu(self.norm2(h, labels)))
        skip = inputs if self.shortcut is None else self.shortcut(inputs)
        if self._pool:
            h, skip = _avg_pool2(h), _avg_pool2(skip)
        return skip + h

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        pool = self.resample == "down" and self.dilation is None
        return _resampled(tuple(inputs_shape), False, pool)[:-1] + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, num_classes=self.num_classes,
                      resample=self.resample, dilation=self.dilation)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CondRCUBlock(keras.layers.Layer):
    """RefineNet's residual conv unit, conditional: blocks of (CIN++ → ELU → conv3×3)×stages.

    Each of ``n_blocks`` blocks applies ``n_stages`` times CIN++, ELU and a bias-free 3×3
    convolution, and adds its input.

    Args:
        n_blocks: residual blocks.
        n_stages: norm-act-conv stages per block.
        num_classes: number of noise levels.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, features]``.
        labels: int tensor ``[batch]``.

    Returns:
        A tensor shaped like ``inputs``.
    """

    def __init__(self, n_blocks, n_stages, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.n_blocks = _checks.positive_int(n_blocks, "n_blocks")
        self.n_stages = _checks.positive_int(n_stages, "n_stages")
        self.num_classes = _checks.positive_int(num_classes, "num_classes")

    def build(self, input_shape):
        _check_channels(input_shape, None, "inputs", self.name)
        features = input_shape[-1]
        dt, init = self.dtype_policy, _torch_uniform()
        self.norms, self.convs = [], []
        for i in range(self.n_blocks):
            for j in range(self.n_stages):
                norm = ConditionalInstanceNorm2dPlus(features, self.num_classes,
                                                     name=f"{i + 1}_{j + 1}_norm", dtype=dt)
                conv = _conv(features, 3, f"{i + 1}_{j + 1}_conv", dt, use_bias=False,
                             initializer=init)
                norm.build(tuple(input_shape))
                conv.build(tuple(input_shape))
                self.norms.append(norm)
                self.convs.append(conv)

    def call(self, inputs, labels):
        x = inputs
        for i in range(self.n_blocks):
            residual = x
            for j in range(self.n_stages):
                k = i * self.n_stages + j
                x = self.convs[k](keras.activations.elu(self.norms[k](x, labels)))
            x = x + residual
        return x

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(n_blocks=self.n_blocks, n_stages=self.n_stages, num_classes=self.num_classes)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CondCRPBlock(keras.layers.Layer):
    """RefineNet's chained residual pooling, conditional, with average pooling (NCSN).

    ``x = ELU(x)``; then ``n_stages`` times: ``path = conv3×3(avgpool5×5(CIN++(path)))``
    and ``x = x + path``. The 5×5 pooling has stride 1 and zero padding 2 counted in the
    average (PyTorch's ``AvgPool2d`` default); the convolutions have no bias.

    Args:
        n_stages: pooling stages.
        num_classes: number of noise levels.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, features]``.
        labels: int tensor ``[batch]``.

    Returns:
        A tensor shaped like ``inputs``.
    """

    def __init__(self, n_stages, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.n_stages = _checks.positive_int(n_stages, "n_stages")
        self.num_classes = _checks.positive_int(num_classes, "num_classes")

    def build(self, input_shape):
        _check_channels(input_shape, None, "inputs", self.name)
        features = input_shape[-1]
        dt, init = self.dtype_policy, _torch_uniform()
        self.norms, self.convs = [], []
        for i in range(self.n_stages):
            norm = ConditionalInstanceNorm2dPlus(features, self.num_classes, name=f"norm_{i}",
                                                 dtype=dt)
            conv = _conv(features, 3, f"conv_{i}", dt, use_bias=False, initializer=init)
            norm.build(tuple(input_shape))
            conv.build(tuple(input_shape))
            self.norms.append(norm)
            self.convs.append(conv)

    def call(self, inputs, labels):
        x = keras.activations.elu(inputs)
        path = x
        for norm, conv in zip(self.norms, self.convs):
            path = ops.pad(norm(path, labels), [[0, 0], [2, 2], [2, 2], [0, 0]])
            path = conv(ops.average_pool(path, pool_size=5, strides=1, padding="valid"))
            x = path + x
        return x

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(n_stages=self.n_stages, num_classes=self.num_classes)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CondMSFBlock(keras.layers.Layer):
    """RefineNet's multi-resolution fusion, conditional.

    Each input goes through CIN++ and a 3×3 convolution (with bias) to ``features``
    channels, is resized bilinearly (aligned corners) to the first input's resolution, and
    the results are summed.

    Args:
        features: output channels.
        num_classes: number of noise levels.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: list of ``[batch, h_i, w_i, c_i]`` tensors; the first sets the output size.
        labels: int tensor ``[batch]``.

    Returns:
        ``[batch, h_0, w_0, features]``.
    """

    def __init__(self, features, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.features = _checks.positive_int(features, "features")
        self.num_classes = _checks.positive_int(num_classes, "num_classes")

    def build(self, input_shape):
        shapes = _shape_list(input_shape, self.name)
        dt, init = self.dtype_policy, _torch_uniform()
        self.norms, self.convs = [], []
        for i, shape in enumerate(shapes):
            _check_channels(shape, None, f"inputs[{i}]", self.name)
            norm = ConditionalInstanceNorm2dPlus(shape[-1], self.num_classes, name=f"norm_{i}",
                                                 dtype=dt)
            conv = _conv(self.features, 3, f"conv_{i}", dt, initializer=init)
            norm.build(tuple(shape))
            conv.build(tuple(shape))
            self.norms.append(norm)
            self.convs.append(conv)

    def call(self, inputs, labels):
        size = (inputs[0].shape[1], inputs[0].shape[2])
        total = None
        for x, norm, conv in zip(inputs, self.norms, self.convs):
            h = resize_bilinear_align_corners(conv(norm(x, labels)), size)
            total = h if total is None else total + h
        return total

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        first = tuple(inputs_shape[0])
        return first[:-1] + (self.features,)

    def get_config(self):
        config = super().get_config()
        config.update(features=self.features, num_classes=self.num_classes)
        return config


def _shape_list(input_shape, layer):
    if not isinstance(input_shape, (list, tuple)) or not input_shape or not isinstance(
            input_shape[0], (list, tuple)):
        raise ValueError(
            f"Expected a list of input tensors in {layer}. Received: input_shape={input_shape}"
        )
    return [tuple(s) for s in input_shape]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CondRefineBlock(keras.layers.Layer):
    """RefineNet block of NCSN: adaptive RCUs per input → MSF → CRP → output RCU.

    Each input passes through a ``CondRCUBlock(2 blocks, 2 stages)``; several inputs are
    fused by ``CondMSFBlock`` at the first input's resolution; then ``CondCRPBlock``
    (2 stages) and an output ``CondRCUBlock`` (3 blocks if ``end`` else 1, 2 stages).

    Args:
        features: output channels.
        num_classes: number of noise levels.
        start: the deepest block (one input, no fusion; its channels must equal ``features``).
        end: the last block (a deeper output RCU).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: list of ``[batch, h_i, w_i, c_i]`` tensors (the encoder feature first, then
            the previous refine block's output).
        labels: int tensor ``[batch]``.

    Returns:
        ``[batch, h_0, w_0, features]``.
    """

    def __init__(self, features, num_classes, start=False, end=False, **kwargs):
        super().__init__(**kwargs)
        self.features = _checks.int_in_range(features, "features", 2, None)
        self.num_classes = _checks.positive_int(num_classes, "num_classes")
        self.start = bool(start)
        self.end = bool(end)

    def build(self, input_shape):
        shapes = _shape_list(input_shape, self.name)
        if self.start and len(shapes) != 1:
            raise ValueError(
                f"Expected one input for a start block ({self.name}). Received: {len(shapes)}"
            )
        if len(shapes) == 1 and shapes[0][-1] != self.features:
            raise ValueError(
                f"Expected a single input with features={self.features} channels in "
                f"{self.name}. Received: inputs[0].shape={list(shapes[0])}"
            )
        dt, nc = self.dtype_policy, self.num_classes
        self.adapt = []
        for i, shape in enumerate(shapes):
            rcu = CondRCUBlock(2, 2, nc, name=f"adapt_{i}", dtype=dt)
            rcu.build(shape)
            self.adapt.append(rcu)
        self.msf = None
        if len(shapes) > 1:
            self.msf = CondMSFBlock(self.features, nc, name="msf", dtype=dt)
            self.msf.build(shapes)
        out_shape = shapes[0][:-1] + (self.features,)
        self.crp = CondCRPBlock(2, nc, name="crp", dtype=dt)
        self.crp.build(out_shape)
        self.output_rcu = CondRCUBlock(3 if self.end else 1, 2, nc, name="output", dtype=dt)
        self.output_rcu.build(out_shape)

    def call(self, inputs, labels):
        hs = [rcu(x, labels) for rcu, x in zip(self.adapt, inputs)]
        h = self.msf(hs, labels) if self.msf is not None else hs[0]
        return self.output_rcu(self.crp(h, labels), labels)

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        return tuple(inputs_shape[0])[:-1] + (self.features,)

    def get_config(self):
        config = super().get_config()
        config.update(features=self.features, num_classes=self.num_classes, start=self.start,
                      end=self.end)
        return config
