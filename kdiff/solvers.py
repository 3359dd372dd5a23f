"""Few-step solvers of the probability-flow ODE: DPM-Solver++ and Karras et al.'s samplers.

* ``dpm_solver`` — multistep DPM-Solver++ (Lu et al. 2022, orders 1–3, and its SDE
  variant), which with its defaults reproduces diffusers' ``DPMSolverMultistepScheduler``
  with its defaults;
* ``euler``, ``heun``, ``euler_ancestral`` — Karras et al. (2022)'s samplers on the
  denoiser D(x, σ) = x + σ² ∇log p_σ(x), as k-diffusion's ``sample_euler``,
  ``sample_heun`` (Algorithm 2, with its "churn" options) and ``sample_euler_ancestral``,
  over ``kdiff.schedules.karras_sigmas``.

They take every process that can say what x̂₀ its model predicts: a discrete schedule
(an ε-model ``eps_fn(x, t)``), and for Karras' samplers a σ ladder and any SDE
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

Loops, seeds, ``noise_fn``, trajectories and callbacks are those of ``kdiff.samplers``
(see its module doc); every table is built once by ``kdiff._steps.plan``, so a tensor
``steps`` (an export's runtime input) runs the same code in one graph.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from kdiff import _checks, _loop, _random, _steps, processes
from kdiff.samplers import (
    _at,
    _batch_fill,
    _call_model,
    _check_clip,
    _clip,
    _labels,
    _loop_options,
    _sde_alpha_std,
    _start,
)
from kdiff.schedules import karras_sigmas

__all__ = ["dpm_solver", "dpm_timesteps", "euler", "heun", "euler_ancestral", "DPM_ALGORITHMS", "DPM_SOLVER_TYPES"]

DPM_ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++")
DPM_SOLVER_TYPES = ("midpoint", "heun")
_LOWER_ORDER_BELOW = 15  # diffusers' lower_order_final applies to runs of fewer steps
_SIGMA_GRID = 4097  # points of an SDE's σ(t) table, which maps σ back to t


# ----------------------------------------------------------------------------- helpers


def _eps_of(out, std, model_output):
    """The ε a model output stands for: itself for an ε-model, −std·score for a score model."""
    return out if model_output == "eps" else -std * out


def _check_process(process, kinds, name):
    """``process`` as a ``Process`` (descending σ's become ``Sigmas``), checked to be of ``kinds``."""
    process = processes.as_process(process, "process")
    if process.kind not in kinds:
        raise ValueError(
            f"Expected `process` for {name} to be a {' or '.join(kinds)} process. "
            f"Received: process={process!r} (a {process.kind})"
        )
    return process


def _check_eps(eps, process):
    """An SDE's last time, checked to lie in (0, T); None for the other processes."""
    if process.kind != "sde":
        return None
    eps = _checks.positive(eps, "eps")
    if eps >= process.T:
        raise ValueError(f"Expected 0 < eps < {process.T}. Received: eps={eps!r}")
    return eps


class _SigmaView:
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
                alpha, std = _sde_alpha_std(process, times)
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
        times = _interpolate(tf.math.log(positive), tf.constant(self._log_sigmas), tf.constant(self._times))
        alpha, _ = _sde_alpha_std(self.process, times)
        return tf.cast(times, tf.float32), tf.where(sigmas > 0, alpha, tf.ones_like(alpha))


def _interpolate(x, xp, fp):
    """``np.interp`` in TensorFlow: piecewise-linear f(x) through (xp, fp), xp ascending, clamped."""
    last = tf.shape(xp)[0] - 2
    index = tf.clip_by_value(tf.searchsorted(xp, x, side="right") - 1, 0, last)
    x0, x1 = tf.gather(xp, index), tf.gather(xp, index + 1)
    weight = tf.clip_by_value((x - x0) / (x1 - x0), 0.0, 1.0)
    return tf.gather(fp, index) + weight * (tf.gather(fp, index + 1) - tf.gather(fp, index))


def _state_noise_fn(noise_fn, history):
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


def _first_row(result, return_trajectory):
    """x (row 0) of a stacked state, and of each state of a trajectory."""
    if not return_trajectory:
        return result[0]
    final, trajectory = result
    rows = [s[0] for s in trajectory] if isinstance(trajectory, list) else trajectory[:, 0]
    return final[0], rows


# ------------------------------------------------------------------------- DPM-Solver++


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
        seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: see
            ``kdiff.samplers``; an img2img edit that starts at step k restarts the
            history there (first order at step k, as diffusers' scheduler does).

    Returns:
        x₀, or ``(x₀, trajectory)``.

    Raises:
        ValueError: on an order outside 1–3, an unknown algorithm or solver type, steps
            out of range, or a process other than a schedule or an SDE, naming the argument.
    """
    x = _start(x_T, "x_T")
    process = _check_process(process, ("schedule", "sde"), "dpm_solver")
    order = _checks.int_in_range(order, "order", 1, 3)
    _checks.one_of(algorithm, "algorithm", DPM_ALGORITHMS)
    _checks.one_of(solver_type, "solver_type", DPM_SOLVER_TYPES)
    clip_x0 = _check_clip(clip_x0)
    eps = _check_eps(eps, process)
    steps = _steps.check(steps, "steps", 1, process.T if process.kind == "schedule" else None)
    first = 0 if _steps.is_tensor(steps) else _loop.first_visit(edit, steps)
    plan = _steps.plan(
        lambda: _dpm_plan(process, steps, order, algorithm == "sde-dpmsolver++", solver_type,
                          bool(lower_order_final), bool(final_sigma_zero), eps, first),
        steps,
    )
    history, stochastic = order - 1, algorithm == "sde-dpmsolver++"
    level_dtype = process.level_dtype

    def step(i, state, noises):
        x, previous = state[0], [state[k] for k in range(1, history + 1)]
        level = _batch_fill(_at(plan["level"], i, level_dtype), x, level_dtype)
        alpha, std = _at(plan["alpha"], i, x.dtype), _at(plan["std"], i, x.dtype)
        eps_hat = _eps_of(_call_model(model_fn, x, level, "model_fn"), std, process.model_output)
        x0 = _clip((x - std * eps_hat) / alpha, clip_x0)
        x_next = _at(plan["a"], i, x.dtype) * x + _at(plan["b0"], i, x.dtype) * x0
        for k, m in enumerate(previous, start=1):
            x_next += _at(plan[f"b{k}"], i, x.dtype) * m
        if stochastic:
            x_next += _at(plan["c"], i, x.dtype) * noises[0][0]
        return tf.stack([x_next] + ([x0] + previous)[:history])  # the newest prediction first

    state = tf.stack([x] + [tf.zeros_like(x)] * history)
    options = _loop_options(
        seed, _state_noise_fn(noise_fn, history), return_trajectory, compiled, jit_compile, callback,
        _loop.on_first_row(edit),
    )
    result = _loop.run_steps(
        step,
        state,
        plan["noise_counts"],
        num_draws=1 if stochastic else 0,
        name=f"dpm_solver({algorithm}, order {order})",
        step_labels=_labels("t=", plan["level"], "{}" if process.kind == "schedule" else "{:.4g}"),
        levels=(plan["level_alpha"], plan["level_std"]),
        **options,
    )
    return _first_row(result, return_trajectory)


def dpm_timesteps(T, steps):
    """The timesteps of ``dpm_solver`` on a schedule: round(linspace(0, T − 1, steps + 1)),
    descending, without the 0 (diffusers' ``timestep_spacing="linspace"``).

    Args:
        T: the schedule's number of steps.
        steps: 1 ≤ steps ≤ T (an int, or an int tensor inside a graph).

    Returns:
        An int64 array of ``steps`` values from T − 1 down (a tensor for a tensor ``steps``).
    """
    steps = _steps.check(steps, "steps", 1, T)

    def build():
        n = tf.cast(steps, tf.int32)
        # numpy's linspace: i · ((T − 1)/n), its last point set to T − 1 exactly
        grid = tf.range(n + 1, dtype=tf.float64) * (tf.constant(T - 1, tf.float64) / tf.cast(n, tf.float64))
        grid = tf.concat([grid[:-1], [float(T - 1)]], 0)
        return tf.reverse(tf.cast(tf.round(grid), tf.int64), [0])[:-1]  # tf.round: half to even, as numpy

    return _steps.plan(build, steps)


def _dpm_plan(process, steps, order, stochastic, solver_type, lower_order_final, final_sigma_zero, eps, first=0):
    """DPM-Solver++'s per-step tables: step i computes
    x_next = a_i x + b0_i x̂₀ + b1_i x̂₀' + b2_i x̂₀'' + c_i z from the current and the two
    previous predictions; ``level``, ``alpha`` and ``std`` give the current x̂₀, and
    ``level_alpha`` / ``level_std`` the state before each step and after the last. The
    history fills from step ``first`` (where an img2img walk begins)."""
    n = tf.cast(steps, tf.int32)
    if process.kind == "schedule":
        timesteps = dpm_timesteps(process.T, steps)
        abar = tf.gather(tf.constant(process.alphas_cumprod, tf.float64), timesteps)
        level, alpha, std = tf.cast(timesteps, tf.int32), tf.sqrt(abar), tf.sqrt(1.0 - abar)
        abar_0 = float(process.alphas_cumprod[0])
        end = (1.0, 0.0) if final_sigma_zero else (math.sqrt(abar_0), math.sqrt(1.0 - abar_0))
    else:
        level = process.T - (process.T - eps) * tf.range(n, dtype=tf.float64) / tf.cast(n, tf.float64)
        alpha, std = _sde_alpha_std(process, level)
        level = tf.cast(level, tf.float32)
        end_alpha, end_std = _sde_alpha_std(process, tf.constant([eps], tf.float64))
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


# ---------------------------------------------------------------- Karras et al.'s samplers


def _karras_plan(view, steps, sigma_min, sigma_max, rho, s_churn, s_tmin, s_tmax, eta):
    """The per-step tables of Karras' samplers over ``karras_sigmas(steps, …)``.

    Step i goes from σ_i (raised to σ̂_i = σ_i (1 + γ_i) by churn) to σ_{i+1}; the
    ancestral step to σ_down_i, then adds σ_up_i z (k-diffusion's ``get_ancestral_step``).
    """
    sigmas = tf.convert_to_tensor(karras_sigmas(steps, sigma_min, sigma_max, rho), tf.float64)
    current, following = sigmas[:-1], sigmas[1:]
    n = tf.cast(tf.shape(current)[0], tf.float64)
    gamma = tf.where(
        (current >= s_tmin) & (current <= s_tmax),
        tf.minimum(s_churn / n, math.sqrt(2.0) - 1.0) * tf.ones_like(current),
        tf.zeros_like(current),
    )
    hat = current * (1.0 + gamma)
    hat_level, hat_alpha = view.levels(hat)
    next_level, next_alpha = view.levels(following)
    level, alpha = view.levels(current)
    _, every_alpha = view.levels(sigmas)
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
                clip_x0, eps, loop):
    """Runs ``method`` ("euler", "heun", "euler_ancestral") over Karras' σ's: the shared body
    of the three samplers (their arguments, checked here)."""
    x = _start(x_start, "x_start")
    process = _check_process(process, ("schedule", "sigmas", "sde"), method)
    s_churn, s_tmin, s_tmax = churn
    s_churn = _checks.non_negative(s_churn, "s_churn")
    s_tmin = _checks.non_negative(s_tmin, "s_tmin")
    if s_tmax is not None:
        if isinstance(s_tmax, bool) or not isinstance(s_tmax, (int, float)) or not s_tmax >= s_tmin:
            raise ValueError(
                f"Expected `s_tmax` None or a number >= s_tmin={s_tmin}. Received: s_tmax={s_tmax!r}"
            )
    eta = _checks.non_negative(eta, "eta")
    s_noise = _checks.non_negative(s_noise, "s_noise")
    clip_x0 = _check_clip(clip_x0)
    view = _SigmaView(process, _check_eps(eps, process))
    sigma_min = view.sigma_min if sigma_min is None else _checks.positive(sigma_min, "sigma_min")
    sigma_max = view.sigma_max if sigma_max is None else _checks.positive(sigma_max, "sigma_max")
    steps = _steps.check(steps, "steps", 1)
    plan = _steps.plan(
        lambda: _karras_plan(view, steps, sigma_min, sigma_max, rho, s_churn, s_tmin,
                             math.inf if s_tmax is None else float(s_tmax), eta),
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
        sigma, alpha = _at(plan[sigma_key], i, x.dtype), _at(plan[alpha_key], i, x.dtype)
        level = _batch_fill(_at(plan[level_key], i, level_dtype), x, level_dtype)
        out = _call_model(model_fn, alpha * x, level, "model_fn")
        return _clip(x - sigma * _eps_of(out, alpha * sigma, process.model_output), clip_x0)

    def ode_step(i, x, noises):
        sigma_hat = _at(plan["hat"], i, x.dtype)
        x = x + s_noise * _at(plan["churn"], i, x.dtype) * noises[0]
        d = (x - denoise(x, "hat", i)) / sigma_hat
        dt = _at(plan["next"], i, x.dtype) - sigma_hat
        x_euler = x + d * dt
        if method == "euler":
            return x_euler

        def corrected():
            d_next = (x_euler - denoise(x_euler, "next", i)) / _at(plan["next"], i, x.dtype)
            return x + (d + d_next) / 2.0 * dt

        return tf.cond(_at(plan["last"], i, tf.int32) > 0, lambda: x_euler, corrected)

    def ancestral_step(i, x, noises):
        sigma = _at(plan["sigma"], i, x.dtype)
        d = (x - denoise(x, "current", i)) / sigma
        x = x + d * (_at(plan["down"], i, x.dtype) - sigma)
        return x + s_noise * _at(plan["up"], i, x.dtype) * noises[0]

    if process.kind == "sigmas":  # NCSN's prior is noise over the data range: take it to σ_max
        if noise_fn is None:
            z = tf.random.stateless_normal(tf.shape(x), seed=_random.fold_in(seed, -1), dtype=x.dtype)
        else:  # the first draw
            z = _checks.model_output(noise_fn(tuple(x.shape)), x, "noise_fn")
        x = x + _at(plan["sigmas"], 0, x.dtype) * z
    else:
        x = x / _at(plan["state_alpha"], 0, x.dtype)
    ancestral = method == "euler_ancestral"
    noisy = eta > 0 if ancestral else s_churn > 0
    result = _loop.run_steps(
        ancestral_step if ancestral else ode_step,
        x,
        plan["ancestral_counts" if ancestral else "churn_counts"],
        num_draws=1 if noisy else 0,
        name=method,
        step_labels=_labels("sigma=", plan["sigma"], "{:.4g}"),
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
):
    """Euler's method on the probability-flow ODE dx_σ/dσ = (x_σ − D(x_σ, σ))/σ (k-diffusion's
    ``sample_euler``): one network evaluation a step, over ``karras_sigmas(steps, …)``.

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

    Returns:
        x₀, or ``(x₀, trajectory)``.

    Raises:
        ValueError: on steps < 1, a negative churn option, or a bad process, naming the
            argument.
    """
    return _karras_run("euler", model_fn, x_start, process, steps, sigma_min, sigma_max, rho,
                       (s_churn, s_tmin, s_tmax), 0.0, s_noise, clip_x0, eps,
                       _loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit))


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
):
    """Karras et al.'s Heun sampler (2022, Algorithm 2; k-diffusion's ``sample_heun``).

    Each step is Euler's to σ_{i+1}, corrected by the slope there (the trapezoidal rule);
    the last step, to σ = 0, is Euler's alone. Network evaluations: 2·steps − 1. Churn
    options as ``euler``.

    Args:
        model_fn, x_start, process, steps, rho, sigma_min, sigma_max, clip_x0, s_churn,
        s_tmin, s_tmax, s_noise, eps, seed, noise_fn, return_trajectory, compiled,
        jit_compile, callback, edit: as ``euler``.

    Returns:
        x₀, or ``(x₀, trajectory)``.

    Raises:
        ValueError: as ``euler``.
    """
    return _karras_run("heun", model_fn, x_start, process, steps, sigma_min, sigma_max, rho,
                       (s_churn, s_tmin, s_tmax), 0.0, s_noise, clip_x0, eps,
                       _loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit))


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
):
    """Ancestral Euler sampling (k-diffusion's ``sample_euler_ancestral``).

    Step i takes Euler's step from σ_i down to σ_down, then adds σ_up·s_noise·z, with
    σ_up = min(σ_{i+1}, η √(σ_{i+1}² (σ_i² − σ_{i+1}²)/σ_i²)) and σ_down = √(σ_{i+1}² − σ_up²):
    η = 1 is DDPM-like ancestral sampling, η = 0 is ``euler``. No noise on the last step.

    Args:
        model_fn, x_start, process, steps, rho, sigma_min, sigma_max, clip_x0, s_noise,
        eps, seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit: as ``euler``.
        eta: η ≥ 0.

    Returns:
        x₀, or ``(x₀, trajectory)``.

    Raises:
        ValueError: as ``euler``, and on η < 0.
    """
    return _karras_run("euler_ancestral", model_fn, x_start, process, steps, sigma_min, sigma_max, rho,
                       (0.0, 0.0, None), eta, s_noise, clip_x0, eps,
                       _loop_options(seed, noise_fn, return_trajectory, compiled, jit_compile, callback, edit))
