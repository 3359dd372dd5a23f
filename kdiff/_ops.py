"""Small tensor helpers shared by schedules, SDEs, losses and samplers."""

from __future__ import annotations

import tensorflow as tf


def batch_view(values, x):
    """Reshapes a [batch] tensor to [batch, 1, …, 1] so that it broadcasts against ``x``."""
    return tf.reshape(tf.cast(values, x.dtype), [-1] + [1] * (len(x.shape) - 1))


def mean_flat(x):
    """Mean over every axis but the first (Ho et al.'s ``mean_flat``)."""
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def sum_flat(x):
    """Sum over every axis but the first."""
    return tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def gather_per_example(values, t, x):
    """Gathers ``values[t]`` and reshapes it to broadcast against ``x``.

    Args:
        values: float64 numpy array of length T.
        t: int tensor of shape [batch].
        x: tensor of shape [batch, ...].

    Returns:
        A tensor of shape [batch, 1, …, 1] in ``x``'s dtype.
    """
    x = tf.convert_to_tensor(x)
    out = tf.gather(tf.constant(values, dtype=x.dtype), tf.cast(t, tf.int32))
    return tf.reshape(out, [-1] + [1] * (len(x.shape) - 1))


def interpolate(x, xp, fp):
    """``np.interp`` in TensorFlow: piecewise-linear f(x) through (xp, fp), xp ascending, clamped.

    Args:
        x: the points, a float tensor.
        xp: ascending abscissae, at least 2.
        fp: the values at ``xp``.

    Returns:
        f(x), shaped like ``x``.
    """
    last = tf.shape(xp)[0] - 2
    index = tf.clip_by_value(tf.searchsorted(xp, x, side="right") - 1, 0, last)
    x0, x1 = tf.gather(xp, index), tf.gather(xp, index + 1)
    weight = tf.clip_by_value((x - x0) / (x1 - x0), 0.0, 1.0)
    return tf.gather(fp, index) + weight * (tf.gather(fp, index + 1) - tf.gather(fp, index))
