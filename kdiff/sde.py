"""Stochastic differential equations of score-based models (Song et al. 2021; the survey's eqs. 34–36).

Each SDE owns its math — drift and diffusion (eq. 34), the perturbation kernel
p_0t(x(t) | x(0)), the prior and its log-density, a discretization, and the reverse-time
SDE (eq. 35) or probability-flow ODE — in the shape of score_sde's ``sde_lib.py``.
Time is continuous, t ∈ [0, T] with T = 1; ``N`` is the number of discretization steps.
The one place where continuous t meets discrete steps is ``SDE.timestep_index``.
"""

from __future__ import annotations

import abc
import math

import numpy as np
import tensorflow as tf

from kdiff import checks, _ops, _random, _steps
from kdiff.process import Process

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "ReverseSDE", "from_config"]


def _num_dims(x):
    return tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)


class SDE(Process):
    """Base class of a forward SDE dx = f(x, t) dt + g(t) dw on t ∈ [0, T].

    Args:
        N: number of discretization steps.
    """

    T = 1.0
    kind = "sde"
    family = "sde"
    level_description = "continuous time t in (0, 1]"
    default_sampler = "predictor_corrector"
    steps_name = "N"
    continuous_time = True
    _SIGMA_TABLE = 4097  # points of the σ(t) table that maps σ back to t

    def __init__(self, N):
        self.N = checks.positive_int(N, "N")

    @property
    def num_steps(self):
        """N."""
        return self.N

    def prior_sample(self, shape, seed, data_range=None):
        """A draw from the prior p_T (``prior_sampling``)."""
        return self.prior_sampling(shape, seed=seed)

    def marginal(self, level):
        """α(t) (the mean coefficient) and std(t) of x_t | x₀ at times ``level``, float64."""
        t = tf.cast(level, tf.float64)
        mean, std = self.marginal_prob(tf.ones([tf.shape(t)[0], 1], tf.float64), t)
        return tf.cast(mean[:, 0], tf.float64), tf.cast(std, tf.float64)

    def _sigma_table(self, eps):
        """Times on [eps, T] and log σ(t) = log(std/α) there (numpy float64), σ(t) checked to increase."""
        if eps is None:
            raise ValueError(f"Expected `eps`, the smallest time, for an SDE's σ's. Received: eps=None for {self!r}")

        def build():
            times = tf.constant(np.linspace(eps, self.T, self._SIGMA_TABLE), tf.float64)
            alpha, std = self.marginal(times)
            return times, tf.math.log(std / alpha)

        times, log_sigmas = _steps.plan(build)
        if np.any(np.diff(log_sigmas) <= 0):
            raise ValueError(f"Expected an SDE whose σ(t) = std/α increases in t. Received: sde={self!r}")
        return times, log_sigmas

    def sigma_range(self, eps=None):
        """(σ(eps), σ(T)) with σ = std/α."""
        _, log_sigmas = self._sigma_table(eps)
        return float(np.exp(log_sigmas[0])), float(np.exp(log_sigmas[-1]))

    def at_sigma(self, sigmas, eps=None):
        """The time t in [eps, T] where std/α = σ (interpolated in log σ), and α(t) there
        (α = 1 at σ = 0)."""
        times, log_sigmas = self._sigma_table(eps)
        positive = tf.where(sigmas > 0, sigmas, tf.constant(float(np.exp(log_sigmas[0])), tf.float64))
        t = _ops.interpolate(tf.math.log(positive), tf.constant(log_sigmas), tf.constant(times))
        alpha, _ = self.marginal(t)
        return tf.cast(t, tf.float32), tf.where(sigmas > 0, alpha, tf.ones_like(alpha))

    def level_checks(self, level):
        """Graph assertions that ``level`` holds times in (0, T]."""
        message = f"Expected times `level` (t) in (0, {self.T}]. Received:"
        return [
            tf.debugging.assert_all_finite(level, message="Expected finite times `level` (t)"),
            tf.debugging.assert_positive(level, message=f"{message} t <= 0"),
            tf.debugging.assert_less_equal(level, tf.constant(self.T, tf.float32), message=f"{message} t > {self.T}"),
        ]

    @classmethod
    def from_config(cls, config):
        """Rebuilds an SDE from ``get_config()`` (``kdiff.sde.from_config``)."""
        return from_config(config)

    def get_config(self):
        """A JSON-serializable description; ``kdiff.sde.from_config`` rebuilds the SDE."""
        return {"name": type(self).__name__, "N": self.N, **self._parameters()}

    @abc.abstractmethod
    def _parameters(self):
        """The constructor's arguments other than N."""

    @abc.abstractmethod
    def sde(self, x, t):
        """Returns ``(drift, diffusion)``: f(x, t) shaped like x and g(t) of shape [batch]."""

    @abc.abstractmethod
    def marginal_prob(self, x0, t):
        """Returns ``(mean, std)`` of p_0t(x(t) | x(0)); std has shape [batch]."""

    @abc.abstractmethod
    def prior_sampling(self, shape, seed=None):
        """Draws from the prior p_T.

        Args:
            shape: output shape, batch first.
            seed: int, shape-[2] int tensor, or None for a random draw.

        Returns:
            A float32 tensor of ``shape``.
        """

    @abc.abstractmethod
    def prior_logp(self, z):
        """Returns log p_T(z) per example, shape [batch]."""

    def discretize(self, x, t, dt=None):
        """The SDE's discretization x_{i+1} = x_i + f_i(x_i) + G_i z_i (Euler–Maruyama).

        Args:
            x: tensor [batch, ...].
            t: float tensor [batch].
            dt: step length (a float or a scalar tensor); ``1/N`` when None.

        Returns:
            ``(f, G)``: f shaped like x, G of shape [batch].
        """
        dt = 1.0 / self.N if dt is None else dt
        drift, diffusion = self.sde(x, t)
        if tf.is_tensor(dt):  # a step length computed in the graph (a runtime number of steps)
            dt = tf.cast(dt, x.dtype)
            return drift * dt, diffusion * tf.sqrt(dt)
        return drift * dt, diffusion * math.sqrt(dt)

    def langevin_alpha(self, t):
        """The α_i that scales the Langevin corrector's step (score_sde): 1 here."""
        return tf.ones_like(t)

    def timestep_index(self, t):
        """Maps continuous t ∈ [0, T] to the nearest discretization index in [0, N−1]."""
        return tf.cast(tf.round(t * (self.N - 1) / self.T), tf.int32)

    def reverse(self, score_fn, probability_flow=False):
        """The reverse-time SDE (eq. 35), or the probability-flow ODE.

        Args:
            score_fn: ``score_fn(x, t) -> ∇_x log p_t(x)``, t a float tensor [batch].
            probability_flow: if True, the deterministic ODE with the same marginals,
                dx = [f − ½ g² ∇log p_t] dt.

        Returns:
            A ``ReverseSDE``.
        """
        return ReverseSDE(self, score_fn, probability_flow)



