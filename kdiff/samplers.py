"""Samplers of the four families: pure functions of (model function, start tensor, schedule or SDE, options).

* DDPM ancestral sampling (Algorithm 2, with Improved DDPM's learned variance and respacing),
* DDIM (eq. 31) and its deterministic inversion,
* Langevin dynamics (eq. 43) and NCSN's annealed Langevin dynamics (Algorithm 1),
* the reverse SDE solvers of score-based models: Euler–Maruyama, predictor–corrector
  (Figure 11), and the probability-flow ODE.

Every per-step coefficient is computed once, in float64 numpy, into one array indexed by
the step, so timesteps, noise levels and coefficients cannot drift apart. Fixed-step
samplers run their loop as one ``tf.while_loop`` (see ``kdiff._loop``); each takes

    seed: int, shape-[2] int tensor, or None — stateless noise, reproducible;
    noise_fn: ``noise_fn(shape) -> noise``, called once per noise draw in step order
        (tests use it to inject noise); forces an eager Python loop;
    return_trajectory: also return the list of intermediate x (start included);
    compiled: False runs the loop eagerly in Python (debugging);
    jit_compile: True, False or "auto" (XLA only where a GPU/TPU is visible);
    callback: ``callback(i, num_steps)``, a Python function called after each step i
        (0-based) — progress bars, logging; in a compiled loop it runs through
        ``tf.numpy_function``, so not under XLA and not inside a SavedModel;
    edit: a ``kdiff._loop.StepEdit`` (inpainting and img2img, ``kdiff.editing``): every
        fixed-step sampler reports the level of its state to the shared loop, whose hooks
        the edit uses.

Model callables: ``eps_fn(x, t)`` with t an int32 tensor [batch] of 0-based timesteps;
``score_fn(x, s)`` with s a float tensor [batch] (σ for NCSN, continuous t for SDEs).
"""

from __future__ import annotations

import numpy as np
import scipy.integrate
import tensorflow as tf

from kdiff import _checks, _loop, _ops, _steps
from kdiff.schedules import Schedule, Sigmas, spaced_timesteps
from kdiff.sde import SDE

__all__ = [
    "ddpm",
    "ddim",
    "ddim_invert",
    "ddim_timesteps",
    "langevin",
    "annealed_langevin",
    "euler_maruyama",
    "predictor_corrector",
    "probability_flow",
    "NonFiniteSampleError",
    "ODE_FIXED_METHODS",
]

NonFiniteSampleError = _loop.NonFiniteSampleError

_DDPM_VARIANCES = ("beta", "beta_tilde", "learned")
_DDPM_SPACINGS = ("even", "leading")
_PREDICTORS = ("euler_maruyama", "reverse_diffusion")
_CORRECTORS = ("langevin", None)
_SDE_GRIDS = ("continuous", "discrete")  # predictor_corrector's time grids
ODE_FIXED_METHODS = ("euler", "heun", "rk4")  # probability_flow's fixed-step (in-graph) methods


# ----------------------------------------------------------------------------- helpers


def _start(x, name):
    return _checks.float_tensor(x, name)


def _check_clip(clip_x0):
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


def _at(values, i, dtype):
    """``values[i]`` as a scalar tensor of ``dtype`` (``values`` a numpy array or a tensor)."""
    if isinstance(values, np.ndarray):
        return tf.gather(tf.constant(values, dtype=dtype), i)
    return tf.cast(tf.gather(values, i), dtype)


def _labels(prefix, values, fmt="{}"):
    """Per-step descriptions for error messages (None when the values are graph tensors)."""
    if not isinstance(values, np.ndarray):
        return None
    return [prefix + fmt.format(v) for v in values]


def _reverse(values):
    return tf.reverse(values, [0])


def _scalar(value, x):
    """A Python / numpy float or a scalar tensor, as a scalar tensor of x's dtype."""
    return tf.cast(value, x.dtype)


def _batch_fill(value, x, dtype=None):
    return tf.fill([tf.shape(x)[0]], tf.cast(value, dtype or x.dtype))


def _call_model(model_fn, x, level, name):
    """Calls the model and checks that its output is shaped like x."""
    return _checks.model_output(model_fn(x, level), x, name)


