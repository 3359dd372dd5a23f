"""The survey's optimizer recipe: Adam, a learning-rate warm-up, then linear decay, clipping."""

from __future__ import annotations

import keras
import tensorflow as tf

from kdiff import checks

__all__ = ["FusedAdam", "WarmupLinearDecay", "adam"]


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
        self.peak = checks.positive(peak, "peak")
        self.warmup_steps = checks.int_in_range(warmup_steps, "warmup_steps", 0, None)
        self.warmup_from = checks.non_negative(warmup_from, "warmup_from")
        if decay_steps is not None and decay_steps <= self.warmup_steps:
            raise ValueError(
                "Expected `decay_steps` > warmup_steps or None. "
                f"Received: decay_steps={decay_steps!r}, warmup_steps={self.warmup_steps}"
            )
        self.decay_steps = decay_steps
        self.end = checks.non_negative(end, "end")

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


@keras.saving.register_keras_serializable(package="kdiff")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose update is TensorFlow's fused ``ResourceApplyAdam``
    kernel: one op per weight instead of Keras' eighteen, with the step's learning rate
    and β powers computed once per step instead of once per weight.

    The update is Adam's as Keras computes it (ε added to √v, bias correction folded
    into the step size), so its slots, checkpoints and results are ``Adam``'s up to
    float32 round-off. A U-Net has hundreds of weights: the fused update makes the train
    step's graph far smaller, so its first step comes sooner (docs/benchmarks.md), and
    leaves the steady step's time unchanged. ``global_clipnorm`` takes the global norm
    from one ``L2Loss`` op per gradient (Keras: a square, a sum and a constant), the same
    clipping to round-off. ``amsgrad`` and tf.distribute work as in ``Adam`` (``amsgrad``
    takes Keras' own update).

    Args:
        **kwargs: ``keras.optimizers.Adam`` arguments.
    """

    def _clip_gradients(self, grads):
        if not (self.global_clipnorm and self.global_clipnorm > 0) or (self.clipnorm and self.clipnorm > 0):
            return super()._clip_gradients(grads)
        present = [g for g in grads if g is not None]
        if not present:
            return grads
        # Keras' clip_by_global_norm, with ‖g‖² as 2·L2Loss(g) (one op) summed by one AddN.
        norm = tf.sqrt(2.0 * tf.add_n([tf.cast(tf.nn.l2_loss(g), present[0].dtype) for g in present]))
        clip = tf.cast(self.global_clipnorm, norm.dtype)
        scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)  # NaN for a non-finite norm
        return [None if g is None else g * tf.cast(scale, g.dtype) for g in grads]

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if self.amsgrad:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        step = tf.cast(self.iterations + 1, "float32")
        beta_1 = tf.constant(self.beta_1, "float32")
        beta_2 = tf.constant(self.beta_2, "float32")
        scalars = {
            "beta1_power": tf.pow(beta_1, step),
            "beta2_power": tf.pow(beta_2, step),
            "lr": tf.cast(learning_rate, "float32"),
            "beta1": beta_1,
            "beta2": beta_2,
            "epsilon": tf.constant(self.epsilon, "float32"),
        }
        slots = [
            (self._momentums[self._get_variable_index(v)].value, self._velocities[self._get_variable_index(v)].value)
            for v in trainable_variables
        ]
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        grads_and_vars = list(zip(grads, variables))

        def apply(variable, gradient, m, v):
            return tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.handle, v=v.handle, grad=tf.cast(gradient, variable.dtype), **scalars
            )

        if not tf.distribute.has_strategy():  # the default strategy: no all-reduce, no Identity a weight
            for (gradient, variable), (m, v) in zip(grads_and_vars, slots):
                apply(variable, gradient, m, v)
            return

        def update(distribution, grads_and_vars):
            for (gradient, variable), (m, v) in zip(grads_and_vars, slots):
                distribution.extended.update(variable, apply, args=(gradient, m, v), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            update, self._distribution_strategy, self._all_reduce_sum_gradients(grads_and_vars)
        )


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
        A ``FusedAdam`` (a ``keras.optimizers.Adam``).
    """
    schedule = WarmupLinearDecay(learning_rate, warmup_steps, warmup_from, decay_steps, end_learning_rate)
    return FusedAdam(learning_rate=schedule, global_clipnorm=global_clipnorm, **kwargs)
