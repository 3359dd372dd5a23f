"""Interpolation between latents (DDIM's semantic interpolation, seed footnote 15)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kdiff import checks


def slerp(z0, z1, alpha):
    """Spherical linear interpolation between two batches of latents.

    slerp(z0, z1, α) = sin((1−α)θ)/sin θ · z0 + sin(αθ)/sin θ · z1, with θ the angle between
    the flattened z0 and z1 of each example; falls back to linear interpolation when
    the two are (nearly) parallel. Gaussian latents keep their norm along the path,
    which linear interpolation would shrink.

    Args:
        z0: latents [batch, ...] (or one latent without a batch axis).
        z1: latents shaped like ``z0``.
        alpha: a float in [0, 1], or a 1-D sequence of them to get one interpolant per
            value stacked on a new leading axis.

    Returns:
        A tensor shaped like ``z0`` (or [len(alpha), *z0.shape]).
    """
    z0 = checks.float_tensor(z0, "z0", min_rank=1)
    z1 = tf.cast(checks.float_tensor(z1, "z1", min_rank=1), z0.dtype)
    checks.same_shape(z1, z0, "z1", "z0")
    alphas = np.asarray(alpha, dtype=np.float64)
    if alphas.ndim > 1 or not np.all(np.isfinite(alphas)) or np.any((alphas < 0) | (alphas > 1)):
        raise ValueError(
            f"Expected `alpha` a float or a 1-D sequence of floats in [0, 1]. Received: alpha={alpha!r}"
        )
    batched = len(z0.shape) >= 2
    a = tf.reshape(z0, [tf.shape(z0)[0], -1]) if batched else z0[None]
    b = tf.reshape(z1, [tf.shape(z1)[0], -1]) if batched else z1[None]
    a64, b64 = tf.cast(a, tf.float64), tf.cast(b, tf.float64)
    cos = tf.reduce_sum(a64 * b64, axis=1) / (tf.norm(a64, axis=1) * tf.norm(b64, axis=1))
    theta = tf.acos(tf.clip_by_value(cos, -1.0, 1.0))[:, None]
    sin_theta = tf.sin(theta)
    parallel = sin_theta < 1e-6

    def one(value):
        value = tf.constant(value, tf.float64)
        safe = tf.where(parallel, tf.ones_like(sin_theta), sin_theta)
        w0 = tf.where(parallel, 1.0 - value, tf.sin((1.0 - value) * theta) / safe)
        w1 = tf.where(parallel, value, tf.sin(value * theta) / safe)
        out = tf.cast(w0 * a64 + w1 * b64, z0.dtype)
        return tf.reshape(out, tf.shape(z0))

    if alphas.ndim == 0:
        return one(float(alphas))
    return tf.stack([one(float(v)) for v in alphas])