class ReverseSDE:
    """The reverse-time SDE of ``sde`` driven by ``score_fn`` (eq. 35).

    Args:
        sde: the forward ``SDE``.
        score_fn: ``score_fn(x, t)``.
        probability_flow: whether this is the probability-flow ODE (no noise).
    """

    def __init__(self, sde, score_fn, probability_flow=False):
        self.forward = sde
        self.score_fn = score_fn
        self.probability_flow = bool(probability_flow)
        self.N = sde.N
        self.T = sde.T

    def sde(self, x, t):
        """Returns ``(drift, diffusion)`` of the reverse process, to be integrated with dt < 0."""
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        factor = 0.5 if self.probability_flow else 1.0
        drift = drift - _ops.batch_view(diffusion**2, x) * score * factor
        if self.probability_flow:
            diffusion = tf.zeros_like(diffusion)
        return drift, diffusion

    def discretize(self, x, t, dt=None):
        """The reverse diffusion step of the forward discretization: (f − G² s, G)."""
        f, G = self.forward.discretize(x, t, dt)
        score = self.score_fn(x, t)
        factor = 0.5 if self.probability_flow else 1.0
        rev_f = f - _ops.batch_view(G**2, x) * score * factor
        rev_G = tf.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


class VPSDE(SDE):
    """Variance-preserving SDE, the continuous limit of DDPM: dx = −½β(t)x dt + √β(t) dw.

    Args:
        beta_min: β(0).
        beta_max: β(1).
        N: number of discretization steps (DDPM's T).
    """

    def __init__(self, beta_min=0.1, beta_max=20.0, N=1000):
        super().__init__(N)
        self.beta_0 = checks.positive(beta_min, "beta_min")
        self.beta_1 = checks.positive(beta_max, "beta_max")
        if self.beta_1 < self.beta_0:
            raise ValueError(
                "Expected beta_max >= beta_min. "
                f"Received: beta_min={beta_min!r}, beta_max={beta_max!r}"
            )
        self.discrete_betas = np.linspace(beta_min / N, beta_max / N, N)
        self.alphas = 1.0 - self.discrete_betas

    def __repr__(self):
        return f"VPSDE(beta_min={self.beta_0}, beta_max={self.beta_1}, N={self.N})"

    def _parameters(self):
        return {"beta_min": self.beta_0, "beta_max": self.beta_1}

    def _beta(self, t):
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def _log_mean_coeff(self, t):
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def sde(self, x, t):
        t = tf.cast(t, x.dtype)
        beta_t = self._beta(t)
        return -0.5 * _ops.batch_view(beta_t, x) * x, tf.sqrt(beta_t)

    def marginal_prob(self, x0, t):
        t = tf.cast(t, x0.dtype)
        log_mean_coeff = self._log_mean_coeff(t)
        mean = _ops.batch_view(tf.exp(log_mean_coeff), x0) * x0
        std = tf.sqrt(1.0 - tf.exp(2.0 * log_mean_coeff))
        return mean, std

    def prior_sampling(self, shape, seed=None):
        return _random.normal(shape, seed)

    def prior_logp(self, z):
        n = _num_dims(z)
        return -n / 2.0 * math.log(2 * math.pi) - _ops.sum_flat(z**2) / 2.0

    def discretize(self, x, t, dt=None):
        """DDPM's ancestral step: f = (√(1−β_i) − 1) x, G = √β_i.

        β_i = 1 − exp(−∫_{t−dt}^{t} β(s) ds) is the exact VP transition over the step, so
        it stays in (0, 1) for any step size; with dt = 1/N it agrees with score_sde's
        ``discrete_betas`` β(t)/N to first order.
        """
        dt = 1.0 / self.N if dt is None else dt
        t = tf.cast(t, x.dtype)
        start = tf.maximum(t - dt, 0.0)
        integral = self.beta_0 * (t - start) + 0.5 * (self.beta_1 - self.beta_0) * (t**2 - start**2)
        beta = -tf.math.expm1(-integral)
        f = _ops.batch_view(tf.sqrt(1.0 - beta), x) * x - x
        return f, tf.sqrt(beta)

    def langevin_alpha(self, t):
        """α_i = 1 − β_i of the N-step discretization (score_sde's Langevin corrector)."""
        return 1.0 - self._beta(t) / self.N


