"""Karras et al. (2022)'s samplers: Euler, Heun and ancestral Euler over Karras σ's.

* ``euler``, ``heun``, ``euler_ancestral`` — Karras et al. (2022)'s samplers on the
  denoiser D(x, σ) = x + σ² ∇log p_σ(x), as k-diffusion's ``sample_euler``,
  ``sample_heun`` (Algorithm 2, with its "churn" options) and ``sample_euler_ancestral``,
  over ``kdiff.grids.karras``.

They take every process that can say what x̂₀ its model predicts: a discrete schedule
(an ε-model ``eps_fn(x, t)``), a σ ladder and any SDE
(``score_fn(x, level)``). The process's ``model_output`` names the conversion: an
ε-model's x̂₀ is (x_t − std·ε)/α, a score model's ε is −std·score, with α and std the
mean coefficient and standard deviation of x_t | x₀ (``Schedule.alphas_cumprod``,
``SDE.marginal_prob``; for a σ ladder α = 1, std = σ).

Karras' samplers run in the σ parametrization x_σ = x_t/α (= x₀ + σ z): they start at
x_start/α(σ_max) — for a schedule x_T·√(1 + σ_max²), σ = √((1 − ᾱ)/ᾱ) —, give the model
α x_σ with its level at σ (a schedule's timestep nearest σ in log σ, as k-diffusion's
``DiscreteEpsDDPMDenoiser`` with ``quantize=True``; an SDE's time of σ), and end at σ = 0
on x₀ itself. A σ ladder's prior (NCSN's uniform noise over the data range) is taken to
level σ_max by adding σ_max·z. Trajectories hold the process's own states x_t = α x_σ.
"""

from __future__ import annotations

import math

import tensorflow as tf

from kdiff import checks, _random, _steps
from kdiff.samplers import _loop
from kdiff.samplers._common import (
    as_start,
    at_step,
    batch_fill,
    call_model,
    check_clip,
    check_eps,
    check_process,
    clip_to,
    eps_of,
    loop_options,
    sigma_grid,
    step_labels,
)
from kdiff.grids import karras

__all__ = ["euler", "heun", "euler_ancestral"]


def _karras_plan(process, eps, sigmas, s_churn, s_tmin, s_tmax, eta):
    """The per-step tables of Karras' samplers over descending ``sigmas`` (``karras(steps, …)``
    unless a grid is given).

    Step i goes from σ_i (raised to σ̂_i = σ_i (1 + γ_i) by churn) to σ_{i+1}; the
    ancestral step to σ_down_i, then adds σ_up_i z (k-diffusion's ``get_ancestral_step``).
    """
    sigmas = tf.convert_to_tensor(sigmas, tf.float64)
    current, following = sigmas[:-1], sigmas[1:]
    n = tf.cast(tf.shape(current)[0], tf.float64)
    gamma = tf.where(
        (current >= s_tmin) & (current <= s_tmax),
        tf.minimum(s_churn / n, math.sqrt(2.0) - 1.0) * tf.ones_like(current),
        tf.zeros_like(current),
    )
    hat = current * (1.0 + gamma)
    hat_level, hat_alpha = process.at_sigma(hat, eps)
    next_level, next_alpha = process.at_sigma(following, eps)
    level, alpha = process.at_sigma(current, eps)
    _, every_alpha = process.at_sigma(sigmas, eps)
    up = tf.minimum(following, eta * tf.sqrt(following**2 * (current**2 - following**2) / current**2))
    return {
        "sigmas": sigmas,
        "level_alpha": tf.ones_like(sigmas),  # the loop's levels of x_σ: (1, σ)
        "sigma": current,
        "level": level,
        "alpha": alpha,
        "hat": hat,
        "hat_level": hat_level,
        "hat_alpha": hat_alpha,
        "churn": tf.sqrt(hat**2 - current**2),
        "next": following,
        "next_level": next_level,
        "next_alpha": next_alpha,
        "last": tf.cast(tf.equal(following, 0.0), tf.int32),
        "down": tf.sqrt(following**2 - up**2),
        "up": up,
        "state_alpha": every_alpha,  # α at σ_0 … σ_n: x_t = α x_σ
        "churn_counts": tf.cast(gamma > 0, tf.int32),
        "ancestral_counts": tf.cast((following > 0) & (up > 0), tf.int32),
    }


