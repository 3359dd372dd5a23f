"""Step counts that are Python ints (the usual call) or int tensors (an export's runtime input).

A sampler's per-step tables are written once, in TensorFlow. With a Python int they are
computed eagerly (even while a caller's ``tf.function`` is tracing) and handed on as
numpy arrays — graph constants, readable for error messages; with a tensor they are ops
of the graph, so one traced sampler serves every number of steps.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kdiff import checks


def is_tensor(steps):
    """Whether ``steps`` is a tensor (rather than a Python or numpy int)."""
    return tf.is_tensor(steps) and not isinstance(steps, np.ndarray)


def check(steps, name, low, high=None):
    """``steps`` as an int checked to lie in [low, high], or a tensor cast to int32.

    A tensor is not checked here: the caller (the export's ``generate``) asserts its range
    in the graph.

    Args:
        steps: an int or an int tensor.
        name: the argument's name, for the message.
        low: the smallest allowed value.
        high: the largest allowed value, or None.

    Returns:
        An int, or an int32 tensor.
    """
    if is_tensor(steps):
        if not steps.dtype.is_integer:
            raise ValueError(f"Expected `{name}` to be an integer tensor. Received: dtype={steps.dtype.name}")
        return tf.cast(steps, tf.int32)
    return checks.int_in_range(steps, name, low, high)


def plan(build, *counts):
    """Runs ``build()``: eagerly, with numpy results, when every count is a Python int.

    Args:
        build: a function of no arguments returning a (nested) structure of tensors.
        *counts: the step counts the tables depend on.

    Returns:
        ``build()``'s structure, with numpy arrays in place of tensors unless a count is a
        tensor.
    """
    if any(is_tensor(c) for c in counts):
        return build()
    with tf.init_scope():
        return tf.nest.map_structure(lambda t: t.numpy() if tf.is_tensor(t) else t, build())
