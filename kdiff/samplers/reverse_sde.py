"""The reverse-SDE samplers of score-based models: Euler–Maruyama, predictor–corrector (Figure 11) and the probability-flow ODE."""

from __future__ import annotations

import numpy as np
import scipy.integrate
import tensorflow as tf

from kdiff import checks, _ops, _steps, grids
from kdiff.samplers import _loop
from kdiff.samplers.errors import NonFiniteSampleError
from kdiff.samplers._common import (
    as_start,
    at_step,
    batch_fill,
    call_model,
    loop_options,
    scalar_like,
    sde_levels,
    step_labels,
)
from kdiff.sde import SDE

__all__ = ["euler_maruyama", "predictor_corrector", "probability_flow", "ODE_FIXED_METHODS"]

_PREDICTORS = ("euler_maruyama", "reverse_diffusion")
_CORRECTORS = ("langevin", None)
_SDE_GRIDS = ("continuous", "discrete")  # predictor_corrector's time grids
ODE_FIXED_METHODS = ("euler", "heun", "rk4")  # probability_flow's fixed-step (in-graph) methods


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
    x = as_start(x_T, "x_T")
    sde = SDE.check(sde)
    checks.one_of(predictor, "predictor", _PREDICTORS)
    checks.one_of(corrector, "corrector", _CORRECTORS)
    checks.one_of(grid, "grid", _SDE_GRIDS)
    n_corrector = checks.int_in_range(n_corrector, "n_corrector", 0, None) if corrector else 0
    snr = checks.positive(snr, "snr")
    if grid == "continuous":
        times, h = grids.sde_uniform(sde.T, steps, eps)
        level_times = level_dt = None
    else:
        times, level_times, level_dt = grids.sde_linspace(sde.T, steps, eps)
        h = _steps.plan(lambda: tf.constant(sde.T, tf.float64) / tf.cast(steps, tf.float64), steps)

    def counts():
        n = tf.shape(times)[0]
        last = n_corrector if denoise else n_corrector + 1  # denoise: no noise on the last predictor step
        return tf.concat([tf.fill([n - 1], n_corrector + 1), [last]], 0)

    noise_counts = _steps.plan(counts, steps)
    # the state is at t_i before step i; after the last at eps (the continuous grid) or on
    # the data (the discrete grid's last step goes below its lowest level)
    levels = _steps.plan(lambda: sde_levels(sde, times, eps if grid == "continuous" else None), steps)
    reverse = sde.reverse(score_fn)

    def correct(x, t, z):
        grad = call_model(score_fn, x, t, "score_fn")
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
            sqrt_h = scalar_like(tf.sqrt(tf.cast(h, tf.float64)), x)
            return x - drift * scalar_like(h, x) + _ops.batch_view(diffusion * sqrt_h, x) * z
        if level_times is None:
            f, G = reverse.discretize(x, t, float(h) if isinstance(h, (float, np.floating)) else scalar_like(h, x))
            return x - f + _ops.batch_view(G, x) * z
        # The discrete grid: the step between two levels of the discretization, the score at t.
        level_t = batch_fill(at_step(level_times, i, x.dtype), x)
        f, G = sde.discretize(x, level_t, float(level_dt) if isinstance(level_dt, (float, np.floating)) else scalar_like(level_dt, x))
        score = call_model(score_fn, x, t, "score_fn")
        return x - f + _ops.batch_view(G**2, x) * score + _ops.batch_view(G, x) * z

    def step(i, x, noises):
        t = batch_fill(at_step(times, i, x.dtype), x)
        for k in range(n_corrector):
            x = correct(x, t, noises[k])
        return predict(i, x, t, noises[n_corrector])

    return _loop.run_steps(
        step,
        x,
        noise_counts,
        num_draws=n_corrector + 1,
        name=f"predictor_corrector({predictor}, {corrector})",
        step_labels=step_labels("t=", times, "{:.4g}"),
        levels=levels,
        **loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
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
        eps=eps, denoise=denoise, **loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
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
    x = as_start(x_T, "x_T")
    sde = SDE.check(sde)
    flow = sde.reverse(score_fn, probability_flow=True)

    def velocity(x, t):
        return flow.sde(x, batch_fill(t, x))[0]

    if method in ODE_FIXED_METHODS:
        times, h = grids.sde_uniform(sde.T, 100 if steps is None else steps, eps)

        def step(i, x, noises):
            t, dt = at_step(times, i, x.dtype), scalar_like(h, x)
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
            step_labels=step_labels("t=", times, "{:.4g}"),
            levels=_steps.plan(lambda: sde_levels(sde, times, eps), steps),
            **loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit),
        )
    if edit is not None:
        raise ValueError(
            f"Expected a fixed-step `method` ({list(ODE_FIXED_METHODS)}) for an edit (inpainting, img2img): "
            f"the adaptive solver runs outside the step loop. Received: method={method!r}"
        )
    return _solve_ivp(velocity, x, sde.T, checks.positive(eps, "eps"), method, rtol, atol,
                      11 if steps is None else checks.int_in_range(steps, "steps", 2, None),
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
