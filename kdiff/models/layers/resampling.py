"""Changes of resolution: ``Downsample`` / ``Upsample`` layers and the resampling functions.

DDPM's strided-convolution (or pooling) downsampling and nearest-neighbour upsampling,
score_sde's FIR (1, 3, 3, 1) resampling of NCSN++ (``fir_downsample`` / ``fir_upsample``)
and the aligned-corners bilinear resize of NCSN's RefineNet. The plain functions
(``upsample_nearest``, ``avg_pool2``, ``resampled_shape``) are what the residual blocks of
both families resample with.
"""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

from kdiff import checks
from kdiff.models.layers._common import PACKAGE, Conv2D, check_channels, check_rank, conv_layer

# Also resize_bilinear_align_corners, upsample_nearest, avg_pool2 and resampled_shape: what
# the residual blocks of both families resample with.
__all__ = ["Downsample", "Upsample", "fir_downsample", "fir_upsample"]


def upsample_nearest(x):
    """Doubles height and width by repeating every pixel 2×2 (DDPM's nearest upsampling).

    Args:
        x: ``[batch, height, width, channels]``.

    Returns:
        ``[batch, 2·height, 2·width, channels]``.
    """
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool2(x):
    """Halves height and width by 2×2 mean pooling (DDPM's pooling, NCSN's ``ConvMeanPool``).

    Args:
        x: ``[batch, height, width, channels]``.

    Returns:
        ``[batch, height / 2, width / 2, channels]``.
    """
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


def resampled_shape(shape, up, down):
    """An image shape after ×2 upsampling, ×2 downsampling, or neither (for ``build``).

    Args:
        shape: ``(batch, height, width, ...)``; None sizes stay None.
        up: double height and width.
        down: halve them.

    Returns:
        The shape, a tuple.
    """
    def scale(n):
        if n is None:
            return None
        return n * 2 if up else (n // 2 if down else n)

    return (shape[0], scale(shape[1]), scale(shape[2])) + tuple(shape[3:])


class _Resample(keras.layers.Layer):
    """What ``Downsample`` and ``Upsample`` share: an optional 3×3 convolution."""

    def __init__(self, with_conv=True, out_channels=None, **kwargs):
        super().__init__(**kwargs)
        self.with_conv = bool(with_conv)
        self.out_channels = None if out_channels is None else checks.positive_int(
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


@keras.saving.register_keras_serializable(package=PACKAGE)
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
        check_channels(input_shape, None, "inputs", self.name)
        if self.with_conv:
            self.conv = Conv2D(
                self.out_channels or input_shape[-1], 3, strides=2,
                padding="same" if self.padding == 0 else "valid", name="conv",
                dtype=self.dtype_policy)
            shape = tuple(input_shape)
            if self.padding:
                shape = (shape[0],) + tuple(None if n is None else n + 2 for n in shape[1:3]) + (
                    shape[3],)
            self.conv.build(shape)

    def call(self, inputs):
        check_rank(inputs, 4, "inputs", self.name)
        if not self.with_conv:
            return avg_pool2(inputs)
        if self.padding:
            inputs = ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
        return self.conv(inputs)

    def compute_output_shape(self, input_shape):
        shape = resampled_shape(tuple(input_shape), False, True)
        return shape[:-1] + (self.out_channels or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
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
        check_channels(input_shape, None, "inputs", self.name)
        if self.with_conv:
            self.conv = conv_layer(self.out_channels or input_shape[-1], 3, "conv", self.dtype_policy)
            self.conv.build(resampled_shape(tuple(input_shape), True, False))

    def call(self, inputs):
        check_rank(inputs, 4, "inputs", self.name)
        x = upsample_nearest(inputs)
        return self.conv(x) if self.with_conv else x

    def compute_output_shape(self, input_shape):
        shape = resampled_shape(tuple(input_shape), True, False)
        return shape[:-1] + (self.out_channels or input_shape[-1],)
