"""Langevin dynamics (eq. 43) and NCSN's annealed Langevin dynamics (Algorithm 1)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kdiff import checks, _steps
from kdiff.samplers import _loop
from kdiff.samplers._common import (
    as_start,
    at_step,
    batch_fill,
    call_model,
    loop_options,
    step_labels,
)
from kdiff.schedules import Sigmas

__all__ = ["langevin", "annealed_langevin"]


def _langevin_steps(score_fn, x, levels, drift, noise, name, options, state_std):
    """x ← x + drift_k · s(x, σ_k) + noise_k · z for each k: the one Langevin update.

    ``levels``, ``drift`` and ``noise`` are per-step tables (numpy arrays, or tensors
    when the number of steps is a tensor); ``state_std`` the noise level of the state
    before the first step and after each (the loop's ``levels``, with α = 1).
    """
    noise_counts = _steps.plan(lambda: tf.cast(tf.convert_to_tensor(noise) > 0, tf.int32), levels)

    def step(i, x, noises):
        level = batch_fill(at_step(levels, i, x.dtype), x)
        score = call_model(score_fn, x, level, "score_fn")
        return x + at_step(drift, i, x.dtype) * score + at_step(noise, i, x.dtype) * noises[0]

    labels = step_labels("level=", levels, "{:.4g}")
    state_levels = _steps.plan(lambda: (tf.ones_like(state_std), tf.convert_to_tensor(state_std)), levels)
    return _loop.run_steps(
        step, x, noise_counts, num_draws=1, name=name, step_labels=labels, levels=state_levels, **options
    )


def langevin(
    score_fn,
    x0,
    step_size,
    n_steps,
    *,
    noise_level=0.0,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
):
    """Langevin dynamics (eq. 43): x_t = x_{t−1} + (ε/2) ∇log p(x_{t−1}) + √ε z_t.

    Args:
        score_fn: ``score_fn(x, s)``; called with s = ``noise_level`` for every example.
        x0: the starting point, [batch, ...].
        step_size: ε > 0.
        n_steps: number of steps ≥ 1.
        noise_level: the s passed to ``score_fn`` (0 for the data score).
        seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: see the module doc.

    Returns:
        The final x, or ``(x, trajectory)``.
    """
    x = as_start(x0, "x0")
    step_size = checks.positive(step_size, "step_size")
    n_steps = checks.positive_int(n_steps, "n_steps")
    levels = np.full(n_steps, float(noise_level))
    drift = np.full(n_steps, step_size / 2)
    noise = np.full(n_steps, np.sqrt(step_size))
    return _langevin_steps(score_fn, x, levels, drift, noise, "langevin", loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
                           np.full(n_steps + 1, float(noise_level)))


def annealed_langevin(
    score_fn,
    x0,
    sigmas,
    n_steps_each=100,
    step_lr=2e-5,
    denoise=False,
    *,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
):
    """NCSN's annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each σ_i (descending), ``n_steps_each`` Langevin steps with α_i = ε·σ_i²/σ_L².
    With ``denoise`` a final Tweedie step x + σ_L² s(x, σ_L) removes the last noise
    (NCSNv2).

    Args:
        score_fn: ``score_fn(x, σ)`` with σ a float tensor [batch].
        x0: the starting point, [batch, ...] (NCSN starts from uniform noise).
        sigmas: descending noise levels σ_1 > … > σ_L.
        n_steps_each: T, Langevin steps per level.
        step_lr: ε.
        denoise: add the final denoising step.
        seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: see the module doc.

    Returns:
        The final x, or ``(x, trajectory)``.
    """
    x = as_start(x0, "x0")
    sigmas = Sigmas(sigmas).sigmas
    n_steps_each = _steps.check(n_steps_each, "n_steps_each", 1)
    step_lr = checks.positive(step_lr, "step_lr")

    def build():
        alphas = tf.constant(step_lr * sigmas**2 / sigmas[-1] ** 2, tf.float64)
        tables = [
            tf.repeat(tf.constant(sigmas, tf.float64), n_steps_each),
            tf.repeat(alphas / 2, n_steps_each),
            tf.repeat(tf.sqrt(alphas), n_steps_each),
        ]
        if denoise:  # the Tweedie step x + σ_L² s(x, σ_L), without noise
            tables = [tf.concat([t, [v]], 0) for t, v in zip(tables, (sigmas[-1], sigmas[-1] ** 2, 0.0))]
        # the state: at σ_1 before the first step, at step k's σ after it (0 after the Tweedie step)
        state = [tables[0][:1], tables[0][:-1], [0.0]] if denoise else [tables[0][:1], tables[0]]
        return tables + [tf.concat(state, 0)]

    levels, drift, noise, state_std = _steps.plan(build, n_steps_each)
    return _langevin_steps(
        score_fn, x, levels, drift, noise, "annealed_langevin", loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
        state_std,
    )
