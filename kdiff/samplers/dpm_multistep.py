"""Multistep DPM-Solver++ (Lu et al. 2022, orders 1–3, and its SDE variant); with its defaults
it reproduces diffusers' ``DPMSolverMultistepScheduler`` with its defaults."""

from __future__ import annotations

import tensorflow as tf

from kdiff import checks, _steps, grids
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
    first_row,
    loop_options,
    state_noise_fn,
    step_labels,
)

__all__ = ["dpm_solver", "dpm_timesteps", "DPM_ALGORITHMS", "DPM_SOLVER_TYPES", "DPM_SPACINGS"]

dpm_timesteps = grids.linspace  # the name before kdiff.grids

DPM_ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++")
DPM_SOLVER_TYPES = ("midpoint", "heun")
DPM_SPACINGS = ("linspace", "leading", "trailing")  # DPMSolverMultistepScheduler's timestep_spacing
_LOWER_ORDER_BELOW = 15  # diffusers' lower_order_final applies to runs of fewer steps


def dpm_solver(
    model_fn,
    x_T,
    process,
    steps=20,
    order=2,
    algorithm="dpmsolver++",
    solver_type="midpoint",
    lower_order_final=True,
    final_sigma_zero=True,
    clip_x0=None,
    *,
    eps=1e-3,
    spacing="linspace",
    steps_offset=0,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    callback=None,
    edit=None,
):
    """Multistep DPM-Solver++ (Lu et al. 2022, "DPM-Solver++"), one network evaluation a step.

    Each step predicts x̂₀ and integrates the probability-flow ODE exactly in λ = log(α/std)
    with x̂₀ interpolated through the last ``order`` predictions (an exponential
    integrator): x_next = (std_next/std) x + α_next (1 − e^{−h}) x̂₀ + …, h = λ_next − λ.
    The first steps use lower orders while the history fills. With its defaults it is
    diffusers' ``DPMSolverMultistepScheduler`` with its defaults (``solver_order=2``,
    ``algorithm_type="dpmsolver++"``, ``solver_type="midpoint"``,
    ``timestep_spacing="linspace"``, ``lower_order_final=True``,
    ``final_sigmas_type="zero"``, ε-prediction, no thresholding): for a schedule the
    timesteps are round(linspace(0, T − 1, steps + 1)) from T − 1 down, without 0, and
    the last step goes to σ = 0, returning x̂₀.

    For an SDE (a score model) the times are linspace(T, eps, steps + 1) without eps, and
    the last step goes to σ = 0 (or to t = eps).

    ``algorithm="sde-dpmsolver++"`` is the SDE variant (a noise draw a step): orders 1
    and 2 are diffusers'; order 3 integrates the same quadratic as the ODE's order 3
    with the SDE's weight (k-diffusion's ``sample_dpmpp_3m_sde``), where diffusers'
    third-order SDE term does not vanish as h → 0.

    Args:
        model_fn: ``eps_fn(x, t)`` for a schedule (t int32 timesteps), ``score_fn(x, t)``
            for an SDE (t float times).
        x_T: start noise, [batch, ...] (a draw of the process's prior).
        process: a ``kdiff.schedules.Schedule`` or a ``kdiff.sde.SDE``.
        steps: the number of steps (= network evaluations), ≥ 1 (≤ T for a schedule).
        order: 1, 2 or 3.
        algorithm: "dpmsolver++" (the ODE) or "sde-dpmsolver++".
        solver_type: the second-order step, "midpoint" or "heun" (diffusers' names).
        lower_order_final: with fewer than 15 steps, use order ≤ 2 at the last but one
            step and order 1 at the last (diffusers' ``lower_order_final``).
        final_sigma_zero: the last step goes to σ = 0 and returns x̂₀ (diffusers'
            ``final_sigmas_type="zero"``, always first order); False: to the smallest
            level (a schedule's t = 0, diffusers' "sigma_min"; an SDE's t = eps).
        clip_x0: clip every x̂₀ to [−clip_x0, clip_x0] or to (low, high); None clips
            nothing (diffusers' default, ``thresholding=False``).
        eps: an SDE's last time (ignored for a schedule).
        spacing: a schedule's timesteps, as ``DPMSolverMultistepScheduler``'s
            ``timestep_spacing``: "linspace" (above), "trailing" (``grids.trailing``, from
            T − 1 down) or "leading" (i·(T // (steps + 1)) for i = steps … 1, plus
            ``steps_offset``). An SDE walks its uniform times whatever it says.
        steps_offset: added to "leading" timesteps (diffusers' ``steps_offset``).
        seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: see
            ``kdiff.samplers``; an img2img edit that starts at step k restarts the
            history there (first order at step k, as diffusers' scheduler does).

    Returns:
        x₀, or ``(x₀, trajectory)``.

    Raises:
        ValueError: on an order outside 1–3, an unknown algorithm or solver type, steps
            out of range, or a process other than a schedule or an SDE, naming the argument.
    """
    x = as_start(x_T, "x_T")
    process = check_process(process, ("schedule", "sde"), "dpm_solver")
    order = checks.int_in_range(order, "order", 1, 3)
    checks.one_of(algorithm, "algorithm", DPM_ALGORITHMS)
    checks.one_of(solver_type, "solver_type", DPM_SOLVER_TYPES)
    checks.one_of(spacing, "spacing", DPM_SPACINGS)
    steps_offset = checks.int_in_range(steps_offset, "steps_offset", 0, None)
    clip_x0 = check_clip(clip_x0)
    eps = check_eps(eps, process)
    steps = _steps.check(steps, "steps", 1, None if process.continuous_time else process.max_steps)
    first = 0 if _steps.is_tensor(steps) else _loop.first_visit(edit, steps)
    plan = _steps.plan(
        lambda: _dpm_plan(process, steps, order, algorithm == "sde-dpmsolver++", solver_type,
                          bool(lower_order_final), bool(final_sigma_zero), eps, first, (spacing, steps_offset)),
        steps,
    )
    history, stochastic = order - 1, algorithm == "sde-dpmsolver++"
    level_dtype = process.level_dtype

    def step(i, state, noises):
        x, previous = state[0], [state[k] for k in range(1, history + 1)]
        level = batch_fill(at_step(plan["level"], i, level_dtype), x, level_dtype)
        alpha, std = at_step(plan["alpha"], i, x.dtype), at_step(plan["std"], i, x.dtype)
        eps_hat = eps_of(call_model(model_fn, x, level, "model_fn"), std, process.model_output)
        x0 = clip_to((x - std * eps_hat) / alpha, clip_x0)
        x_next = at_step(plan["a"], i, x.dtype) * x + at_step(plan["b0"], i, x.dtype) * x0
        for k, m in enumerate(previous, start=1):
            x_next += at_step(plan[f"b{k}"], i, x.dtype) * m
        if stochastic:
            x_next += at_step(plan["c"], i, x.dtype) * noises[0][0]
        return tf.stack([x_next] + ([x0] + previous)[:history])  # the newest prediction first

    state = tf.stack([x] + [tf.zeros_like(x)] * history)
    options = loop_options(
        seed, state_noise_fn(noise_fn, history), return_trajectory, compiled, jit_compile, callback,
        _loop.on_first_row(edit),
    )
    result = _loop.run_steps(
        step,
        state,
        plan["noise_counts"],
        num_draws=1 if stochastic else 0,
        name=f"dpm_solver({algorithm}, order {order})",
        step_labels=step_labels("t=", plan["level"], "{}" if process.level_dtype.is_integer else "{:.4g}"),
        levels=(plan["level_alpha"], plan["level_std"]),
        **options,
    )
    return first_row(result, return_trajectory)


