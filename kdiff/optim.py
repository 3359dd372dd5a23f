"""The survey's optimizer recipe: Adam, a learning-rate warm-up, then linear decay, clipping."""

from __future__ import annotations

import keras

from kdiff import _checks

__all__ = ["WarmupLinearDecay", "adam"]


@keras.saving.register_keras_serializable(package="kdiff")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``warmup_from`` to ``peak`` over ``warmup_steps``, then linear
    decay to ``end`` at ``decay_steps`` (constant after; no decay when ``decay_steps`` is None).

    Args:
        peak: the learning rate reached after warm-up.
        warmup_steps: length of the warm-up (0 for none).
        warmup_from: the learning rate at step 0.
        decay_steps: the step at which the decay reaches ``end``; None keeps ``peak``.
        end: the final learning rate.
    """

    def __init__(self, peak=1e-4, warmup_steps=500, warmup_from=4e-5, decay_steps=None, end=0.0):
        self.peak = _checks.positive(peak, "peak")
        self.warmup_steps = _checks.int_in_range(warmup_steps, "warmup_steps", 0, None)
        self.warmup_from = _checks.non_negative(warmup_from, "warmup_from")
        if decay_steps is not None and decay_steps <= self.warmup_steps:
            raise ValueError(
                "Expected `decay_steps` > warmup_steps or None. "
                f"Received: decay_steps={decay_steps!r}, warmup_steps={self.warmup_steps}"
            )
        self.decay_steps = decay_steps
        self.end = _checks.non_negative(end, "end")

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.warmup_from + (self.peak - self.warmup_from) * step / max(self.warmup_steps, 1)
        rate = keras.ops.where(step < self.warmup_steps, warm, self.peak)
        if self.decay_steps is not None:
            span = float(self.decay_steps - self.warmup_steps)
            frac = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            decayed = self.peak + (self.end - self.peak) * frac
            rate = keras.ops.where(step < self.warmup_steps, warm, decayed)
        return rate

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "warmup_from": self.warmup_from,
            "decay_steps": self.decay_steps,
            "end": self.end,
        }


def adam(
    learning_rate=1e-4,
    *,
    warmup_steps=500,
    warmup_from=4e-5,
    decay_steps=None,
    end_learning_rate=0.0,
    global_clipnorm=1.0,
    **kwargs,
):
    """Adam with the survey's recipe: warm-up over 500 steps from 4e-5 to 1e-4, then linear decay.

    Args:
        learning_rate: the peak learning rate.
        warmup_steps: steps of linear warm-up.
        warmup_from: the learning rate at step 0.
        decay_steps: total steps; the rate decays linearly to ``end_learning_rate`` by
            then (None: no decay, as in Ho et al.).
        end_learning_rate: the rate at ``decay_steps``.
        global_clipnorm: clip gradients to this global norm (DDPM's grad_clip = 1);
            None for no clipping.
        **kwargs: more ``keras.optimizers.Adam`` arguments.

    Returns:
        A ``keras.optimizers.Adam``.
    """
    schedule = WarmupLinearDecay(learning_rate, warmup_steps, warmup_from, decay_steps, end_learning_rate)
    return keras.optimizers.Adam(learning_rate=schedule, global_clipnorm=global_clipnorm, **kwargs)
