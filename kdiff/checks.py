"""The argument checks behind kdiff's error messages, which read "Expected … Received:
name=value". Public so that code built on kdiff (its pipeline, a user's script) refuses bad
input in the same words.

The checks of numbers and arrays need numpy only; those of tensors import TensorFlow when
called, so that the command line's flag checks and ``kdiff.metrics`` start without it.
"""

from __future__ import annotations

import numbers

import numpy as np


def positive_int(value, name):
    """Returns ``value`` as an int, or raises ValueError unless it is an integer ≥ 1."""
    return int_in_range(value, name, 1, None)


def int_in_range(value, name, low, high):
    """Returns ``value`` as an int, or raises ValueError unless ``low ≤ value ≤ high``.

    Args:
        value: the received value.
        name: the argument's name, for the message.
        low: smallest allowed value.
        high: largest allowed value, or None for no upper bound.

    Returns:
        ``int(value)``.
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise ValueError(f"Expected `{name}` to be an integer. Received: {name}={value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"Expected `{name}` {bound}. Received: {name}={value}")
    return value


def non_negative(value, name):
    """Returns ``value`` as a float, or raises ValueError unless it is a finite number ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"Expected `{name}` to be a finite number. Received: {name}={value!r}")
    if value < 0:
        raise ValueError(f"Expected `{name}` >= 0. Received: {name}={value!r}")
    return float(value)


def positive(value, name):
    """Returns ``value`` as a float, or raises ValueError unless it is a finite number > 0."""
    value = non_negative(value, name)
    if value == 0:
        raise ValueError(f"Expected `{name}` > 0. Received: {name}={value!r}")
    return value


def one_of(value, name, choices):
    """Returns ``value`` unless it is not in ``choices``, in which case raises ValueError."""
    if value not in choices:
        raise ValueError(
            f"Expected `{name}` to be one of {list(choices)}. Received: {name}={value!r}"
        )
    return value


def float_tensor(x, name, min_rank=2):
    """Converts ``x`` to a floating-point tensor of rank ≥ ``min_rank`` (batch first).

    Args:
        x: array-like or tensor.
        name: the argument's name, for the message.
        min_rank: smallest allowed rank.

    Returns:
        A float tensor (float32 when ``x`` was not floating point already).
    """
    import tensorflow as tf

    if isinstance(x, (tf.Tensor, tf.Variable)):
        if not x.dtype.is_floating:
            raise ValueError(
                f"Expected `{name}` to be a floating-point tensor. Received: dtype={x.dtype.name}"
            )
    else:
        array = np.asarray(x)
        if array.dtype.kind != "f":
            raise ValueError(
                f"Expected `{name}` to be a floating-point array (scale integer images "
                f"to floats first). Received: dtype={array.dtype}"
            )
        x = array
    x = tf.convert_to_tensor(x)
    rank = len(x.shape)
    if rank < min_rank:
        raise ValueError(
            f"Expected `{name}` of rank >= {min_rank} with the batch first "
            f"(e.g. [batch, height, width, channels]). Received: shape={x.shape.as_list()}"
        )
    return x


def same_shape(a, b, name_a, name_b):
    """Raises ValueError when the static shapes of ``a`` and ``b`` are known and differ."""
    import tensorflow as tf

    sa, sb = tf.TensorShape(a.shape), tf.TensorShape(b.shape)
    if not sa.is_compatible_with(sb):
        raise ValueError(
            f"Expected `{name_a}` shaped like `{name_b}` {sb.as_list()}. "
            f"Received: {name_a}.shape={sa.as_list()}"
        )


def descending_sigmas(sigmas, name="sigmas"):
    """Returns ``sigmas`` as a float64 array, or raises unless it is positive and descending."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if sigmas.ndim != 1 or sigmas.size < 1:
        raise ValueError(
            f"Expected `{name}` to be a non-empty 1-D sequence. Received: shape={sigmas.shape}"
        )
    if not np.all(np.isfinite(sigmas)) or np.any(sigmas <= 0):
        raise ValueError(f"Expected every `{name}` value finite and > 0. Received: {sigmas!r}")
    if np.any(np.diff(sigmas) >= 0):
        raise ValueError(
            f"Expected `{name}` strictly descending (largest noise level first). "
            f"Received: {sigmas!r}"
        )
    return sigmas


def model_output(out, like, name):
    """Returns a model's output in ``like``'s dtype, or raises unless it is shaped like it.

    Args:
        out: what the model returned.
        like: the tensor the output must match.
        name: the model argument's name, for the message.

    Returns:
        A tensor.
    """
    import tensorflow as tf

    if isinstance(out, (list, tuple)):
        raise ValueError(
            f"Expected `{name}` to return one tensor shaped like its input {like.shape.as_list()}. "
            f"Received: a sequence of {len(out)} tensors (a learned variance needs "
            "variance='learned' or the hybrid loss)"
        )
    out = tf.cast(tf.convert_to_tensor(out), like.dtype)
    if not out.shape.is_compatible_with(like.shape):
        raise ValueError(
            f"Expected `{name}` to return a tensor shaped like its input {like.shape.as_list()}. "
            f"Received: shape={out.shape.as_list()}"
        )
    return out


def split_eps_v(out, like, name):
    """Splits a learned-variance output into (ε, v): ``[eps, v]`` or one 2×C-channel tensor.

    Args:
        out: what the model returned.
        like: the model's input; ε and v must be shaped like it.
        name: the model argument's name, for the message.

    Returns:
        ``(eps, v)`` in ``like``'s dtype.
    """
    import tensorflow as tf

    if isinstance(out, (list, tuple)):
        if len(out) != 2:
            raise ValueError(
                f"Expected `{name}` to return [eps, v] or one tensor with 2×channels. "
                f"Received: a {type(out).__name__} of length {len(out)}"
            )
        eps, v = out
    else:
        out = tf.convert_to_tensor(out)
        channels, out_channels = like.shape[-1], out.shape[-1]
        if channels is not None and out_channels is not None and out_channels != 2 * channels:
            raise ValueError(
                f"Expected `{name}` to return [eps, v] or one tensor with 2×{channels}="
                f"{2 * channels} channels. Received: shape={out.shape.as_list()}"
            )
        eps, v = tf.split(out, 2, axis=-1)
    return model_output(eps, like, f"{name} (eps)"), model_output(v, like, f"{name} (v)")
