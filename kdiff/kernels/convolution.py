"""3×3 "same" convolutions of channels-last float32 images: Winograd's kernel, or TensorFlow's.

``conv2d_3x3`` is ``tf.nn.conv2d(x, kernel, 1, "SAME")``, computed where it can by the
Winograd F(2×2, 3×3) kernel (``winograd.cc``): 16 multiplications for each 2×2 block of
outputs instead of the direct convolution's 36, so 1.25–1.42× faster than TensorFlow's
oneDNN convolution on the CIFAR-10 U-Net's shapes (docs/benchmarks.md), and equal to it to
float32 round-off. Its input gradient is the same kind of convolution (by the turned kernel), so
Winograd's kernel again; its filter gradient is TensorFlow's (registered below); so
training, second derivatives and forward-mode products are those of ``tf.nn.conv2d``.
"""

from __future__ import annotations

import tensorflow as tf

from kdiff import kernels

WINOGRAD_DTYPES = (tf.float32,)  # bfloat16 loses too much in the transforms
# Below this many input or output channels the transforms cost more than the products
# save (64 → 64 channels broke even, 16 → 16 ran 0.48×; 128 → 128 at 32×32 ran 1.42×:
# docs/benchmarks.md).
WINOGRAD_MIN_CHANNELS = 128


def conv2d_3x3(x, kernel, bias=None):
    """The stride-1, "SAME"-padded convolution of ``x`` by a 3×3 ``kernel``, plus ``bias``.

    Args:
        x: ``[batch, height, width, channels]``.
        kernel: ``[3, 3, channels, filters]``, in ``x``'s dtype.
        bias: ``[filters]`` in ``x``'s dtype, or None; Winograd's kernel adds it as it
            writes the outputs instead of in a pass of its own.

    Returns:
        ``[batch, height, width, filters]``: Winograd's kernel for float32 on the CPU with at
        least ``WINOGRAD_MIN_CHANNELS`` channels and filters, TensorFlow's convolution
        otherwise (see ``kdiff.kernels``).
    """
    x = tf.convert_to_tensor(x)
    kernel = tf.convert_to_tensor(kernel)
    bias = None if bias is None else tf.convert_to_tensor(bias)
    if len(x.shape) != 4 or len(kernel.shape) != 4 or tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(
            "Expected `x` [batch, height, width, channels] and `kernel` [3, 3, channels, filters]. "
            f"Received: x.shape={list(x.shape)}, kernel.shape={list(kernel.shape)}"
        )
    channels, filters = kernel.shape[2:]
    if x.shape[-1] is not None and channels is not None and x.shape[-1] != channels:
        raise ValueError(
            f"Expected `kernel` [3, 3, {x.shape[-1]}, filters] for `x` of {x.shape[-1]} channels. "
            f"Received: x.shape={list(x.shape)}, kernel.shape={list(kernel.shape)}"
        )
    if bias is not None and (len(bias.shape) != 1 or bias.shape[0] not in (None, filters)):
        raise ValueError(
            f"Expected `bias` of shape [{filters}] (the kernel's filters). Received: bias.shape={list(bias.shape)}"
        )
    library = None
    if channels is not None and filters is not None and min(channels, filters) >= WINOGRAD_MIN_CHANNELS:
        library = kernels.cpu_library("winograd", x, WINOGRAD_DTYPES)
    if library is None or kernel.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        y = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
        return y if bias is None else tf.nn.bias_add(y, bias)
    return library.kdiff_winograd_conv2d(x, kernel, tf.zeros([filters]) if bias is None else bias)


@tf.RegisterGradient("KdiffWinogradConv2D")
def _winograd_gradient(op, dy):
    """dx, dkernel and dbias, as ``tf.nn.conv2d`` and ``tf.nn.bias_add``'s.

    dx is itself a 3×3 "same" convolution — of dy by the kernel turned 180° with its
    channels and filters swapped — so it is ``conv2d_3x3`` again (Winograd's kernel where
    it pays); dkernel is TensorFlow's filter gradient. Both are differentiable again.
    """
    x, kernel, _ = op.inputs
    dx = conv2d_3x3(dy, tf.transpose(tf.reverse(kernel, axis=[0, 1]), [0, 1, 3, 2]))
    dkernel = tf.compat.v1.nn.conv2d_backprop_filter(x, tf.shape(kernel), dy, strides=[1, 1, 1, 1], padding="SAME")
    return dx, dkernel, tf.reduce_sum(dy, axis=[0, 1, 2])
