"""DDPM ancestral sampling (Algorithm 2, with Improved DDPM's learned variance and respacing), DDIM (eq. 31) and its deterministic inversion."""

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
    check_clip,
    clip_to,
    loop_options,
    timestep_grid,
    reverse,
    step_labels,
    vp_levels,
)
from kdiff.grids import leading, spaced, trailing
from kdiff.schedules import Schedule

__all__ = ["ddpm", "ddim", "ddim_invert", "ddim_timesteps", "SPACINGS"]

ddim_timesteps = leading  # the name before kdiff.grids

_DDPM_VARIANCES = ("beta", "beta_tilde", "learned")
# diffusers' ``timestep_spacing`` names (DDPMScheduler / DDIMScheduler.set_timesteps)
SPACINGS = ("leading", "trailing", "linspace")
_DDPM_SPACINGS = ("even",) + SPACINGS


def _spaced_timesteps(T, steps, spacing, steps_offset):
    """The ascending timesteps of a run of ``steps``, as diffusers' ``DDPMScheduler`` /
    ``DDIMScheduler.set_timesteps`` picks them.

    Args:
        T: the schedule's number of steps.
        steps: the number of steps (an int, or an int tensor inside a graph).
        spacing: "leading" (``grids.leading`` + ``steps_offset``), "trailing"
            (``grids.trailing``), "linspace" or "even" (``grids.spaced``: round(linspace(0,
            T − 1, steps)), diffusers' "linspace" and Improved DDPM's respacing).
        steps_offset: added to the leading timesteps (diffusers adds it to no other spacing).

    Returns:
        An ascending int64 array (a tensor for a tensor ``steps``).

    Raises:
        ValueError: when the offset takes the last timestep to T or beyond.
    """
    if spacing == "trailing":
        return trailing(T, steps)
    if spacing in ("even", "linspace"):
        return spaced(T, steps)
    ascending = leading(T, steps)
    if steps_offset == 0:
        return ascending
    if _steps.is_tensor(steps):
        check = tf.debugging.assert_less(
            ascending[-1] + steps_offset, tf.constant(T, tf.int64),
            message=f"Expected steps_offset + (steps - 1) * (T // steps) < T={T}. Received: steps_offset={steps_offset}",
        )
        with tf.control_dependencies([check]):
            return tf.identity(ascending) + steps_offset
    if ascending[-1] + steps_offset >= T:
        raise ValueError(
            f"Expected steps_offset + (steps - 1) * (T // steps) < T={T} (the last timestep). Received: "
            f"steps_offset={steps_offset}, steps={steps}"
        )
    return ascending + steps_offset