def _dpm_timesteps(T, steps, spacing, steps_offset):
    """A schedule's descending timesteps of ``DPMSolverMultistepScheduler.set_timesteps(steps)``
    with ``timestep_spacing`` ``spacing`` (see ``dpm_solver``)."""
    if spacing == "linspace":
        return grids.linspace(T, steps)
    if spacing == "trailing":
        return tf.reverse(grids.trailing(T, steps), [0])
    message = f"Expected steps_offset + steps * (T // (steps + 1)) < T={T}. Received: steps_offset={steps_offset}"
    ascending = grids.leading(T, _steps.check(steps, "steps", 1, T - 1) + 1)[1:] + steps_offset  # the 0 dropped
    if not _steps.is_tensor(steps):
        if ascending[-1] >= T:
            raise ValueError(f"{message}, steps={steps}")
        return ascending[::-1]
    with tf.control_dependencies([tf.debugging.assert_less(ascending[-1], tf.constant(T, tf.int64), message=message)]):
        return tf.reverse(ascending, [0])


def _dpm_plan(process, steps, order, stochastic, solver_type, lower_order_final, final_sigma_zero, eps, first=0,
              spacing=("linspace", 0)):
    """DPM-Solver++'s per-step tables: step i computes
    x_next = a_i x + b0_i x̂₀ + b1_i x̂₀' + b2_i x̂₀'' + c_i z from the current and the two
    previous predictions; ``level``, ``alpha`` and ``std`` give the current x̂₀, and
    ``level_alpha`` / ``level_std`` the state before each step and after the last. The
    history fills from step ``first`` (where an img2img walk begins). ``spacing`` is a
    schedule's (``timestep_spacing``, ``steps_offset``)."""
    n = tf.cast(steps, tf.int32)
    if process.continuous_time:  # times T … eps, uniform
        levels = process.T - (process.T - eps) * tf.range(n, dtype=tf.float64) / tf.cast(n, tf.float64)
        end_level = tf.constant([eps], tf.float64)
    else:  # diffusers' timesteps (linspace by default), ending at t = 0
        levels, end_level = _dpm_timesteps(process.T, steps, *spacing), tf.constant([0], tf.int64)
    alpha, std = process.marginal(levels)
    level = tf.cast(levels, process.level_dtype)
    end_alpha, end_std = process.marginal(end_level)
    end = (1.0, 0.0) if final_sigma_zero else (end_alpha[0], end_std[0])
    alpha_next = tf.concat([alpha[1:], tf.reshape(tf.cast(end[0], tf.float64), [1])], 0)
    std_next = tf.concat([std[1:], tf.reshape(tf.cast(end[1], tf.float64), [1])], 0)
    # e^{−h} = σ_next/σ in the VE σ = std/α; h = ∞ on a last step to σ = 0
    ratio = (std_next / alpha_next) / (std / alpha)
    h = -tf.math.log(ratio)
    finite = tf.math.is_finite(h)
    h_safe = tf.where(finite, h, tf.ones_like(h))
    h_prev = tf.concat([[1.0], h_safe], 0)[:n]
    h_prev2 = tf.concat([[1.0, 1.0], h_safe], 0)[:n]
    r0, r1 = h_prev / h_safe, h_prev2 / h_safe

    # the φ's of the exponential integrator, in H = h (ODE) or 2h (SDE)
    decay = ratio**2 if stochastic else ratio  # e^{−H}
    H = 2.0 * h_safe if stochastic else h_safe
    phi1 = alpha_next * (1.0 - decay)
    phi2 = alpha_next * (1.0 - (1.0 - decay) / H)
    phi3 = -alpha_next * ((decay - 1.0 + H) / H**2 - 0.5)  # the weight of D2
    a = std_next / std * (ratio if stochastic else 1.0)
    c = std_next * tf.sqrt(1.0 - ratio**2) if stochastic else tf.zeros_like(a)

    # the order of each step: the history fills, then the lower-order ends
    index = tf.range(n)
    orders = tf.minimum(order, tf.maximum(index - first, 0) + 1)
    if lower_order_final:
        short = n < _LOWER_ORDER_BELOW
        orders = tf.where(short & tf.equal(index, n - 2), tf.minimum(orders, 2), orders)
        orders = tf.where(short & tf.equal(index, n - 1), 1, orders)
    if final_sigma_zero:
        orders = tf.where(tf.equal(index, n - 1), 1, orders)

    zero = tf.zeros_like(a)
    # order 2: D1 = (m0 − m1)/r0, weighted ½φ1 (midpoint) or φ2 (heun)
    k = 0.5 * phi1 if solver_type == "midpoint" else phi2
    second = (phi1 + k / r0, -k / r0, zero)
    # order 3: D1 = D1_0 + r0/(r0 + r1)(D1_0 − D1_1), D2 = (D1_0 − D1_1)/(r0 + r1),
    # D1_0 = (m0 − m1)/r0, D1_1 = (m1 − m2)/r1; weights φ2 (D1) and φ3 (D2)
    w10 = phi2 * (1.0 + r0 / (r0 + r1)) + phi3 / (r0 + r1)
    w11 = -phi2 * r0 / (r0 + r1) - phi3 / (r0 + r1)
    third = (phi1 + w10 / r0, -w10 / r0 + w11 / r1, -w11 / r1)
    first = (phi1, zero, zero)
    b = [tf.where(tf.equal(orders, 1), f, tf.where(tf.equal(orders, 2), s, t)) for f, s, t in zip(first, second, third)]
    return {
        "level": level,
        "alpha": alpha,
        "std": std,
        "level_alpha": tf.concat([alpha[:1], alpha_next], 0),
        "level_std": tf.concat([std[:1], std_next], 0),
        "a": a,
        "b0": b[0],
        "b1": b[1],
        "b2": b[2],
        "c": c,
        "orders": orders,
        "noise_counts": tf.cast(c > 0, tf.int32),
    }