def _karras_run(method, model_fn, x_start, process, steps, sigma_min, sigma_max, rho, churn, eta, s_noise,
                clip_x0, eps, loop, grid):
    """Runs ``method`` ("euler", "heun", "euler_ancestral") over Karras' σ's, or over ``grid``:
    the shared body of the three samplers (their arguments, checked here)."""
    x = as_start(x_start, "x_start")
    process = check_process(process, ("schedule", "sigmas", "sde"), method)
    s_churn, s_tmin, s_tmax = churn
    s_churn = checks.non_negative(s_churn, "s_churn")
    s_tmin = checks.non_negative(s_tmin, "s_tmin")
    if s_tmax is not None:
        if isinstance(s_tmax, bool) or not isinstance(s_tmax, (int, float)) or not s_tmax >= s_tmin:
            raise ValueError(
                f"Expected `s_tmax` None or a number >= s_tmin={s_tmin}. Received: s_tmax={s_tmax!r}"
            )
    eta = checks.non_negative(eta, "eta")
    s_noise = checks.non_negative(s_noise, "s_noise")
    clip_x0 = check_clip(clip_x0)
    eps = check_eps(eps, process)
    grid = None if grid is None else sigma_grid(grid, sigma_min, sigma_max)
    low, high = process.sigma_range(eps)
    sigma_min = low if sigma_min is None else checks.positive(sigma_min, "sigma_min")
    sigma_max = high if sigma_max is None else checks.positive(sigma_max, "sigma_max")
    if grid is None:
        steps = _steps.check(steps, "steps", 1)
        sigmas = lambda: karras(steps, sigma_min, sigma_max, rho)  # noqa: E731
    else:
        steps, sigmas = len(grid) - 1, lambda: grid  # noqa: E731
    plan = _steps.plan(
        lambda: _karras_plan(process, eps, sigmas(), s_churn, s_tmin, math.inf if s_tmax is None else float(s_tmax),
                             eta),
        steps,
    )
    level_dtype = process.level_dtype
    seed = _random.seed_pair(loop["seed"])
    noise_fn = loop["noise_fn"]

    columns = {  # the table columns of step i's three σ's: (σ, level, α)
        "current": ("sigma", "level", "alpha"),
        "hat": ("hat", "hat_level", "hat_alpha"),
        "next": ("next", "next_level", "next_alpha"),
    }

    def denoise(x, which, i):
        """D(x_σ, σ) at step i's σ ``which``: "current", "hat" (raised by churn) or "next"."""
        sigma_key, level_key, alpha_key = columns[which]
        sigma, alpha = at_step(plan[sigma_key], i, x.dtype), at_step(plan[alpha_key], i, x.dtype)
        level = batch_fill(at_step(plan[level_key], i, level_dtype), x, level_dtype)
        out = call_model(model_fn, alpha * x, level, "model_fn")
        return clip_to(x - sigma * eps_of(out, alpha * sigma, process.model_output), clip_x0)

    def ode_step(i, x, noises):
        sigma_hat = at_step(plan["hat"], i, x.dtype)
        x = x + s_noise * at_step(plan["churn"], i, x.dtype) * noises[0]
        d = (x - denoise(x, "hat", i)) / sigma_hat
        dt = at_step(plan["next"], i, x.dtype) - sigma_hat
        x_euler = x + d * dt
        if method == "euler":
            return x_euler

        def corrected():
            d_next = (x_euler - denoise(x_euler, "next", i)) / at_step(plan["next"], i, x.dtype)
            return x + (d + d_next) / 2.0 * dt

        return tf.cond(at_step(plan["last"], i, tf.int32) > 0, lambda: x_euler, corrected)

    def ancestral_step(i, x, noises):
        sigma = at_step(plan["sigma"], i, x.dtype)
        d = (x - denoise(x, "current", i)) / sigma
        x = x + d * (at_step(plan["down"], i, x.dtype) - sigma)
        return x + s_noise * at_step(plan["up"], i, x.dtype) * noises[0]

    if not process.noised_prior:  # NCSN's prior is noise over the data range: take it to σ_max
        if noise_fn is None:
            z = tf.random.stateless_normal(tf.shape(x), seed=_random.fold_in(seed, -1), dtype=x.dtype)
        else:  # the first draw
            z = checks.model_output(noise_fn(tuple(x.shape)), x, "noise_fn")
        x = x + at_step(plan["sigmas"], 0, x.dtype) * z
    else:
        x = x / at_step(plan["state_alpha"], 0, x.dtype)
    ancestral = method == "euler_ancestral"
    noisy = eta > 0 if ancestral else s_churn > 0
    result = _loop.run_steps(
        ancestral_step if ancestral else ode_step,
        x,
        plan["ancestral_counts" if ancestral else "churn_counts"],
        num_draws=1 if noisy else 0,
        name=method,
        step_labels=step_labels("sigma=", plan["sigma"], "{:.4g}"),
        levels=(plan["level_alpha"], plan["sigmas"]),
        **{**loop, "seed": seed},
    )
    if not loop["return_trajectory"]:
        return result
    final, trajectory = result  # states x_σ → the process's x_t = α x_σ
    if isinstance(trajectory, list):
        return final, [tf.cast(a, s.dtype) * s for a, s in zip(plan["state_alpha"], trajectory)]
    alphas = tf.cast(plan["state_alpha"], trajectory.dtype)
    return final, trajectory * tf.reshape(alphas, [-1] + [1] * (len(trajectory.shape) - 1))


