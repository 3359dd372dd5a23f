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
    jit_compile: True, False or "auto" (XLA only where a GPU/TPU is visible).

Model callables: ``eps_fn(x, t)`` with t an int32 tensor [batch] of 0-based timesteps;
``score_fn(x, s)`` with s a float tensor [batch] (σ for NCSN, continuous t for SDEs).
"""

from __future__ import annotations

import numpy as np
import scipy.integrate
import tensorflow as tf

from kdiff import _checks, _loop, _ops
from kdiff.schedules import spaced_timesteps

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
]

NonFiniteSampleError = _loop.NonFiniteSampleError

_DDPM_VARIANCES = ("beta", "beta_tilde", "learned")
_PREDICTORS = ("euler_maruyama", "reverse_diffusion")
_CORRECTORS = ("langevin", None)
_ODE_FIXED_METHODS = ("euler", "heun", "rk4")


# ----------------------------------------------------------------------------- helpers


def _start(x, name):
    return _checks.float_tensor(x, name)


def _check_clip(clip_x0):
    if clip_x0 is None:
        return None
    return _checks.positive(clip_x0, "clip_x0")


def _at(values, i, dtype):
    """``values[i]`` as a scalar tensor of ``dtype`` (``values`` a numpy array)."""
    return tf.gather(tf.constant(values, dtype=dtype), i)


def _batch_fill(value, x, dtype=None):
    return tf.fill([tf.shape(x)[0]], tf.cast(value, dtype or x.dtype))


def _call_model(model_fn, x, level, name):
    """Calls the model and checks that its output is shaped like x."""
    return _checks.model_output(model_fn(x, level), x, name)


def _clip(x0, clip_x0):
    return x0 if clip_x0 is None else tf.clip_by_value(x0, -clip_x0, clip_x0)


def _loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile):
    """The keyword options every fixed-step sampler passes through to ``_loop.run_steps``."""
    return dict(
        seed=seed,
        noise_fn=noise_fn,
        return_trajectory=return_trajectory,
        compiled=compiled,
        jit_compile=jit_compile,
    )


# ------------------------------------------------------------------------------ DDPM


def ddpm(
    eps_fn,
    x_T,
    schedule,
    variance="beta_tilde",
    steps=None,
    clip_x0=None,
    *,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
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
        steps: None for all T steps, or fewer: the schedule is respaced over evenly
            spaced timesteps as in Improved DDPM (``eps_fn`` still sees original t).
        clip_x0: clip the predicted x_0 to [−clip_x0, clip_x0]; None clips nothing.
        seed, noise_fn, return_trajectory, compiled, jit_compile: see the module doc.

    Returns:
        x_0, or ``(x_0, trajectory)``.
    """
    x = _start(x_T, "x_T")
    schedule = _checks.schedule(schedule)
    _checks.one_of(variance, "variance", _DDPM_VARIANCES)
    clip_x0 = _check_clip(clip_x0)
    if steps is None or steps == schedule.T:
        timesteps, sub = np.arange(schedule.T), schedule
    else:
        timesteps = spaced_timesteps(schedule.T, _checks.int_in_range(steps, "steps", 1, schedule.T))
        sub = schedule.respace(timesteps)
    order = slice(None, None, -1)  # step i handles sub-index n−1−i
    model_t = timesteps[order].astype(np.int32)
    recip = np.sqrt(1.0 / sub.alphas_cumprod)[order]
    recipm1 = np.sqrt(1.0 / sub.alphas_cumprod - 1.0)[order]
    coef1, coef2 = sub.posterior_mean_coef1[order], sub.posterior_mean_coef2[order]
    min_log = sub.posterior_log_variance_clipped[order]
    if sub.T > 1:
        max_log = np.log(np.append(sub.posterior_variance[1], sub.betas[1:]))[order]
    else:
        max_log = np.log(sub.betas)[order]
    fixed_log = {"beta": max_log, "beta_tilde": min_log, "learned": None}[variance]
    noise_counts = np.ones(sub.T, dtype=np.int32)
    noise_counts[-1] = 0  # x_0 = μ̃ at the last step

    def step(i, x, noises):
        t = _batch_fill(_at(model_t, i, tf.int32), x, tf.int32)
        out = eps_fn(x, t)
        if variance == "learned":
            eps, v = _checks.split_eps_v(out, x, "eps_fn")
            # v interpolates log β̃ … log β (eq. 20); outside [−1, 1] it would extrapolate
            # the variance (an untrained network can overflow it), so it is clipped.
            frac = (tf.clip_by_value(v, -1.0, 1.0) + 1.0) / 2.0
            log_var = frac * _at(max_log, i, x.dtype) + (1.0 - frac) * _at(min_log, i, x.dtype)
        else:
            eps = _checks.model_output(out, x, "eps_fn")
            log_var = _at(fixed_log, i, x.dtype)
        x0 = _clip(_at(recip, i, x.dtype) * x - _at(recipm1, i, x.dtype) * eps, clip_x0)
        mean = _at(coef1, i, x.dtype) * x0 + _at(coef2, i, x.dtype) * x
        return mean + tf.exp(0.5 * log_var) * noises[0]

    return _loop.run_steps(
        step,
        x,
        noise_counts,
        name="ddpm",
        step_labels=[f"t={t}" for t in model_t],
        **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile),
    )


