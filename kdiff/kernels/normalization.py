"""GroupNorm (+ SiLU) of channels-last tensors: the fused kernel, or TensorFlow's ops.

``group_norm`` computes ``silu?(γ·(x − μ_g)/√(σ²_g + ε) + β)`` with μ_g, σ²_g the mean and
(biased) variance of each example's group of channels over all positions — the same
result either way, to float32 round-off:

* the fused kernel (``group_norm.cc``): one pass for the statistics, one for the output;
  its gradient, one kernel too, is registered here, and so is the gradient of that
  gradient (by differentiating the composed form), so that second derivatives and
  forward-mode products through it are exact;
* the composed form (``composed_group_norm``): per-channel spatial sums averaged within a
  group by two small constant matmuls, the fastest composition of TensorFlow's ops found
  (op counts and timings in docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

from kdiff import kernels

FUSED_DTYPES = (tf.float32, tf.bfloat16)


def silu(x):
    """x·σ(x) (SiLU / swish), written out.

    TensorFlow's ``tf.nn.silu`` (which ``keras.activations.silu`` calls) is a
    ``tf.custom_gradient``: a SavedModel then either traces a gradient function for every
    activation (half the time of an export) or, without them, loads with wrong gradients
    for the likelihood's divergence. Written out, its gradient is TensorFlow's own.

    Args:
        x: a tensor (a Keras symbolic tensor too).

    Returns:
        x·σ(x), like x.
    """
    return x * ops.sigmoid(x)


def group_norm(x, gamma, beta, groups, epsilon, activation=None):
    """GroupNorm of channels-last ``x``, optionally followed by SiLU.

    Args:
        x: ``[batch, ..., channels]``, float32 or bfloat16 for the fused kernel (other
            dtypes are computed with TensorFlow's ops).
        gamma: ``[channels]`` scale (float32), or None for ones.
        beta: ``[channels]`` shift (float32), or None for zeros.
        groups: the number of groups; it divides the channels.
        epsilon: added to the variance.
        activation: None, or "silu" to apply SiLU to the result.

    Returns:
        A tensor shaped like ``x``, in its dtype; statistics and arithmetic are float32.
    """
    if activation not in (None, "silu"):
        raise ValueError(f"Expected `activation` None or 'silu'. Received: activation={activation!r}")
    x = tf.convert_to_tensor(x)
    channels = x.shape[-1]
    if channels is None or isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or channels % groups:
        raise ValueError(
            "Expected `x` with a known number of channels and `groups` a positive int that divides it. "
            f"Received: x.shape={list(x.shape)}, groups={groups!r}"
        )
    gamma = tf.ones([channels]) if gamma is None else tf.cast(gamma, tf.float32)
    beta = tf.zeros([channels]) if beta is None else tf.cast(beta, tf.float32)
    library = kernels.cpu_library("group_norm", x, FUSED_DTYPES) if len(x.shape) >= 2 else None
    if library is None:
        return composed_group_norm(x, gamma, beta, groups, epsilon, activation)
    y, _, _ = library.kdiff_group_norm(x, gamma, beta, groups=groups, epsilon=epsilon, silu=activation == "silu")
    return y


def composed_group_norm(x, gamma, beta, groups, epsilon, activation=None):
    """``group_norm`` with TensorFlow's ops: the fallback, and the reference of the kernel.

    Args and Returns: as ``group_norm`` (``gamma`` and ``beta`` float32 tensors).
    """
    dtype = x.dtype
    x = tf.cast(x, tf.float32)
    mean = _group_mean(x, groups)
    centered = x - mean
    scale = tf.math.rsqrt(_group_mean(tf.square(centered), groups) + epsilon) * gamma
    out = centered * scale + beta
    if activation == "silu":
        out = silu(out)
    return tf.cast(out, dtype)


def _group_mean(x, groups):
    """The mean of ``x`` ``[batch, ..., channels]`` over the positions and each group's
    channels, per channel: ``[batch, 1, …, 1, channels]``."""
    channels = x.shape[-1]
    axes = list(range(1, len(x.shape) - 1))
    size = channels // groups  # channels per group
    positions = x.shape[1:-1]
    if any(d is None for d in positions):  # an unknown spatial size: a dynamic divisor
        total, divisor = tf.reduce_mean(x, axis=axes, keepdims=True), 1
    else:
        total, divisor = tf.reduce_sum(x, axis=axes, keepdims=True), int(np.prod(positions))
    if size == 1:
        return total if divisor == 1 else total * (1.0 / divisor)
    members = np.repeat(np.eye(groups, dtype="float32"), size, axis=0)  # [channels, groups]
    group = tf.matmul(tf.reshape(total, [-1, channels]), members * np.float32(1.0 / (size * divisor)))
    return tf.reshape(tf.matmul(group, members.T), [-1] + [1] * len(axes) + [channels])


@tf.RegisterGradient("KdiffGroupNorm")
def _group_norm_gradient(op, dy, unused_dmean, unused_drstd):
    """dx, dγ, dβ from the fused gradient kernel (the statistics outputs feed nothing)."""
    library = kernels.library("group_norm")
    x, gamma, beta = op.inputs
    _, mean, rstd = op.outputs
    return library.kdiff_group_norm_grad(
        dy, x, gamma, beta, mean, rstd,
        groups=op.get_attr("groups"), epsilon=op.get_attr("epsilon"), silu=op.get_attr("silu"),
    )


@tf.RegisterGradient("KdiffGroupNormGrad")
def _group_norm_second_gradient(op, ddx, ddgamma, ddbeta):
    """The gradient of the gradient kernel, by differentiating the composed form's
    vector-Jacobian product twice (mean and rstd are functions of x, accounted for there)."""
    dy, x, gamma, beta = op.inputs[:4]
    groups = op.get_attr("groups")
    activation = "silu" if op.get_attr("silu") else None
    epsilon = op.get_attr("epsilon")
    with tf.GradientTape() as outer:
        outer.watch([dy, x, gamma, beta])
        with tf.GradientTape() as inner:
            inner.watch([x, gamma, beta])
            y = composed_group_norm(x, gamma, beta, groups, epsilon, activation)
        first = inner.gradient(y, [x, gamma, beta], output_gradients=dy)
    second = outer.gradient(first, [dy, x, gamma, beta], output_gradients=[ddx, ddgamma, ddbeta])
    return [*second, None, None]
