"""Classifier-free guidance (Ho & Salimans 2022): training with a null class, sampling with a scale.

A class-conditional network that also knows a *null class* — one more class embedding
than the data has classes, index ``num_classes`` — learns the unconditional model too
when its labels are replaced by the null class with a small probability during training
(``drop_labels``, ``label_dropout`` = 0.1 by default in ``kdiff.DDPM`` / ``kdiff.ScoreSDE``).
At sampling time the conditional and unconditional outputs are mixed as diffusers does,

    ε̂ = ε_u + s · (ε_c − ε_u),

with s the ``guidance_scale`` (s = 1: the conditional model alone, s = 0: the
unconditional one, s > 1: samples that look more like their class). The mix is linear in
the network's output, so the same formula guides ε-models and score models. Both halves
come from one network call on a doubled batch (``guided``). A learned variance ([ε, v]
outputs) keeps the conditional half's v, as GLIDE and diffusers' pipelines do.
"""

from __future__ import annotations

import numbers

import tensorflow as tf

__all__ = ["check_scale", "drop_labels", "guided"]


def check_scale(guidance_scale, num_classes, null_label):
    """A guidance scale, checked against what the model can do.

    Args:
        guidance_scale: a float >= 0, a float tensor (inside a graph), or None (no guidance).
        num_classes: the model's classes (None: unconditional).
        null_label: the model's null class (None: the network has none).

    Returns:
        The scale as a float (or the tensor), or None.

    Raises:
        ValueError: a scale for an unconditional model or one without a null class, or a
            negative / non-finite scale.
    """
    if guidance_scale is None:
        return None
    if num_classes is None:
        raise ValueError(
            "Expected no `guidance_scale` for an unconditional model (classifier-free guidance mixes "
            f"conditional and unconditional outputs). Received: guidance_scale={guidance_scale!r}"
        )
    if null_label is None:
        raise ValueError(
            "Expected a model with a null class for `guidance_scale`: build its network with "
            f"num_classes={num_classes + 1} (the {num_classes} classes and the null class {num_classes}) and "
            f"train it with label dropout. Received: guidance_scale={guidance_scale!r} for a network with "
            f"{num_classes} classes"
        )
    if tf.is_tensor(guidance_scale):
        return tf.cast(guidance_scale, tf.float32)
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) or not (
        0.0 <= float(guidance_scale) < float("inf")
    ):
        raise ValueError(f"Expected `guidance_scale` a finite number >= 0. Received: guidance_scale={guidance_scale!r}")
    return float(guidance_scale)


def drop_labels(y, null_label, probability, uniform):
    """Labels with each replaced by the null class where ``uniform < probability``.

    Args:
        y: int class labels [batch].
        null_label: the null class's index.
        probability: the label dropout probability in [0, 1).
        uniform: uniform draws in [0, 1) [batch] (stateless, from the training step's seed).

    Returns:
        int32 labels [batch].
    """
    y = tf.cast(y, tf.int32)
    return tf.where(uniform < probability, tf.fill(tf.shape(y), tf.constant(null_label, tf.int32)), y)


def guided(make_model_fn, y, null_label, guidance_scale, channels, sampler=None):
    """The guided model function ``fn(x, level)``: ε_u + s·(ε_c − ε_u) from one network call.

    Args:
        make_model_fn: ``make_model_fn(y=..., sampler=...) -> fn(x, level)`` of the model.
        y: int class labels [batch] of the samples.
        null_label: the null class's index.
        guidance_scale: s, a float (1.0: the conditional model alone, without the doubled
            batch) or a float32 scalar tensor (an export's input: s = 1 then takes the
            conditional branch of a ``tf.cond``).
        channels: the images' channels C (outputs beyond them — a learned variance v — are
            taken from the conditional half).
        sampler: the sampler the function is for (passed to ``make_model_fn``).

    Returns:
        ``fn(x, level)`` with the network's output shape.
    """
    y = tf.cast(y, tf.int32)
    conditional = make_model_fn(y=y, sampler=sampler)
    if not tf.is_tensor(guidance_scale) and guidance_scale == 1.0:
        return conditional
    both = make_model_fn(y=tf.concat([y, tf.fill(tf.shape(y), tf.constant(null_label, tf.int32))], 0), sampler=sampler)

    def mixed(x, level):
        n = tf.shape(x)[0]
        level = tf.convert_to_tensor(level)
        if level.shape.rank == 0:
            level = tf.fill([n], level)
        out = both(tf.concat([x, x], 0), tf.concat([level, level], 0))
        cond, uncond = out[:n], out[n:]
        scale = tf.cast(guidance_scale, out.dtype)
        eps = uncond[..., :channels] + scale * (cond[..., :channels] - uncond[..., :channels])
        return tf.concat([eps, cond[..., channels:]], -1) if out.shape[-1] != channels else eps

    if not tf.is_tensor(guidance_scale):
        return mixed

    def fn(x, level):
        return tf.cond(tf.equal(guidance_scale, 1.0), lambda: conditional(x, level), lambda: mixed(x, level))

    return fn