def euler(
    model_fn,
    x_start,
    process,
    steps=20,
    rho=7.0,
    sigma_min=None,
    sigma_max=None,
    clip_x0=None,
    *,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=None,
    s_noise=1.0,
    eps=1e-3,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
    grid=None,
):
    """Euler's method on the probability-flow ODE dx_σ/dσ = (x_σ − D(x_σ, σ))/σ (k-diffusion's
    ``sample_euler``): one network evaluation a step, over ``karras(steps, …)``.

    With churn (``s_churn`` > 0) step i first raises σ_i to σ̂ = σ_i (1 + γ), γ =
    min(s_churn/steps, √2 − 1) where s_tmin ≤ σ_i ≤ s_tmax, adding √(σ̂² − σ_i²)·s_noise·z
    (Karras et al.'s Algorithm 2); without it the sampler is deterministic. On a schedule
    with the model's σ's this is DDIM on Karras' σ's.

    Args:
        model_fn: ``eps_fn(x, t)`` for a schedule, ``score_fn(x, level)`` for a σ ladder
            (level σ) or an SDE (level t).
        x_start: a draw of the process's prior, [batch, ...] (see the module doc).
        process: a ``Schedule``, ``Sigmas`` (or descending σ's) or ``SDE``.
        steps: the number of steps (network evaluations), ≥ 1.
        rho: Karras' ρ.
        sigma_min, sigma_max: the range of σ's (default: the process's: a schedule's σ at
            t = 0 and T − 1, a ladder's ends, an SDE's σ(eps) and σ(T)).
        clip_x0: clip D (the predicted x₀) to [−clip_x0, clip_x0] or (low, high); None:
            no clipping (k-diffusion's).
        s_churn, s_tmin, s_tmax, s_noise: Karras et al.'s stochasticity (churn off by
            default); churn applies where s_tmin ≤ σ_i ≤ s_tmax (None: no upper bound,
            k-diffusion's ∞).
        eps: an SDE's smallest time (ignored otherwise).
        seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: see
            ``kdiff.samplers``; the trajectory holds the process's states x_t = α x_σ,
            and an edit sees the states x_σ (α = 1, std = σ).
        grid: the σ's to walk instead of Karras' (k-diffusion's ``sigmas``): descending,
            ≥ 0, at least two, usually ending in 0 (``kdiff.grids``); it sets the number
            of steps, and ``steps``, ``rho``, ``sigma_min`` and ``sigma_max`` are then unused.

    Returns:
        x₀, or ``(x₀, trajectory)``.

    Raises:
        ValueError: on steps < 1, a negative churn option, or a bad process, naming the
            argument.
    """
    return _karras_run("euler", model_fn, x_start, process, steps, sigma_min, sigma_max, rho,
                       (s_churn, s_tmin, s_tmax), 0.0, s_noise, clip_x0, eps,
                       loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit), grid)


def heun(
    model_fn,
    x_start,
    process,
    steps=20,
    rho=7.0,
    sigma_min=None,
    sigma_max=None,
    clip_x0=None,
    *,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=None,
    s_noise=1.0,
    eps=1e-3,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
    grid=None,
):
    """Karras et al.'s Heun sampler (2022, Algorithm 2; k-diffusion's ``sample_heun``).

    Each step is Euler's to σ_{i+1}, corrected by the slope there (the trapezoidal rule);
    the last step, to σ = 0, is Euler's alone. Network evaluations: 2·steps − 1. Its
    arguments, churn options included, are ``euler``'s.

    Returns:
        x₀, or ``(x₀, trajectory)``.

    Raises:
        ValueError: as ``euler``.
    """
    return _karras_run("heun", model_fn, x_start, process, steps, sigma_min, sigma_max, rho,
                       (s_churn, s_tmin, s_tmax), 0.0, s_noise, clip_x0, eps,
                       loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit), grid)


def euler_ancestral(
    model_fn,
    x_start,
    process,
    steps=20,
    eta=1.0,
    rho=7.0,
    sigma_min=None,
    sigma_max=None,
    clip_x0=None,
    *,
    s_noise=1.0,
    eps=1e-3,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
    grid=None,
):
    """Ancestral Euler sampling (k-diffusion's ``sample_euler_ancestral``).

    Step i takes Euler's step from σ_i down to σ_down, then adds σ_up·s_noise·z, with
    σ_up = min(σ_{i+1}, η √(σ_{i+1}² (σ_i² − σ_{i+1}²)/σ_i²)) and σ_down = √(σ_{i+1}² − σ_up²):
    η = 1 is DDPM-like ancestral sampling, η = 0 is ``euler``. No noise on the last step.
    Its other arguments are ``euler``'s (it has no churn).

    Args:
        eta: η ≥ 0.

    Returns:
        x₀, or ``(x₀, trajectory)``.

    Raises:
        ValueError: as ``euler``, and on η < 0.
    """
    return _karras_run("euler_ancestral", model_fn, x_start, process, steps, sigma_min, sigma_max, rho,
                       (0.0, 0.0, None), eta, s_noise, clip_x0, eps,
                       loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit), grid)
