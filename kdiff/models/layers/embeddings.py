"""Embeddings of a diffusion model's level — timestep t, time or noise level σ — as features.

``SinusoidalEmbedding`` is DDPM's timestep embedding (``nn.get_timestep_embedding``, with
diffusers' ``flip_sin_to_cos`` / ``freq_shift``); ``GaussianFourierFeatures`` is
score_sde's ``GaussianFourierProjection`` of a continuous value. Both compute in float32
(a bfloat16 t of 999 would read 1000) and only then cast to the layer's compute dtype.
"""

from __future__ import annotations

import math
import numbers

import keras
from keras import ops

from kdiff import checks
from kdiff.models.layers._common import PACKAGE

__all__ = ["SinusoidalEmbedding", "GaussianFourierFeatures"]


def _sin_cos(args):
    """[sin(args), cos(args)] along the last axis: both embeddings' features."""
    return ops.concatenate([ops.sin(args), ops.cos(args)], axis=-1)


def _embedding_shape(input_shape, dim):
    return (input_shape[0] if len(input_shape) else 1, dim)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SinusoidalEmbedding(keras.layers.Layer):
    """Sinusoidal timestep embedding of DDPM (``nn.get_timestep_embedding``).

    ``emb[:, i] = sin(t·f_i)`` and ``emb[:, half + i] = cos(t·f_i)`` with
    ``f_i = exp(−log(max_period)·i / (half − freq_shift))``, ``half = dim // 2``; an odd
    ``dim`` is zero-padded. ``freq_shift=1`` is DDPM's (and the default); diffusers'
    ``Timesteps`` exposes it as ``freq_shift`` (``downscale_freq_shift``) together with
    ``flip_sin_to_cos`` (cosines first). Computed in float32 and cast to the layer's
    compute dtype.

    Args:
        dim: size of the embedding, ≥ 4.
        max_period: the longest period, 10000 in DDPM (and in the Transformer).
        flip_sin_to_cos: put the cosines first (``[cos, sin]``).
        freq_shift: the shift of the frequency denominator, a number < ``dim // 2``
            (1 in DDPM, 0 in guided-diffusion and most diffusers models).
        **kwargs: base layer arguments (``name``, ``dtype``).

    Call arguments:
        t: int or float tensor ``[batch]`` (a scalar is read as a batch of one).

    Returns:
        A ``[batch, dim]`` tensor in the compute dtype.
    """

    def __init__(self, dim, max_period=10000, flip_sin_to_cos=False, freq_shift=1, **kwargs):
        kwargs.setdefault("autocast", False)  # keep a float t in float32
        super().__init__(**kwargs)
        self.dim = checks.int_in_range(dim, "dim", 4, None)
        self.max_period = checks.positive(max_period, "max_period")
        if self.max_period <= 1:
            raise ValueError(f"Expected `max_period` > 1. Received: max_period={max_period!r}")
        self.flip_sin_to_cos = bool(flip_sin_to_cos)
        if isinstance(freq_shift, bool) or not isinstance(freq_shift, numbers.Real) or not (
                freq_shift < self.dim // 2):
            raise ValueError(
                f"Expected `freq_shift` a number below dim // 2 = {self.dim // 2}. "
                f"Received: freq_shift={freq_shift!r}"
            )
        self.freq_shift = freq_shift

    def call(self, t):
        t = ops.reshape(ops.cast(ops.convert_to_tensor(t), "float32"), (-1,))
        half = self.dim // 2
        freqs = ops.exp(
            ops.arange(half, dtype="float32")
            * (-math.log(self.max_period) / (half - self.freq_shift))
        )
        emb = _sin_cos(t[:, None] * freqs[None, :])
        if self.flip_sin_to_cos:
            emb = ops.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
        if self.dim % 2:
            emb = ops.pad(emb, [[0, 0], [0, 1]])
        return ops.cast(emb, self.compute_dtype)

    def compute_output_shape(self, t_shape):
        return _embedding_shape(t_shape, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, max_period=self.max_period,
                      flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class GaussianFourierFeatures(keras.layers.Layer):
    """Random Fourier features of a scalar (score_sde's ``GaussianFourierProjection``).

    ``emb = [sin(2π·v·W), cos(2π·v·W)]`` with fixed ``W ~ N(0, scale²)`` of size ``dim // 2``
    (a non-trainable weight, so it is saved with the model). The value is used as given:
    score_sde feeds ``log σ`` for VE models and ``t`` for VP ones — that choice belongs to
    the caller. Computed in float32 and cast to the compute dtype.

    Args:
        dim: size of the embedding, even, ≥ 2.
        scale: standard deviation of the random frequencies (16 in score_sde).
        **kwargs: base layer arguments.

    Call arguments:
        values: float tensor ``[batch]`` (continuous t, σ or log σ).

    Returns:
        A ``[batch, dim]`` tensor in the compute dtype.
    """

    def __init__(self, dim, scale=16.0, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.dim = checks.int_in_range(dim, "dim", 2, None)
        if self.dim % 2:
            raise ValueError(f"Expected `dim` to be even. Received: dim={dim}")
        self.scale = checks.positive(scale, "scale")

    def build(self, input_shape=None):
        self.frequencies = self.add_weight(
            name="frequencies",
            shape=(self.dim // 2,),
            initializer=keras.initializers.RandomNormal(stddev=self.scale),
            trainable=False,
            dtype="float32",
        )

    def call(self, values):
        v = ops.reshape(ops.cast(ops.convert_to_tensor(values), "float32"), (-1,))
        w = ops.cast(self.frequencies, "float32")
        emb = _sin_cos(v[:, None] * w[None, :] * (2.0 * math.pi))
        return ops.cast(emb, self.compute_dtype)

    def compute_output_shape(self, values_shape):
        return _embedding_shape(values_shape, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, scale=self.scale)
        return config