def ddpm(
    eps_fn,
    x_T,
    schedule,
    variance="beta_tilde",
    steps=None,
    clip_x0=None,
    *,
    spacing="even",
    steps_offset=0,
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
            ``space_timesteps``: 0 … T−1, both ends kept; diffusers calls it "linspace"),
            "leading" (i·(T // steps), as DDIM and diffusers' ``DDPMScheduler`` with its
            default ``timestep_spacing``), "trailing" (``grids.trailing``: from T − 1 down)
            or "linspace" (the same as "even") — diffusers' ``timestep_spacing`` names.
        steps_offset: added to the "leading" timesteps of a respaced run (diffusers'
            ``steps_offset``); a run of all T steps walks every timestep.
        seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: see the module doc.

    Returns:
        x_0, or ``(x_0, trajectory)``.
    """
    x = as_start(x_T, "x_T")
    schedule = Schedule.check(schedule)
    checks.one_of(variance, "variance", _DDPM_VARIANCES)
    checks.one_of(spacing, "spacing", _DDPM_SPACINGS)
    steps_offset = checks.int_in_range(steps_offset, "steps_offset", 0, schedule.T - 1)
    clip_x0 = check_clip(clip_x0)
    full = steps is None or (not _steps.is_tensor(steps) and steps == schedule.T)
    steps = schedule.T if full else _steps.check(steps, "steps", 1, schedule.T)
    plan = _steps.plan(lambda: _ddpm_plan(schedule, None if full else steps, spacing, steps_offset), steps)
    fixed_log = {"beta": plan["max_log"], "beta_tilde": plan["min_log"], "learned": None}[variance]

    def step(i, x, noises):
        t = batch_fill(at_step(plan["model_t"], i, tf.int32), x, tf.int32)
        out = eps_fn(x, t)
        if variance == "learned":
            eps, v = checks.split_eps_v(out, x, "eps_fn")
            # v interpolates log β̃ … log β (eq. 20); outside [−1, 1] it would extrapolate
            # the variance (an untrained network can overflow it), so it is clipped.
            frac = (tf.clip_by_value(v, -1.0, 1.0) + 1.0) / 2.0
            log_var = frac * at_step(plan["max_log"], i, x.dtype) + (1.0 - frac) * at_step(plan["min_log"], i, x.dtype)
        else:
            eps = checks.model_output(out, x, "eps_fn")
            log_var = at_step(fixed_log, i, x.dtype)
        x0 = clip_to(at_step(plan["recip"], i, x.dtype) * x - at_step(plan["recipm1"], i, x.dtype) * eps, clip_x0)
        mean = at_step(plan["coef1"], i, x.dtype) * x0 + at_step(plan["coef2"], i, x.dtype) * x
        return mean + tf.exp(0.5 * log_var) * noises[0]

    return _loop.run_steps(
        step,
        x,
        plan["noise_counts"],
        num_draws=1,
        name="ddpm",
        step_labels=step_labels("t=", plan["model_t"]),
        levels=(plan["level_alpha"], plan["level_std"]),
        **loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
    )


def _ddpm_plan(schedule, steps, spacing="even", steps_offset=0):
    """DDPM's per-step tables in step order (step i handles timestep ``model_t[i]``).

    Args:
        schedule: the ``Schedule``.
        steps: None for all T timesteps, or how many (an int or a tensor).
        spacing: "even", "leading", "trailing" or "linspace" (see ``ddpm``).
        steps_offset: added to "leading" timesteps.

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
        timesteps = _spaced_timesteps(schedule.T, steps, spacing, steps_offset)
        picked = tf.gather(tf.constant(schedule.alphas_cumprod, tf.float64), timesteps)
        betas = 1.0 - picked / tf.concat([[1.0], picked[:-1]], 0)
        abar = tf.math.cumprod(1.0 - betas)
    alphas = 1.0 - betas
    abar_prev = tf.concat([[1.0], abar[:-1]], 0)
    n = tf.shape(betas)[0]
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    # log β̃ at t = 0 is log 0: the reference code uses β̃_1 there (β_0 when T = 1).
    floor = tf.where(n > 1, posterior_variance[tf.minimum(1, n - 1)], betas[0])
    level_alpha, level_std = vp_levels(tf.concat([reverse(abar), [1.0]], 0))  # x_0 after the last step
    return {
        "level_alpha": level_alpha,
        "level_std": level_std,
        "model_t": reverse(tf.cast(timesteps, tf.int32)),
        "recip": reverse(tf.sqrt(1.0 / abar)),
        "recipm1": reverse(tf.sqrt(1.0 / abar - 1.0)),
        "coef1": reverse(betas * tf.sqrt(abar_prev) / (1.0 - abar)),
        "coef2": reverse((1.0 - abar_prev) * tf.sqrt(alphas) / (1.0 - abar)),
        "min_log": reverse(tf.math.log(tf.concat([[floor], posterior_variance[1:]], 0))),
        "max_log": reverse(tf.math.log(tf.concat([[floor], betas[1:]], 0))),
        "noise_counts": tf.concat([tf.ones([n - 1], tf.int32), [0]], 0),  # x_0 = μ̃ at the last step
    }


# ------------------------------------------------------------------------------ DDIM


def ddim(
    eps_fn,
    x_T,
    schedule,
    steps=50,
    eta=0.0,
    clip_x0=None,
    *,
    clipped_eps=True,
    spacing="leading",
    steps_offset=0,
    final_alpha_one=True,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
    grid=None,
):
    """DDIM sampling (Song et al. 2020, eq. 31).

    x_{prev} = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε_θ + σ z, with
    σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev). Timesteps t_i = i·(T // steps) from
    i = steps−1 down to 0, and ᾱ past the last step is 1 — the DDIM reference code's
    uniform spacing and diffusers' DDIMScheduler default. η = 0 is deterministic, η = 1
    is DDPM-like ancestral sampling.

    ``spacing``, ``steps_offset`` and ``final_alpha_one`` follow diffusers' ``DDIMScheduler``
    (``timestep_spacing``, ``steps_offset``, ``set_alpha_to_one``): the step from t goes to
    ᾱ at t − T // steps, as ``DDIMScheduler.step`` computes its previous timestep (for
    "leading" that is the next timestep of the walk; for "trailing" with T / steps no
    integer, and for "linspace", it is not), and to the final ᾱ below 0.

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
        spacing: diffusers' ``timestep_spacing``: "leading" (i·(T // steps) +
            ``steps_offset``), "trailing" (``grids.trailing``: round(T − i·T/steps) − 1) or
            "linspace" (``grids.spaced``: round(linspace(0, T − 1, steps)); one step is
            T − 1 where diffusers takes 0).
        steps_offset: added to the "leading" timesteps (diffusers' ``steps_offset``).
        final_alpha_one: ᾱ past the last step is 1 (diffusers' ``set_alpha_to_one``);
            False: ᾱ_0.
        seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: see the module doc.
        grid: the timesteps to walk instead of ``spacing``'s: ascending ints in
            [0, T) (``kdiff.grids``), or descending σ's (``grids.karras(...)``), walked at
            the distinct timesteps nearest them in log σ (``Schedule.at_sigma``), each step
            going to the next of them. It sets the number of steps; ``steps``, ``spacing``
            and ``steps_offset`` are then unused.

    Returns:
        x_0, or ``(x_0, trajectory)``.
    """
    x = as_start(x_T, "x_T")
    schedule = Schedule.check(schedule)
    eta = checks.non_negative(eta, "eta")
    clip_x0 = check_clip(clip_x0)
    checks.one_of(spacing, "spacing", SPACINGS)
    steps_offset = checks.int_in_range(steps_offset, "steps_offset", 0, schedule.T - 1)
    if not isinstance(final_alpha_one, (bool, np.bool_)):
        raise ValueError(f"Expected `final_alpha_one` to be True or False. Received: final_alpha_one={final_alpha_one!r}")
    final = 1.0 if final_alpha_one else float(schedule.alphas_cumprod[0])
    if grid is None:
        steps = _steps.check(steps, "steps", 1, schedule.T)

        def walk():  # DDIMScheduler.step's previous timestep: t − T // steps
            ascending = _spaced_timesteps(schedule.T, steps, spacing, steps_offset)
            return ascending, ascending - tf.cast(schedule.T // steps, tf.int64)
    else:
        grid = timestep_grid(grid, schedule)
        steps, walk = len(grid), lambda: (grid, None)  # noqa: E731
    plan = _steps.plan(lambda: _ddim_plan(schedule, *walk(), eta, final), steps)

    def step(i, x, noises):
        t = batch_fill(at_step(plan["model_t"], i, tf.int32), x, tf.int32)
        eps = call_model(eps_fn, x, t, "eps_fn")
        a, a_prev = at_step(plan["abar"], i, x.dtype), at_step(plan["abar_prev"], i, x.dtype)
        x0 = (x - tf.sqrt(1.0 - a) * eps) / tf.sqrt(a)
        if clip_x0 is not None:
            x0 = clip_to(x0, clip_x0)
            if clipped_eps:
                eps = (x - tf.sqrt(a) * x0) / tf.sqrt(1.0 - a)
        return (
            tf.sqrt(a_prev) * x0
            + at_step(plan["direction"], i, x.dtype) * eps
            + at_step(plan["sigma"], i, x.dtype) * noises[0]
        )

    return _loop.run_steps(
        step,
        x,
        plan["noise_counts"],
        num_draws=1 if eta > 0 else 0,
        name="ddim",
        step_labels=step_labels("t=", plan["model_t"]),
        levels=(plan["level_alpha"], plan["level_std"]),
        **loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
    )


def _ddim_plan(schedule, ascending, previous, eta, final=1.0):
    """DDIM's per-step tables, over ascending timesteps, in step order: ``model_t``, ``abar``, ``abar_prev``,
    ``sigma`` (eq. 31's σ for η), ``direction`` (√(1 − ᾱ_prev − σ²)), ``noise_counts``,
    and the state's ``level_alpha`` / ``level_std``.

    Each step goes to ᾱ at ``previous`` (ᾱ ``final`` below 0), or with ``previous`` None to
    the next timestep of ``ascending`` (``final`` after the last)."""
    alphas_cumprod = tf.constant(schedule.alphas_cumprod, tf.float64)
    abar = tf.gather(alphas_cumprod, ascending)
    if previous is None:
        abar_prev = tf.concat([[final], abar[:-1]], 0)
    else:
        previous = tf.convert_to_tensor(previous, tf.int64)
        abar_prev = tf.where(previous >= 0, tf.gather(alphas_cumprod, tf.maximum(previous, 0)), tf.constant(final, tf.float64))
    sigma = eta * tf.sqrt((1 - abar_prev) / (1 - abar)) * tf.sqrt(1 - abar / abar_prev)
    plan = {
        "model_t": tf.cast(ascending, tf.int32),
        "abar": abar,
        "abar_prev": abar_prev,
        "sigma": sigma,
        "direction": tf.sqrt(tf.maximum(1 - abar_prev - sigma**2, 0.0)),
        "noise_counts": tf.cast(sigma > 0, tf.int32),
    }
    plan = {key: reverse(value) for key, value in plan.items()}
    plan["level_alpha"], plan["level_std"] = vp_levels(tf.concat([plan["abar"][:1], plan["abar_prev"]], 0))
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
    x = as_start(x_0, "x_0")
    schedule = Schedule.check(schedule)
    steps = checks.int_in_range(steps, "steps", 1, schedule.T)
    ascending = leading(schedule.T, steps)
    abar = schedule.alphas_cumprod[ascending]
    abar_from = np.append(1.0, abar[:-1])
    eval_t = np.append(ascending[0], ascending[:-1]).astype(np.int32)

    def step(i, x, noises):
        t = batch_fill(at_step(eval_t, i, tf.int32), x, tf.int32)
        eps = call_model(eps_fn, x, t, "eps_fn")
        a_from, a_to = at_step(abar_from, i, x.dtype), at_step(abar, i, x.dtype)
        x0 = (x - tf.sqrt(1.0 - a_from) * eps) / tf.sqrt(a_from)
        return tf.sqrt(a_to) * x0 + tf.sqrt(1.0 - a_to) * eps

    return _loop.run_steps(
        step,
        x,
        np.zeros(len(ascending), dtype=np.int32),
        name="ddim_invert",
        step_labels=[f"t={t}" for t in ascending],
        **loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
    )