# ------------------------------------------------------------------------------ DDIM


def ddim_timesteps(T, steps):
    """DDIM's uniform timesteps t_i = i·(T // steps), i = 0 … steps−1 (ascending).

    Args:
        T: the schedule's number of steps.
        steps: the number of sampling steps, 1 ≤ steps ≤ T.

    Returns:
        An int array of length ``steps``.
    """
    steps = _checks.int_in_range(steps, "steps", 1, T)
    return np.arange(steps, dtype=np.int64) * (T // steps)


def ddim(
    eps_fn,
    x_T,
    schedule,
    steps=50,
    eta=0.0,
    clip_x0=None,
    *,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
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
        clip_x0: clip the predicted x_0 to [−clip_x0, clip_x0] (ε is then recomputed
            from the clipped x̂_0, as diffusers does); None clips nothing.
        seed, noise_fn, return_trajectory, compiled, jit_compile: see the module doc.

    Returns:
        x_0, or ``(x_0, trajectory)``.
    """
    x = _start(x_T, "x_T")
    schedule = _checks.schedule(schedule)
    eta = _checks.non_negative(eta, "eta")
    clip_x0 = _check_clip(clip_x0)
    ascending = ddim_timesteps(schedule.T, steps)
    abar_all = schedule.alphas_cumprod[ascending]
    abar_prev_all = np.append(1.0, abar_all[:-1])
    model_t, abar, abar_prev = (a[::-1] for a in (ascending.astype(np.int32), abar_all, abar_prev_all))
    sigma = eta * np.sqrt((1 - abar_prev) / (1 - abar)) * np.sqrt(1 - abar / abar_prev)
    direction = np.sqrt(np.maximum(1 - abar_prev - sigma**2, 0.0))
    noise_counts = (sigma > 0).astype(np.int32)

    def step(i, x, noises):
        t = _batch_fill(_at(model_t, i, tf.int32), x, tf.int32)
        eps = _call_model(eps_fn, x, t, "eps_fn")
        a, a_prev = _at(abar, i, x.dtype), _at(abar_prev, i, x.dtype)
        x0 = (x - tf.sqrt(1.0 - a) * eps) / tf.sqrt(a)
        if clip_x0 is not None:
            x0 = _clip(x0, clip_x0)
            eps = (x - tf.sqrt(a) * x0) / tf.sqrt(1.0 - a)
        return (
            tf.sqrt(a_prev) * x0
            + _at(direction, i, x.dtype) * eps
            + _at(sigma, i, x.dtype) * noises[0]
        )

    return _loop.run_steps(
        step,
        x,
        noise_counts,
        name="ddim",
        step_labels=[f"t={t}" for t in model_t],
        **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile),
    )


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
        return_trajectory, compiled, jit_compile: see the module doc.

    Returns:
        x_T, or ``(x_T, trajectory)``.
    """
    x = _start(x_0, "x_0")
    schedule = _checks.schedule(schedule)
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
        **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile),
    )


