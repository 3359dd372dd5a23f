"""What the samplers share: argument checks, per-step table access and the model call."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kdiff import checks
from kdiff.process import as_process

def as_start(x, name):
    return checks.float_tensor(x, name)


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
    bound = checks.positive(clip_x0, "clip_x0")
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
    return checks.model_output(model_fn(x, level), x, name)


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


def sde_levels(sde, times, end):
    """``levels`` of an SDE sampler whose step i starts at ``times[i]`` and whose last step
    ends at time ``end`` (None: on the data, α = 1 and std = 0)."""
    alpha, std = sde.marginal(times)
    if end is None:
        return tf.concat([alpha, [1.0]], 0), tf.concat([std, [0.0]], 0)
    end_alpha, end_std = sde.marginal(tf.reshape(tf.cast(end, tf.float64), [1]))
    return tf.concat([alpha, end_alpha], 0), tf.concat([std, end_std], 0)


def eps_of(out, std, model_output):
    """The ε a model output stands for: itself for an ε-model, −std·score for a score model."""
    return out if model_output == "eps" else -std * out


def check_process(process, kinds, name):
    """``process`` as a ``Process`` (descending σ's become ``Sigmas``), checked to be of ``kinds``."""
    process = as_process(process, "process")
    if process.kind not in kinds:
        raise ValueError(
            f"Expected `process` for {name} to be a {' or '.join(kinds)} process. "
            f"Received: process={process!r} (a {process.kind})"
        )
    return process


def check_eps(eps, process):
    """An SDE's last time, checked to lie in (0, T); None for the other processes."""
    if not process.continuous_time:
        return None
    eps = checks.positive(eps, "eps")
    if eps >= process.T:
        raise ValueError(f"Expected 0 < eps < {process.T}. Received: eps={eps!r}")
    return eps


def sigma_grid(grid, sigma_min=None, sigma_max=None):
    """An explicit σ grid, checked: 1-D, at least two values, finite, ≥ 0 and descending.

    Args:
        grid: the σ's (a list, numpy array or constant tensor).
        sigma_min, sigma_max: what the caller also received; they must be None with a grid.

    Returns:
        A float64 numpy array.
    """
    if sigma_min is not None or sigma_max is not None:
        raise ValueError(
            "Expected `sigma_min` and `sigma_max` unset with a `grid` (its σ's are the range). "
            f"Received: sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
        )
    values = np.asarray(grid, np.float64)
    if values.ndim != 1 or values.size < 2 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"Expected `grid` to be at least two finite σ's >= 0. Received: grid={grid!r}")
    if np.any(np.diff(values) >= 0):
        raise ValueError(f"Expected `grid` to descend strictly. Received: grid={values.tolist()}")
    return values


def timestep_grid(grid, schedule):
    """An explicit timestep grid for a schedule, checked: ascending ints in [0, T), or
    descending σ's mapped to the distinct timesteps nearest them (σ = 0 dropped).

    Args:
        grid: ints or σ's (a list, numpy array or constant tensor).
        schedule: the ``Schedule``.

    Returns:
        An ascending int64 numpy array.
    """
    values = np.asarray(grid)
    if values.ndim != 1 or values.size < 1:
        raise ValueError(f"Expected `grid` to be a 1-D list of timesteps or σ's. Received: grid={grid!r}")
    if np.issubdtype(values.dtype, np.floating):
        sigmas = sigma_grid(values) if values.size > 1 else values
        sigmas = sigmas[sigmas > 0]
        levels, _ = schedule.at_sigma(tf.constant(sigmas, tf.float64))
        return np.unique(np.asarray(levels, np.int64))
    values = values.astype(np.int64)
    if values[0] < 0 or values[-1] >= schedule.T or np.any(np.diff(values) <= 0):
        raise ValueError(
            f"Expected `grid` to be ascending timesteps in [0, {schedule.T}). Received: grid={values.tolist()}"
        )
    return values


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