def _clip(x0, clip_x0):
    return x0 if clip_x0 is None else tf.clip_by_value(x0, clip_x0[0], clip_x0[1])


def _loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit=None):
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


def _vp_levels(state_abar):
    """``levels`` of a state x = √ᾱ x₀ + √(1 − ᾱ) z from its ᾱ before each step and after the last."""
    return tf.sqrt(state_abar), tf.sqrt(1.0 - state_abar)


def _sde_alpha_std(sde, t):
    """α(t) (the mean coefficient) and std(t) of the SDE's x_t | x₀, float64 tensors like t."""
    mean, std = sde.marginal_prob(tf.ones([tf.shape(t)[0], 1], tf.float64), tf.cast(t, tf.float64))
    return tf.cast(mean[:, 0], tf.float64), tf.cast(std, tf.float64)


def _sde_levels(sde, times, end):
    """``levels`` of an SDE sampler whose step i starts at ``times[i]`` and whose last step
    ends at time ``end`` (None: on the data, α = 1 and std = 0)."""
    alpha, std = _sde_alpha_std(sde, times)
    if end is None:
        return tf.concat([alpha, [1.0]], 0), tf.concat([std, [0.0]], 0)
    end_alpha, end_std = _sde_alpha_std(sde, tf.reshape(tf.cast(end, tf.float64), [1]))
    return tf.concat([alpha, end_alpha], 0), tf.concat([std, end_std], 0)


# ------------------------------------------------------------------------------ DDPM


def ddpm(
    eps_fn,
    x_T,
    schedule,
    variance="beta_tilde",
    steps=None,
    clip_x0=None,
    *,
    spacing="even",
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
):
    """Ancestral sampling of DDPM (Ho et al. 2020, Algorithm 2; Improved DDPM options).

    Each step predicts x̂_0 from ε_θ (eq. 29), takes the posterior mean μ̃ (eq. 9) and adds
    σ_t z, with no noise at the last step.

    Args:
        eps_fn: ``eps_fn(x, t) -> ε`` (with ``variance="learned"``: ``[ε, v]`` or one
            tensor of 2×C channels, v ∈ [−1, 1]).
        x_T: start noise, [batch, ...].
        schedule: the ``Schedule`` the model was trained with.
        variance: "beta" (σ² = β_t), "beta_tilde" (σ² = β̃_t) or "learned" (eq. 20,
            with v clipped to [−1, 1]).
        steps: None for all T steps, or fewer: the schedule is respaced over the
            timesteps ``spacing`` picks (``eps_fn`` still sees original t).
        clip_x0: clip the predicted x_0 to [−clip_x0, clip_x0]; None clips nothing.
        spacing: the timesteps of a respaced run: "even" (Improved DDPM's
            ``space_timesteps``: 0 … T−1, both ends kept) or "leading" (i·(T // steps), as
            DDIM and diffusers' ``DDPMScheduler`` with its default ``timestep_spacing``).
        seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: see the module doc.

    Returns:
        x_0, or ``(x_0, trajectory)``.
    """
    x = _start(x_T, "x_T")
    schedule = Schedule.check(schedule)
    _checks.one_of(variance, "variance", _DDPM_VARIANCES)
    _checks.one_of(spacing, "spacing", _DDPM_SPACINGS)
    clip_x0 = _check_clip(clip_x0)
    full = steps is None or (not _steps.is_tensor(steps) and steps == schedule.T)
    steps = schedule.T if full else _steps.check(steps, "steps", 1, schedule.T)
    plan = _steps.plan(lambda: _ddpm_plan(schedule, None if full else steps, spacing), steps)
    fixed_log = {"beta": plan["max_log"], "beta_tilde": plan["min_log"], "learned": None}[variance]

    def step(i, x, noises):
        t = _batch_fill(_at(plan["model_t"], i, tf.int32), x, tf.int32)
        out = eps_fn(x, t)
        if variance == "learned":
            eps, v = _checks.split_eps_v(out, x, "eps_fn")
            # v interpolates log β̃ … log β (eq. 20); outside [−1, 1] it would extrapolate
            # the variance (an untrained network can overflow it), so it is clipped.
            frac = (tf.clip_by_value(v, -1.0, 1.0) + 1.0) / 2.0
            log_var = frac * _at(plan["max_log"], i, x.dtype) + (1.0 - frac) * _at(plan["min_log"], i, x.dtype)
        else:
            eps = _checks.model_output(out, x, "eps_fn")
            log_var = _at(fixed_log, i, x.dtype)
        x0 = _clip(_at(plan["recip"], i, x.dtype) * x - _at(plan["recipm1"], i, x.dtype) * eps, clip_x0)
        mean = _at(plan["coef1"], i, x.dtype) * x0 + _at(plan["coef2"], i, x.dtype) * x
        return mean + tf.exp(0.5 * log_var) * noises[0]

    return _loop.run_steps(
        step,
        x,
        plan["noise_counts"],
        num_draws=1,
        name="ddpm",
        step_labels=_labels("t=", plan["model_t"]),
        levels=(plan["level_alpha"], plan["level_std"]),
        **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
    )


