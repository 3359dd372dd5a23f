"""What the layer families share: argument checks, the convolution they all build, and the
per-example broadcast of a conditioning vector. Private to ``kdiff.models``; the names are
plain so that the family modules (and the networks) import them without reaching into
another module's privates."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from kdiff import kernels

__all__ = ["PACKAGE", "Conv2D", "check_rank", "check_channels", "check_rate", "conv_layer", "per_example"]

PACKAGE = "kdiff.models"  # the layers' Keras package; not "kdiff": kdiff.diffusion registers its own NCSN


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose 3×3, stride-1, "same", channels-last convolutions are
    ``kdiff.kernels.conv2d_3x3``: Winograd's kernel, bias included, for float32 on the CPU
    (TensorFlow's convolution elsewhere). The same weights, config and result, to float32
    round-off."""

    def _winograd_shaped(self):
        return (
            keras.backend.backend() == "tensorflow"
            and tuple(self.kernel_size) == (3, 3)
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.padding == "same"
            and self.data_format == "channels_last"
            and self.groups == 1
        )

    def call(self, inputs):
        if not self._winograd_shaped():
            return super().call(inputs)
        kernel = ops.convert_to_tensor(self.kernel)
        outputs = kernels.conv2d_3x3(inputs, kernel, ops.convert_to_tensor(self.bias) if self.use_bias else None)
        return outputs if self.activation is None else self.activation(outputs)


def check_rank(x, rank, name, layer):
    """Raises unless ``x`` has rank ``rank``: a layer's call input, checked for a readable error.

    Args:
        x: the tensor.
        rank: the rank expected (4: an image batch).
        name: the argument's name, for the message.
        layer: the layer's name, for the message.
    """
    if len(x.shape) != rank:
        raise ValueError(
            f"Expected `{name}` of rank {rank} in {layer}"
            + (" ([batch, height, width, channels])" if rank == 4 else "")
            + f". Received: {name}.shape={list(x.shape)}"
        )


def check_channels(shape, expected, name, layer):
    """Raises unless ``shape``'s channels (last axis) are known and divisible by ``expected``.

    Args:
        shape: the input shape a layer is built for.
        expected: the GroupNorm groups the channels must split into, or None.
        name: the argument's name, for the message.
        layer: the layer's name, for the message.
    """
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


def check_rate(dropout):
    """A dropout rate checked to lie in [0, 1) (layers' and networks' ``dropout``).

    Args:
        dropout: the rate.

    Returns:
        The rate, a float.
    """
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"Expected `dropout` in [0, 1). Received: dropout={dropout!r}")
    return float(dropout)


def conv_layer(filters, kernel_size, name, dtype, strides=1, dilation=1, use_bias=True, zero=False,
               initializer="glorot_uniform"):
    """A "same"-padded ``Conv2D``, the one every block builds.

    Args:
        filters: output channels.
        kernel_size: the kernel's size.
        name: the layer's name (the weights' names in checkpoints and conversions).
        dtype: the dtype policy.
        strides: the stride.
        dilation: the dilation rate.
        use_bias: learn a bias.
        zero: zero-initialize the kernel (a residual branch that starts as nothing).
        initializer: the kernel initializer otherwise.

    Returns:
        An unbuilt ``Conv2D``.
    """
    return Conv2D(
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


def per_example(values):
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
