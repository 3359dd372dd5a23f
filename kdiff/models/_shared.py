"""What the networks share: the check of ``attention_resolutions``, the unpacking of their
call inputs and their output shape. Private to ``kdiff.models``; the names are plain so that
``unet``, ``ncsnpp`` and ``refinenet`` import them from one home rather than from each other.
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from kdiff import checks

__all__ = ["attention_resolutions", "unpack_inputs", "image_output_shape"]


def attention_resolutions(value):
    """``attention_resolutions`` checked and made a tuple (``UNet``'s and ``NCSNpp``'s argument).

    Args:
        value: a resolution, or a sequence of them (e.g. ``(16,)``: 16×16 feature maps).

    Returns:
        A tuple of positive ints.
    """
    if isinstance(value, numbers.Integral):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(
            "Expected `attention_resolutions` to be a sequence of resolutions (e.g. (16,)). "
            f"Received: attention_resolutions={value!r}"
        )
    return tuple(checks.positive_int(r, "attention_resolutions") for r in value)


def unpack_inputs(network, x, t, y):
    """Checks and converts a network's call inputs (shared by ``UNet`` and ``NCSNpp``).

    Args:
        network: the network, with ``image_size``, ``in_channels``, ``num_classes`` and a
            compute dtype.
        x: images ``[batch, image_size, image_size, in_channels]``, or a list ``[x, t]`` /
            ``[x, t, y]``.
        t: ``[batch]`` levels (a scalar is broadcast to the batch), or None when in ``x``.
        y: ``[batch]`` class labels or None.

    Returns:
        ``(x, t, y)``: x in the compute dtype, t float32 ``[batch]``, y int32 or None.
    """
    if isinstance(x, (list, tuple)):
        if t is not None or y is not None or len(x) not in (2, 3):
            raise ValueError(
                "Expected the network called as network(x, t[, y]) or network([x, t[, y]]). "
                f"Received: a {type(x).__name__} of {len(x)} inputs"
                + (" plus t" if t is not None else "") + (" plus y" if y is not None else "")
            )
        x, t, y = (list(x) + [None])[:3]
    if t is None:
        raise ValueError("Expected `t` (timesteps or noise levels [batch]). Received: t=None")
    x = ops.convert_to_tensor(x)
    expected = [None, network.image_size, network.image_size, network.in_channels]
    shape = list(x.shape)
    if len(shape) != 4 or any(e is not None and s is not None and s != e
                              for s, e in zip(shape, expected)):
        raise ValueError(
            f"Expected `x` of shape {expected}. Received: x.shape={shape}"
        )
    if not keras.backend.is_float_dtype(x.dtype):
        raise ValueError(
            f"Expected `x` to be a floating-point tensor. Received: dtype={x.dtype}"
        )
    x = ops.cast(x, network.compute_dtype)
    t = ops.convert_to_tensor(t)
    if len(t.shape) == 0:
        t = ops.broadcast_to(t, (ops.shape(x)[0],))
    elif len(t.shape) != 1:
        raise ValueError(f"Expected `t` of shape [batch]. Received: t.shape={list(t.shape)}")
    t = ops.cast(t, "float32")
    if network.num_classes is None and y is not None:
        raise ValueError(
            f"Expected no class labels for an unconditional {type(network).__name__} "
            "(num_classes=None). Received: y"
        )
    if network.num_classes is not None:
        if y is None:
            raise ValueError(
                f"Expected class labels `y` [batch] for a class-conditional "
                f"{type(network).__name__} (num_classes={network.num_classes}). Received: y=None"
            )
        y = ops.convert_to_tensor(y)
        if len(y.shape) != 1:
            raise ValueError(f"Expected `y` of shape [batch]. Received: y.shape={list(y.shape)}")
        y = ops.cast(y, "int32")
    return x, t, y


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