def _ddpm_plan(schedule, steps, spacing="even"):
    """DDPM's per-step tables in step order (step i handles timestep ``model_t[i]``).

    Args:
        schedule: the ``Schedule``.
        steps: None for all T timesteps, or how many (an int or a tensor).
        spacing: "even" or "leading" (see ``ddpm``).

    Returns:
        A dict of tensors: ``model_t``, ``recip`` (1/√ᾱ), ``recipm1`` (√(1/ᾱ − 1)),
        ``coef1`` / ``coef2`` (the posterior mean's x̂_0 / x_t coefficients, eq. 9),
        ``min_log`` (log β̃, clipped at t = 0) and ``max_log`` (log β), ``noise_counts``,
        and the state's ``levels`` (``level_alpha``, ``level_std``: √ᾱ, √(1 − ᾱ)).
    """
    if steps is None:
        timesteps = tf.range(schedule.T, dtype=tf.int64)
        betas = tf.constant(schedule.betas, tf.float64)
        abar = tf.constant(schedule.alphas_cumprod, tf.float64)
    else:  # respaced (Improved DDPM §4): β'_i = 1 − ᾱ_{t_i} / ᾱ_{t_{i−1}}
        timesteps = spaced_timesteps(schedule.T, steps) if spacing == "even" else ddim_timesteps(schedule.T, steps)
        picked = tf.gather(tf.constant(schedule.alphas_cumprod, tf.float64), timesteps)
        betas = 1.0 - picked / tf.concat([[1.0], picked[:-1]], 0)
        abar = tf.math.cumprod(1.0 - betas)
    alphas = 1.0 - betas
    abar_prev = tf.concat([[1.0], abar[:-1]], 0)
    n = tf.shape(betas)[0]
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    # log β̃ at t = 0 is log 0: the reference code uses β̃_1 there (β_0 when T = 1).
    floor = tf.where(n > 1, posterior_variance[tf.minimum(1, n - 1)], betas[0])
    level_alpha, level_std = _vp_levels(tf.concat([_reverse(abar), [1.0]], 0))  # x_0 after the last step
    return {
        "level_alpha": level_alpha,
        "level_std": level_std,
        "model_t": _reverse(tf.cast(timesteps, tf.int32)),
        "recip": _reverse(tf.sqrt(1.0 / abar)),
        "recipm1": _reverse(tf.sqrt(1.0 / abar - 1.0)),
        "coef1": _reverse(betas * tf.sqrt(abar_prev) / (1.0 - abar)),
        "coef2": _reverse((1.0 - abar_prev) * tf.sqrt(alphas) / (1.0 - abar)),
        "min_log": _reverse(tf.math.log(tf.concat([[floor], posterior_variance[1:]], 0))),
        "max_log": _reverse(tf.math.log(tf.concat([[floor], betas[1:]], 0))),
        "noise_counts": tf.concat([tf.ones([n - 1], tf.int32), [0]], 0),  # x_0 = μ̃ at the last step
    }


# ------------------------------------------------------------------------------ DDIM


