"""Second derivatives and forward-mode products of a function, for tests that compare a
kernel's with TensorFlow's own ops'."""

import tensorflow as tf


def hessian_vector(function, x, v):
    """H·v of ``sum(sin(function(x)))`` at ``x``: the gradient of a gradient, through
    ``function``'s ops twice (sin makes the second derivative nonzero)."""
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = tf.reduce_sum(tf.sin(function(x)))
        gradient = inner.gradient(loss, x)
    return outer.gradient(gradient, x, output_gradients=v)


def jvp(function, x, v):
    """The forward-mode Jacobian-vector product of ``function`` at ``x`` along ``v``."""
    with tf.autodiff.ForwardAccumulator(x, v) as accumulator:
        y = function(x)
    return accumulator.jvp(y)
