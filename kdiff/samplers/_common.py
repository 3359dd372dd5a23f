"""What the samplers share: argument checks, per-step table access, the model call, and the σ view of a process."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kdiff import _checks, _steps, processes

_SIGMA_GRID = 4097  # points of an SDE's σ(t) table, which maps σ back to t


def as_start(x, name):
    return _checks.float_tensor(x, name)


def check_clip(clip_x0):
    """``clip_x0`` as (low, high): a number c clips to [−c, c], a pair to [low, high]."""
    if clip_x0 is None:
        return None
    if isinstance(clip_x0, (tuple, list, np.ndarray)):
        if len(clip_x0) != 2 or not float(clip_x0[0]) < float(clip_x0[1]):
            raise ValueError(
                f"Expected `clip_x0` to be a number > 0 or a pair (low, high) with low < high. "
                f"Received: clip_x0={clip_x0!r}"
            )
        return float(clip_x0[0]), float(clip_x0[1])
    bound = _checks.positive(clip_x0, "clip_x0")
    return -bound, bound


def at_step(values, i, dtype):
    """``values[i]`` as a scalar tensor of ``dtype`` (``values`` a numpy array or a tensor)."""
    if isinstance(values, np.ndarray):
        return tf.gather(tf.constant(values, dtype=dtype), i)
    return tf.cast(tf.gather(values, i), dtype)


def step_labels(prefix, values, fmt="{}"):
    """Per-step descriptions for error messages (None when the values are graph tensors)."""
    if not isinstance(values, np.ndarray):
        return None
    return [prefix + fmt.format(v) for v in values]


def reverse(values):
    return tf.reverse(values, [0])


def scalar_like(value, x):
    """A Python / numpy float or a scalar tensor, as a scalar tensor of x's dtype."""
    return tf.cast(value, x.dtype)


def batch_fill(value, x, dtype=None):
    return tf.fill([tf.shape(x)[0]], tf.cast(value, dtype or x.dtype))


def call_model(model_fn, x, level, name):
    """Calls the model and checks that its output is shaped like x."""
    return _checks.model_output(model_fn(x, level), x, name)


def clip_to(x0, clip_x0):
    return x0 if clip_x0 is None else tf.clip_by_value(x0, clip_x0[0], clip_x0[1])


def loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit=None):
    """The keyword options every fixed-step sampler passes through to ``_loop.run_steps``."""
    return dict(
        seed=seed,
        noise_fn=noise_fn,
        return_trajectory=return_trajectory,
        compiled=compiled,
        jit_compile=jit_compile,
        callback=callback,
        edit=edit,
    )


def vp_levels(state_abar):
    """``levels`` of a state x = √ᾱ x₀ + √(1 − ᾱ) z from its ᾱ before each step and after the last."""
    return tf.sqrt(state_abar), tf.sqrt(1.0 - state_abar)


def sde_alpha_std(sde, t):
    """α(t) (the mean coefficient) and std(t) of the SDE's x_t | x₀, float64 tensors like t."""
    mean, std = sde.marginal_prob(tf.ones([tf.shape(t)[0], 1], tf.float64), tf.cast(t, tf.float64))
    return tf.cast(mean[:, 0], tf.float64), tf.cast(std, tf.float64)


def sde_levels(sde, times, end):
    """``levels`` of an SDE sampler whose step i starts at ``times[i]`` and whose last step
    ends at time ``end`` (None: on the data, α = 1 and std = 0)."""
    alpha, std = sde_alpha_std(sde, times)
    if end is None:
        return tf.concat([alpha, [1.0]], 0), tf.concat([std, [0.0]], 0)
    end_alpha, end_std = sde_alpha_std(sde, tf.reshape(tf.cast(end, tf.float64), [1]))
    return tf.concat([alpha, end_alpha], 0), tf.concat([std, end_std], 0)


def eps_of(out, std, model_output):
    """The ε a model output stands for: itself for an ε-model, −std·score for a score model."""
    return out if model_output == "eps" else -std * out


def check_process(process, kinds, name):
    """``process`` as a ``Process`` (descending σ's become ``Sigmas``), checked to be of ``kinds``."""
    process = processes.as_process(process, "process")
    if process.kind not in kinds:
        raise ValueError(
            f"Expected `process` for {name} to be a {' or '.join(kinds)} process. "
            f"Received: process={process!r} (a {process.kind})"
        )
    return process