def ddim_timesteps(T, steps):
    """DDIM's uniform timesteps t_i = i·(T // steps), i = 0 … steps−1 (ascending).

    Args:
        T: the schedule's number of steps.
        steps: the number of sampling steps, 1 ≤ steps ≤ T (an int, or an int tensor
            inside a graph).

    Returns:
        An int64 array of length ``steps`` (a tensor for a tensor ``steps``).
    """
    steps = _steps.check(steps, "steps", 1, T)

    def build():
        n = tf.cast(steps, tf.int64)
        return tf.range(n) * (T // n)

    return _steps.plan(build, steps)


def ddim(
    eps_fn,
    x_T,
    schedule,
    steps=50,
    eta=0.0,
    clip_x0=None,
    *,
    clipped_eps=True,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
):
    """DDIM sampling (Song et al. 2020, eq. 31).

    x_{prev} = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε_θ + σ z, with
    σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev). Timesteps t_i = i·(T // steps) from
    i = steps−1 down to 0, and ᾱ past the last step is 1 — the DDIM reference code's
    uniform spacing and diffusers' DDIMScheduler default. η = 0 is deterministic, η = 1
    is DDPM-like ancestral sampling.

    Args:
        eps_fn: ``eps_fn(x, t) -> ε``.
        x_T: start noise, [batch, ...].
        schedule: the ``Schedule`` the model was trained with.
        steps: number of sampling steps, 1 ≤ steps ≤ T.
        eta: η ≥ 0.
        clip_x0: clip the predicted x_0 to [−clip_x0, clip_x0]; None clips nothing.
        clipped_eps: with ``clip_x0``, recompute ε from the clipped x̂_0 (diffusers'
            ``use_clipped_model_output=True``); False keeps the network's ε, as diffusers'
            ``DDIMPipeline`` does by default.
        seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: see the module doc.

    Returns:
        x_0, or ``(x_0, trajectory)``.
    """
    x = _start(x_T, "x_T")
    schedule = Schedule.check(schedule)
    eta = _checks.non_negative(eta, "eta")
    clip_x0 = _check_clip(clip_x0)
    steps = _steps.check(steps, "steps", 1, schedule.T)
    plan = _steps.plan(lambda: _ddim_plan(schedule, steps, eta), steps)

    def step(i, x, noises):
        t = _batch_fill(_at(plan["model_t"], i, tf.int32), x, tf.int32)
        eps = _call_model(eps_fn, x, t, "eps_fn")
        a, a_prev = _at(plan["abar"], i, x.dtype), _at(plan["abar_prev"], i, x.dtype)
        x0 = (x - tf.sqrt(1.0 - a) * eps) / tf.sqrt(a)
        if clip_x0 is not None:
            x0 = _clip(x0, clip_x0)
            if clipped_eps:
                eps = (x - tf.sqrt(a) * x0) / tf.sqrt(1.0 - a)
        return (
            tf.sqrt(a_prev) * x0
            + _at(plan["direction"], i, x.dtype) * eps
            + _at(plan["sigma"], i, x.dtype) * noises[0]
        )

    return _loop.run_steps(
        step,
        x,
        plan["noise_counts"],
        num_draws=1 if eta > 0 else 0,
        name="ddim",
        step_labels=_labels("t=", plan["model_t"]),
        levels=(plan["level_alpha"], plan["level_std"]),
        **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
    )


def _ddim_plan(schedule, steps, eta):
    """DDIM's per-step tables in step order: ``model_t``, ``abar``, ``abar_prev``,
    ``sigma`` (eq. 31's σ for η), ``direction`` (√(1 − ᾱ_prev − σ²)), ``noise_counts``,
    and the state's ``level_alpha`` / ``level_std``."""
    ascending = ddim_timesteps(schedule.T, steps)
    abar = tf.gather(tf.constant(schedule.alphas_cumprod, tf.float64), ascending)
    abar_prev = tf.concat([[1.0], abar[:-1]], 0)
    sigma = eta * tf.sqrt((1 - abar_prev) / (1 - abar)) * tf.sqrt(1 - abar / abar_prev)
    plan = {
        "model_t": tf.cast(ascending, tf.int32),
        "abar": abar,
        "abar_prev": abar_prev,
        "sigma": sigma,
        "direction": tf.sqrt(tf.maximum(1 - abar_prev - sigma**2, 0.0)),
        "noise_counts": tf.cast(sigma > 0, tf.int32),
    }
    plan = {key: _reverse(value) for key, value in plan.items()}
    plan["level_alpha"], plan["level_std"] = _vp_levels(tf.concat([plan["abar"][:1], plan["abar_prev"]], 0))
    return plan


def ddim_invert(
    eps_fn,
    x_0,
    schedule,
    steps=50,
    *,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
):
    """Deterministic DDIM inversion: encodes x_0 into the x_T that ``ddim(eta=0)`` decodes back.

    Runs the η = 0 update forwards over the same timesteps as ``ddim``, evaluating ε_θ at
    the current point (the standard explicit inversion). The reconstruction error of
    ``ddim(ddim_invert(x_0))`` falls as ``steps`` grows.

    Args:
        eps_fn: ``eps_fn(x, t) -> ε``.
        x_0: data, [batch, ...].
        schedule: the ``Schedule`` the model was trained with.
        steps: number of steps, 1 ≤ steps ≤ T.
        seed, noise_fn: accepted for a uniform signature; inversion adds no noise.
        return_trajectory, compiled, jit_compile, callback, edit: see the module doc.

    Returns:
        x_T, or ``(x_T, trajectory)``.
    """
    x = _start(x_0, "x_0")
    schedule = Schedule.check(schedule)
    steps = _checks.int_in_range(steps, "steps", 1, schedule.T)
    ascending = ddim_timesteps(schedule.T, steps)
    abar = schedule.alphas_cumprod[ascending]
    abar_from = np.append(1.0, abar[:-1])
    eval_t = np.append(ascending[0], ascending[:-1]).astype(np.int32)

    def step(i, x, noises):
        t = _batch_fill(_at(eval_t, i, tf.int32), x, tf.int32)
        eps = _call_model(eps_fn, x, t, "eps_fn")
        a_from, a_to = _at(abar_from, i, x.dtype), _at(abar, i, x.dtype)
        x0 = (x - tf.sqrt(1.0 - a_from) * eps) / tf.sqrt(a_from)
        return tf.sqrt(a_to) * x0 + tf.sqrt(1.0 - a_to) * eps

    return _loop.run_steps(
        step,
        x,
        np.zeros(len(ascending), dtype=np.int32),
        name="ddim_invert",
        step_labels=[f"t={t}" for t in ascending],
        **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
    )


# -------------------------------------------------------------------------- Langevin


def _langevin_steps(score_fn, x, levels, drift, noise, name, options, state_std):
    """x ← x + drift_k · s(x, σ_k) + noise_k · z for each k: the one Langevin update.

    ``levels``, ``drift`` and ``noise`` are per-step tables (numpy arrays, or tensors
    when the number of steps is a tensor); ``state_std`` the noise level of the state
    before the first step and after each (the loop's ``levels``, with α = 1).
    """
    noise_counts = _steps.plan(lambda: tf.cast(tf.convert_to_tensor(noise) > 0, tf.int32), levels)

    def step(i, x, noises):
        level = _batch_fill(_at(levels, i, x.dtype), x)
        score = _call_model(score_fn, x, level, "score_fn")
        return x + _at(drift, i, x.dtype) * score + _at(noise, i, x.dtype) * noises[0]

    labels = _labels("level=", levels, "{:.4g}")
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
    x = _start(x0, "x0")
    step_size = _checks.positive(step_size, "step_size")
    n_steps = _checks.positive_int(n_steps, "n_steps")
    levels = np.full(n_steps, float(noise_level))
    drift = np.full(n_steps, step_size / 2)
    noise = np.full(n_steps, np.sqrt(step_size))
    return _langevin_steps(score_fn, x, levels, drift, noise, "langevin", _loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
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
    x = _start(x0, "x0")
    sigmas = Sigmas(sigmas).sigmas
    n_steps_each = _steps.check(n_steps_each, "n_steps_each", 1)
    step_lr = _checks.positive(step_lr, "step_lr")

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
        score_fn, x, levels, drift, noise, "annealed_langevin", _loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
        state_std,
    )


# ------------------------------------------------------------------------------- SDE


def _sde_times(sde, steps, eps):
    """Start times t_i = T − i·h, i = 0 … steps−1, with h = (T − eps)/steps.

    Returns:
        ``(times, h)``: numpy float64 for an int ``steps``, float64 tensors for a tensor.
    """
    steps = _steps.check(steps, "steps", 1)
    eps = _checks.positive(eps, "eps")
    if eps >= sde.T:
        raise ValueError(f"Expected 0 < eps < {sde.T}. Received: eps={eps!r}")

    def build():
        n = tf.cast(steps, tf.float64)
        h = (sde.T - eps) / n
        return sde.T - h * tf.range(n, dtype=tf.float64), h

    return _steps.plan(build, steps)


def _discrete_sde_times(sde, steps, eps):
    """score_sde's grid: times t_i = linspace(T, eps, steps) (both ends), and the levels of
    the ``steps``-level discretization that the reverse-diffusion predictor steps between.

    Step i's predictor goes from level k_i = ⌊t_i (steps − 1) / T⌋ (time k_i·T/(steps − 1))
    to the level below it (none below level 0): the VE levels are score_sde's /
    diffusers' ``discrete_sigmas`` of ``steps`` values. The model is evaluated at t_i.

    Returns:
        ``(times, level_times, level_dt)``: numpy float64 for an int ``steps``, float64
        tensors for a tensor.
    """
    steps = _steps.check(steps, "steps", 1)
    eps = _checks.positive(eps, "eps")
    if eps >= sde.T:
        raise ValueError(f"Expected 0 < eps < {sde.T}. Received: eps={eps!r}")

    def build():
        gaps = tf.maximum(tf.cast(steps, tf.float64) - 1.0, 1.0)  # one step: t = T, level 0
        index = tf.range(tf.cast(steps, tf.float64), dtype=tf.float64)
        times = sde.T - (sde.T - eps) * index / gaps
        ones = tf.cast(steps, tf.float64) - 1.0
        # ⌊·⌋ of a value that is an integer up to round-off (i·eps/T past it) must not drop below it.
        level = tf.floor(times * ones / sde.T + 1e-9)
        level_dt = sde.T / gaps
        return times, level * level_dt, level_dt

    return _steps.plan(build, steps)


def predictor_corrector(
    score_fn,
    x_T,
    sde,
    steps,
    predictor="euler_maruyama",
    corrector="langevin",
    n_corrector=1,
    snr=0.16,
    *,
    eps=1e-3,
    denoise=True,
    grid="continuous",
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
):
    """Predictor–corrector sampling of the reverse SDE (Song et al. 2021; the survey's Figure 11).

    Each of ``steps`` steps from t = T to t = eps runs ``n_corrector`` Langevin corrector
    steps (step size from the signal-to-noise ratio ``snr``, per example) and then one
    predictor step: Euler–Maruyama on the reverse SDE (eq. 35) or the reverse diffusion
    step of the SDE's discretization (ancestral sampling).

    Args:
        score_fn: ``score_fn(x, t) -> ∇log p_t(x)``, t a float tensor [batch].
        x_T: a draw from ``sde.prior_sampling``.
        sde: the forward ``SDE``.
        steps: number of predictor steps.
        predictor: "euler_maruyama" or "reverse_diffusion".
        corrector: "langevin" or None.
        n_corrector: corrector steps per predictor step.
        snr: the corrector's signal-to-noise ratio r.
        eps: the last time (the reverse process stops at t = eps > 0).
        denoise: return the last predictor step's mean (no noise on the last step),
            as score_sde's ``noise_removal``.
        grid: the times and levels of the steps. "continuous": t_i = T − i·h with
            h = (T − eps)/steps, each predictor step going from t_i to t_i − h.
            "discrete": score_sde's sampler and diffusers' ``ScoreSdeVeScheduler``
            (``ScoreSdeVePipeline``): t_i = linspace(T, eps, steps), both ends included
            (the model sees t_i), the reverse-diffusion predictor stepping between the
            adjacent levels ⌊t_i (steps − 1)⌋ and the one below of the ``steps``-level
            discretization (VE: its ``discrete_sigmas``; σ = 0 below the lowest), and
            Euler–Maruyama with dt = T/steps (score_sde's 1/N).
        seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: see the module doc.

    Returns:
        x at t = eps (with ``denoise``, the last predictor step's mean), or
        ``(x, trajectory)``.
    """
    x = _start(x_T, "x_T")
    sde = SDE.check(sde)
    _checks.one_of(predictor, "predictor", _PREDICTORS)
    _checks.one_of(corrector, "corrector", _CORRECTORS)
    _checks.one_of(grid, "grid", _SDE_GRIDS)
    n_corrector = _checks.int_in_range(n_corrector, "n_corrector", 0, None) if corrector else 0
    snr = _checks.positive(snr, "snr")
    if grid == "continuous":
        times, h = _sde_times(sde, steps, eps)
        level_times = level_dt = None
    else:
        times, level_times, level_dt = _discrete_sde_times(sde, steps, eps)
        h = _steps.plan(lambda: tf.constant(sde.T, tf.float64) / tf.cast(steps, tf.float64), steps)

    def counts():
        n = tf.shape(times)[0]
        last = n_corrector if denoise else n_corrector + 1  # denoise: no noise on the last predictor step
        return tf.concat([tf.fill([n - 1], n_corrector + 1), [last]], 0)

    noise_counts = _steps.plan(counts, steps)
    # the state is at t_i before step i; after the last at eps (the continuous grid) or on
    # the data (the discrete grid's last step goes below its lowest level)
    levels = _steps.plan(lambda: _sde_levels(sde, times, eps if grid == "continuous" else None), steps)
    reverse = sde.reverse(score_fn)

    def correct(x, t, z):
        grad = _call_model(score_fn, x, t, "score_fn")
        # Batch-mean norms, as score_sde: a per-example ratio explodes where the score is
        # near zero in low dimensions.
        grad_norm = tf.reduce_mean(tf.norm(tf.reshape(grad, [tf.shape(x)[0], -1]), axis=1))
        noise_norm = tf.reduce_mean(tf.norm(tf.reshape(z, [tf.shape(x)[0], -1]), axis=1))
        alpha = tf.cast(sde.langevin_alpha(t), x.dtype)
        step_size = 2.0 * alpha * tf.math.square(snr * tf.math.divide_no_nan(noise_norm, grad_norm))
        return x + _ops.batch_view(step_size, x) * grad + _ops.batch_view(tf.sqrt(2.0 * step_size), x) * z

    def predict(i, x, t, z):
        if predictor == "euler_maruyama":
            drift, diffusion = reverse.sde(x, t)
            sqrt_h = _scalar(tf.sqrt(tf.cast(h, tf.float64)), x)
            return x - drift * _scalar(h, x) + _ops.batch_view(diffusion * sqrt_h, x) * z
        if level_times is None:
            f, G = reverse.discretize(x, t, float(h) if isinstance(h, (float, np.floating)) else _scalar(h, x))
            return x - f + _ops.batch_view(G, x) * z
        # The discrete grid: the step between two levels of the discretization, the score at t.
        level_t = _batch_fill(_at(level_times, i, x.dtype), x)
        f, G = sde.discretize(x, level_t, float(level_dt) if isinstance(level_dt, (float, np.floating)) else _scalar(level_dt, x))
        score = _call_model(score_fn, x, t, "score_fn")
        return x - f + _ops.batch_view(G**2, x) * score + _ops.batch_view(G, x) * z

    def step(i, x, noises):
        t = _batch_fill(_at(times, i, x.dtype), x)
        for k in range(n_corrector):
            x = correct(x, t, noises[k])
        return predict(i, x, t, noises[n_corrector])

    return _loop.run_steps(
        step,
        x,
        noise_counts,
        num_draws=n_corrector + 1,
        name=f"predictor_corrector({predictor}, {corrector})",
        step_labels=_labels("t=", times, "{:.4g}"),
        levels=levels,
        **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
    )


def euler_maruyama(
    score_fn,
    x_T,
    sde,
    steps,
    *,
    eps=1e-3,
    denoise=True,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
):
    """Euler–Maruyama on the reverse-time SDE (eq. 35): the predictor alone.

    Args:
        score_fn: ``score_fn(x, t)``.
        x_T: a draw from ``sde.prior_sampling``.
        sde: the forward ``SDE``.
        steps: number of steps.
        eps: the last time.
        denoise: no noise on the last step.
        seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: see the module doc.

    Returns:
        x at t = eps, or ``(x, trajectory)``.
    """
    return predictor_corrector(
        score_fn, x_T, sde, steps, predictor="euler_maruyama", corrector=None,
        eps=eps, denoise=denoise, **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
    )


def probability_flow(
    score_fn,
    x_T,
    sde,
    *,
    method="RK45",
    steps=None,
    rtol=1e-5,
    atol=1e-5,
    eps=1e-3,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
):
    """Solves the probability-flow ODE dx = [f − ½ g² ∇log p_t] dt from t = T to t = eps.

    Args:
        score_fn: ``score_fn(x, t)``.
        x_T: a draw from ``sde.prior_sampling`` (the ODE is deterministic).
        sde: the forward ``SDE``.
        method: a ``scipy.integrate.solve_ivp`` method ("RK45", the score_sde default,
            "RK23", "DOP853", …; adaptive, runs outside the graph) or a fixed-step
            method run as one compiled loop: "euler", "heun" or "rk4".
        steps: number of steps of a fixed-step method (default 100); with an adaptive
            method, the number of trajectory points returned (default 11).
        rtol, atol: tolerances of the adaptive solver.
        eps: the end time.
        seed, noise_fn: accepted for a uniform signature; the ODE adds no noise.
        return_trajectory, compiled, jit_compile, callback, edit: see the module doc.

    Returns:
        x at t = eps, or ``(x, trajectory)``.
    """
    x = _start(x_T, "x_T")
    sde = SDE.check(sde)
    flow = sde.reverse(score_fn, probability_flow=True)

    def velocity(x, t):
        return flow.sde(x, _batch_fill(t, x))[0]

    if method in ODE_FIXED_METHODS:
        times, h = _sde_times(sde, 100 if steps is None else steps, eps)

        def step(i, x, noises):
            t, dt = _at(times, i, x.dtype), _scalar(h, x)
            k1 = velocity(x, t)
            if method == "euler":
                return x - dt * k1
            if method == "heun":
                k2 = velocity(x - dt * k1, t - dt)
                return x - dt / 2 * (k1 + k2)
            k2 = velocity(x - dt / 2 * k1, t - dt / 2)
            k3 = velocity(x - dt / 2 * k2, t - dt / 2)
            k4 = velocity(x - dt * k3, t - dt)
            return x - dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

        return _loop.run_steps(
            step,
            x,
            _steps.plan(lambda: tf.zeros(tf.shape(times), tf.int32), steps),
            num_draws=0,
            name=f"probability_flow({method})",
            step_labels=_labels("t=", times, "{:.4g}"),
            levels=_steps.plan(lambda: _sde_levels(sde, times, eps), steps),
            **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
        )
    if edit is not None:
        raise ValueError(
            f"Expected a fixed-step `method` ({list(ODE_FIXED_METHODS)}) for an edit (inpainting, img2img): "
            f"the adaptive solver runs outside the step loop. Received: method={method!r}"
        )
    return _solve_ivp(velocity, x, sde.T, _checks.positive(eps, "eps"), method, rtol, atol,
                      11 if steps is None else _checks.int_in_range(steps, "steps", 2, None),
                      return_trajectory)


def _solve_ivp(velocity, x, t_start, t_end, method, rtol, atol, points, return_trajectory):
    """Integrates dx/dt = velocity(x, t) with scipy's adaptive ``solve_ivp``."""
    shape, dtype = x.shape, x.dtype
    graph_velocity = tf.function(lambda y, t: velocity(y, t), reduce_retracing=True)

    def fun(t, y):
        y = tf.constant(y.reshape(shape), dtype=dtype)
        return graph_velocity(y, tf.constant(t, dtype=dtype)).numpy().reshape(-1).astype(np.float64)

    t_eval = np.linspace(t_start, t_end, points) if return_trajectory else None
    try:
        solution = scipy.integrate.solve_ivp(
            fun, (t_start, t_end), x.numpy().reshape(-1).astype(np.float64),
            method=method, rtol=rtol, atol=atol, t_eval=t_eval,
        )
    except ValueError as error:
        if "method" in str(error).lower():
            raise ValueError(
                "Expected `method` to be a scipy.integrate.solve_ivp method or one of "
                f"{list(ODE_FIXED_METHODS)}. Received: method={method!r}"
            ) from error
        raise
    if not solution.success or not np.all(np.isfinite(solution.y[:, -1])):
        raise NonFiniteSampleError(f"probability_flow({method})", 0, 1, solution.message)
    final = tf.constant(solution.y[:, -1].reshape(shape), dtype=dtype)
    if return_trajectory:
        return final, [tf.constant(y.reshape(shape), dtype=dtype) for y in solution.y.T]
    return final