class SubVPSDE(VPSDE):
    """Sub-VP SDE: dx = −½β(t)x dt + √(β(t)(1 − e^{−2∫β})) dw; its variance stays below VP's.

    Args:
        beta_min: β(0).
        beta_max: β(1).
        N: number of discretization steps.
    """

    def __repr__(self):
        return f"SubVPSDE(beta_min={self.beta_0}, beta_max={self.beta_1}, N={self.N})"

    def sde(self, x, t):
        t = tf.cast(t, x.dtype)
        beta_t = self._beta(t)
        discount = 1.0 - tf.exp(-2.0 * self.beta_0 * t - (self.beta_1 - self.beta_0) * t**2)
        return -0.5 * _ops.batch_view(beta_t, x) * x, tf.sqrt(beta_t * discount)

    def marginal_prob(self, x0, t):
        t = tf.cast(t, x0.dtype)
        log_mean_coeff = self._log_mean_coeff(t)
        mean = _ops.batch_view(tf.exp(log_mean_coeff), x0) * x0
        std = 1.0 - tf.exp(2.0 * log_mean_coeff)
        return mean, std

    def discretize(self, x, t, dt=None):
        return SDE.discretize(self, x, t, dt)


class VESDE(SDE):
    """Variance-exploding SDE, the continuous limit of NCSN: dx = σ(t)√(2 log(σ_max/σ_min)) dw.

    σ(t) = σ_min (σ_max/σ_min)^t.

    Args:
        sigma_min: σ(0).
        sigma_max: σ(1).
        N: number of discretization steps (NCSN's L).
    """

    def __init__(self, sigma_min=0.01, sigma_max=50.0, N=1000):
        super().__init__(N)
        self.sigma_min = checks.positive(sigma_min, "sigma_min")
        self.sigma_max = checks.positive(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                "Expected sigma_max > sigma_min. "
                f"Received: sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
            )
        self.discrete_sigmas = np.exp(np.linspace(np.log(sigma_min), np.log(sigma_max), N))

    def __repr__(self):
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, N={self.N})"

    def _parameters(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def sigma(self, t):
        """σ(t) = σ_min (σ_max/σ_min)^t."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x, t):
        t = tf.cast(t, x.dtype)
        sigma = self.sigma(t)
        diffusion = sigma * math.sqrt(2 * (math.log(self.sigma_max) - math.log(self.sigma_min)))
        return tf.zeros_like(x), diffusion

    def marginal_prob(self, x0, t):
        return x0, self.sigma(tf.cast(t, x0.dtype))

    def prior_sampling(self, shape, seed=None):
        return _random.normal(shape, seed) * self.sigma_max

    def prior_logp(self, z):
        n = _num_dims(z)
        return (
            -n / 2.0 * math.log(2 * math.pi * self.sigma_max**2)
            - _ops.sum_flat(z**2) / (2 * self.sigma_max**2)
        )

    def discretize(self, x, t, dt=None):
        """SMLD's step between adjacent noise levels: f = 0, G = √(σ(t)² − σ(t−dt)²).

        With dt = 1/(N−1) these are the gaps between score_sde's ``discrete_sigmas`` (at
        its default dt = 1/N, within 0.1 %); the level below t = 0 is σ = 0.
        """
        dt = 1.0 / self.N if dt is None else dt
        t = tf.cast(t, x.dtype)
        sigma = self.sigma(t)
        previous = tf.where(t - dt < 0, tf.zeros_like(sigma), self.sigma(tf.maximum(t - dt, 0.0)))
        return tf.zeros_like(x), tf.sqrt(sigma**2 - previous**2)


def from_config(config):
    """Rebuilds an SDE from ``SDE.get_config()``.

    Args:
        config: a dict with "name" ("VPSDE", "SubVPSDE" or "VESDE") and its arguments.

    Returns:
        An ``SDE``.
    """
    config = dict(config)
    name = config.pop("name", None)
    classes = {cls.__name__: cls for cls in (VPSDE, SubVPSDE, VESDE)}
    if name not in classes:
        raise ValueError(f"Expected an SDE config with name in {list(classes)}. Received: name={name!r}")
    return classes[name](**config)