def check_eps(eps, process):
    """An SDE's last time, checked to lie in (0, T); None for the other processes."""
    if process.kind != "sde":
        return None
    eps = _checks.positive(eps, "eps")
    if eps >= process.T:
        raise ValueError(f"Expected 0 < eps < {process.T}. Received: eps={eps!r}")
    return eps


class SigmaView:
    """A process seen in the σ parametrization x_σ = x_t / α: the network level and the α of a σ.

    Args:
        process: a ``Schedule``, ``Sigmas`` or ``SDE``.
        eps: an SDE's smallest time (its σ_min is σ(eps)); None for the others.

    Attributes:
        sigma_min, sigma_max: the process's range of σ (Python floats).
    """

    def __init__(self, process, eps):
        self.process = process
        if process.kind == "schedule":
            abar = process.alphas_cumprod
            self._log_sigmas = np.log(np.sqrt((1.0 - abar) / abar))  # ascending in t
            self.sigma_min, self.sigma_max = float(np.exp(self._log_sigmas[0])), float(np.exp(self._log_sigmas[-1]))
        elif process.kind == "sigmas":
            self.sigma_min, self.sigma_max = float(process.sigmas[-1]), float(process.sigmas[0])
        else:
            def grid():
                times = tf.constant(np.linspace(eps, process.T, _SIGMA_GRID), tf.float64)
                alpha, std = sde_alpha_std(process, times)
                return times, tf.math.log(std / alpha)

            self._times, self._log_sigmas = _steps.plan(grid)
            if np.any(np.diff(self._log_sigmas) <= 0):
                raise ValueError(f"Expected an SDE whose σ(t) = std/α increases in t. Received: sde={process!r}")
            self.sigma_min, self.sigma_max = float(np.exp(self._log_sigmas[0])), float(np.exp(self._log_sigmas[-1]))

    def levels(self, sigmas):
        """The network level and α at each σ (a float64 tensor, σ = 0 allowed: α = 1 there).

        Returns:
            ``(level, alpha)``: tensors of the process's ``level_dtype`` and float64.
        """
        positive = tf.where(sigmas > 0, sigmas, tf.constant(self.sigma_min, tf.float64))
        kind = self.process.kind
        if kind == "schedule":
            distance = tf.abs(tf.math.log(positive)[:, None] - tf.constant(self._log_sigmas)[None, :])
            return tf.cast(tf.argmin(distance, axis=1), tf.int32), 1.0 / tf.sqrt(1.0 + sigmas**2)
        if kind == "sigmas":
            return tf.cast(positive, tf.float32), tf.ones_like(sigmas)
        times = interpolate(tf.math.log(positive), tf.constant(self._log_sigmas), tf.constant(self._times))
        alpha, _ = sde_alpha_std(self.process, times)
        return tf.cast(times, tf.float32), tf.where(sigmas > 0, alpha, tf.ones_like(alpha))


def interpolate(x, xp, fp):
    """``np.interp`` in TensorFlow: piecewise-linear f(x) through (xp, fp), xp ascending, clamped."""
    last = tf.shape(xp)[0] - 2
    index = tf.clip_by_value(tf.searchsorted(xp, x, side="right") - 1, 0, last)
    x0, x1 = tf.gather(xp, index), tf.gather(xp, index + 1)
    weight = tf.clip_by_value((x - x0) / (x1 - x0), 0.0, 1.0)
    return tf.gather(fp, index) + weight * (tf.gather(fp, index + 1) - tf.gather(fp, index))


def state_noise_fn(noise_fn, history):
    """``noise_fn`` for a state [x, m_1, …, m_history] stacked on a new first axis: the user's
    function draws noise shaped like x; the history rows get zeros."""
    if noise_fn is None:
        return None

    def draw(shape):
        shape = list(shape)
        z = tf.convert_to_tensor(noise_fn(shape[1:]))
        if list(z.shape) != shape[1:]:
            raise ValueError(
                f"Expected `noise_fn` to return noise of shape {shape[1:]}. Received: shape={list(z.shape)}"
            )
        return tf.concat([z[None], tf.zeros([history] + shape[1:], z.dtype)], 0)

    return draw


def first_row(result, return_trajectory):
    """x (row 0) of a stacked state, and of each state of a trajectory."""
    if not return_trajectory:
        return result[0]
    final, trajectory = result
    rows = [s[0] for s in trajectory] if isinstance(trajectory, list) else trajectory[:, 0]
    return final[0], rows