# -------------------------------------------------------------------------- Langevin


def _langevin_steps(score_fn, x, levels, drift, noise, name, options):
    """x ← x + drift_k · s(x, σ_k) + noise_k · z for each k: the one Langevin update."""
    noise_counts = (np.asarray(noise) > 0).astype(np.int32)

    def step(i, x, noises):
        level = _batch_fill(_at(levels, i, x.dtype), x)
        score = _call_model(score_fn, x, level, "score_fn")
        return x + _at(drift, i, x.dtype) * score + _at(noise, i, x.dtype) * noises[0]

    labels = [f"level={s:.4g}" for s in levels]
    return _loop.run_steps(step, x, noise_counts, name=name, step_labels=labels, **options)


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
):
    """Langevin dynamics (eq. 43): x_t = x_{t−1} + (ε/2) ∇log p(x_{t−1}) + √ε z_t.

    Args:
        score_fn: ``score_fn(x, s)``; called with s = ``noise_level`` for every example.
        x0: the starting point, [batch, ...].
        step_size: ε > 0.
        n_steps: number of steps ≥ 1.
        noise_level: the s passed to ``score_fn`` (0 for the data score).
        seed, noise_fn, return_trajectory, compiled, jit_compile: see the module doc.

    Returns:
        The final x, or ``(x, trajectory)``.
    """
    x = _start(x0, "x0")
    step_size = _checks.positive(step_size, "step_size")
    n_steps = _checks.positive_int(n_steps, "n_steps")
    levels = np.full(n_steps, float(noise_level))
    drift = np.full(n_steps, step_size / 2)
    noise = np.full(n_steps, np.sqrt(step_size))
    return _langevin_steps(score_fn, x, levels, drift, noise, "langevin", _loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile))


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
        seed, noise_fn, return_trajectory, compiled, jit_compile: see the module doc.

    Returns:
        The final x, or ``(x, trajectory)``.
    """
    x = _start(x0, "x0")
    sigmas = _checks.descending_sigmas(sigmas)
    n_steps_each = _checks.positive_int(n_steps_each, "n_steps_each")
    step_lr = _checks.positive(step_lr, "step_lr")
    alphas = step_lr * sigmas**2 / sigmas[-1] ** 2
    levels = np.repeat(sigmas, n_steps_each)
    drift = np.repeat(alphas / 2, n_steps_each)
    noise = np.repeat(np.sqrt(alphas), n_steps_each)
    if denoise:
        levels = np.append(levels, sigmas[-1])
        drift = np.append(drift, sigmas[-1] ** 2)
        noise = np.append(noise, 0.0)
    return _langevin_steps(
        score_fn, x, levels, drift, noise, "annealed_langevin", _loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile)
    )


# ------------------------------------------------------------------------------- SDE


def _sde_times(sde, steps, eps):
    """Start times t_i = T − i·h, i = 0 … steps−1, with h = (T − eps)/steps."""
    steps = _checks.positive_int(steps, "steps")
    eps = _checks.positive(eps, "eps")
    if eps >= sde.T:
        raise ValueError(f"Expected 0 < eps < {sde.T}. Received: eps={eps!r}")
    h = (sde.T - eps) / steps
    return sde.T - h * np.arange(steps), h


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
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
):
    """Predictor–corrector sampling of the reverse SDE (Song et al. 2021; seed Figure 11).

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
        seed, noise_fn, return_trajectory, compiled, jit_compile: see the module doc.

    Returns:
        x at t = eps, or ``(x, trajectory)``.
    """
    x = _start(x_T, "x_T")
    sde = _checks.sde(sde)
    _checks.one_of(predictor, "predictor", _PREDICTORS)
    _checks.one_of(corrector, "corrector", _CORRECTORS)
    n_corrector = _checks.int_in_range(n_corrector, "n_corrector", 0, None) if corrector else 0
    snr = _checks.positive(snr, "snr")
    times, h = _sde_times(sde, steps, eps)
    noise_counts = np.full(len(times), n_corrector + 1, dtype=np.int32)
    if denoise:
        noise_counts[-1] = n_corrector
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

    def predict(x, t, z):
        if predictor == "euler_maruyama":
            drift, diffusion = reverse.sde(x, t)
            return x - drift * h + _ops.batch_view(diffusion * np.sqrt(h), x) * z
        f, G = reverse.discretize(x, t, h)
        return x - f + _ops.batch_view(G, x) * z

    def step(i, x, noises):
        t = _batch_fill(_at(times, i, x.dtype), x)
        for k in range(n_corrector):
            x = correct(x, t, noises[k])
        return predict(x, t, noises[n_corrector])

    return _loop.run_steps(
        step,
        x,
        noise_counts,
        name=f"predictor_corrector({predictor}, {corrector})",
        step_labels=[f"t={t:.4g}" for t in times],
        **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile),
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
):
    """Euler–Maruyama on the reverse-time SDE (eq. 35): the predictor alone.

    Args:
        score_fn: ``score_fn(x, t)``.
        x_T: a draw from ``sde.prior_sampling``.
        sde: the forward ``SDE``.
        steps: number of steps.
        eps: the last time.
        denoise: no noise on the last step.
        seed, noise_fn, return_trajectory, compiled, jit_compile: see the module doc.

    Returns:
        x at t = eps, or ``(x, trajectory)``.
    """
    return predictor_corrector(
        score_fn, x_T, sde, steps, predictor="euler_maruyama", corrector=None,
        eps=eps, denoise=denoise, **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile),
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
        return_trajectory, compiled, jit_compile: see the module doc.

    Returns:
        x at t = eps, or ``(x, trajectory)``.
    """
    x = _start(x_T, "x_T")
    sde = _checks.sde(sde)
    flow = sde.reverse(score_fn, probability_flow=True)

    def velocity(x, t):
        return flow.sde(x, _batch_fill(t, x))[0]

    if method in _ODE_FIXED_METHODS:
        times, h = _sde_times(sde, 100 if steps is None else steps, eps)

        def step(i, x, noises):
            t = _at(times, i, x.dtype)
            k1 = velocity(x, t)
            if method == "euler":
                return x - h * k1
            if method == "heun":
                k2 = velocity(x - h * k1, t - h)
                return x - h / 2 * (k1 + k2)
            k2 = velocity(x - h / 2 * k1, t - h / 2)
            k3 = velocity(x - h / 2 * k2, t - h / 2)
            k4 = velocity(x - h * k3, t - h)
            return x - h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

        return _loop.run_steps(
            step,
            x,
            np.zeros(len(times), dtype=np.int32),
            name=f"probability_flow({method})",
            step_labels=[f"t={t:.4g}" for t in times],
            **_loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile),
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
                f"{list(_ODE_FIXED_METHODS)}. Received: method={method!r}"
            ) from error
        raise
    if not solution.success or not np.all(np.isfinite(solution.y[:, -1])):
        raise NonFiniteSampleError(f"probability_flow({method})", 0, 1, solution.message)
    final = tf.constant(solution.y[:, -1].reshape(shape), dtype=dtype)
    if return_trajectory:
        return final, [tf.constant(y.reshape(shape), dtype=dtype) for y in solution.y.T]
    return final
