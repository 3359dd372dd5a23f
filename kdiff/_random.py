"""Seeds and stateless Gaussian noise: the same seed gives the same numbers, eager or compiled."""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf


def seed_pair(seed):
    """Turns a seed into the shape-[2] int tensor that TF's stateless ops take.

    Args:
        seed: a non-negative int, a shape-[2] int tensor (returned as it is), or None
            for a fresh random seed.

    Returns:
        A shape-[2] int64 tensor.
    """
    if seed is None:
        seed = int(np.random.default_rng().integers(0, 2**31 - 1))
    if isinstance(seed, bool):
        raise ValueError(f"Expected `seed` to be an int or None. Received: seed={seed!r}")
    if isinstance(seed, (numbers.Integral, np.integer)):
        if seed < 0:
            raise ValueError(f"Expected `seed` >= 0. Received: seed={seed!r}")
        return tf.constant([int(seed), 0], dtype=tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer or seed.shape.rank != 1 or seed.shape[0] != 2:
        raise ValueError(
            "Expected `seed` to be an int, None, or a shape-[2] integer tensor. "
            f"Received: dtype={seed.dtype.name}, shape={seed.shape.as_list()}"
        )
    return tf.cast(seed, tf.int64)


def fold_in(seed, data):
    """Derives an independent seed pair from ``seed`` and an integer (e.g. a step index)."""
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tf.cast(data, tf.int64))


def normal(shape, seed, dtype=tf.float32):
    """Standard normal noise; stateless when ``seed`` is given, stateful when it is None."""
    if seed is None:
        return tf.random.normal(shape, dtype=dtype)
    return tf.random.stateless_normal(shape, seed=seed_pair(seed), dtype=dtype)
