"""Discrete noise schedules and the forward process of DDPM / DDIM, and NCSN's σ ladder.

A schedule is written once here and handed to every loss and sampler (no sampler
keeps its own copy of the β's). Timesteps are 0-based integers t ∈ {0, …, T−1}, as in
diffusers: ``alphas_cumprod[t]`` is ᾱ after t+1 noising steps.

Equation numbers refer to the survey of Cerizza, Savazzi and Barbera, "Diffusion Models"
(Università di Milano-Bicocca, 2023) (DDPM: eqs. 5–10, cosine schedule: eq. 18).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from kdiff import checks, _ops, _random, grids
from kdiff.process import Process

__all__ = [
    "Schedule",
    "Sigmas",
    "linear",
    "cosine",
    "from_config",
    "geometric_sigmas",
    "karras_sigmas",
    "sigmas_from_config",
    "spaced_timesteps",
]


class Schedule(Process):
    """A discrete variance schedule β_0 … β_{T−1} and the Gaussian process it defines.

    Args:
        betas: 1-D array of T values in (0, 1].
        config: the constructor call that made it (``{"name": "linear", ...}``); set by
            ``linear`` / ``cosine`` so that ``get_config`` stays short.

    Attributes:
        T: number of diffusion steps.
        betas, alphas, alphas_cumprod, alphas_cumprod_prev: float64 arrays of length T
            (``alphas_cumprod_prev[0] = 1``).
        posterior_variance: β̃_t of eq. 10 (0 at t = 0).
        posterior_log_variance_clipped: log β̃_t with the t = 0 entry replaced by
            log β̃_1, as in the DDPM and Improved DDPM reference code.
        posterior_mean_coef1, posterior_mean_coef2: the x_0 and x_t coefficients of
            μ̃_t in eq. 9.
    """

    kind = "schedule"
    family = "ddpm"
    level_dtype = tf.int32
    level_description = "integer timestep t in [0, T)"
    default_sampler = "ddim"
    model_output = "eps"
    steps_name = "T"

    def __init__(self, betas, config=None):
        self._config = dict(config) if config is not None else None
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 1:
            raise ValueError(
                f"Expected `betas` to be a non-empty 1-D array. Received: shape={betas.shape}"
            )
        if not np.all(np.isfinite(betas)) or np.any(betas <= 0) or np.any(betas > 1):
            raise ValueError(
                "Expected every beta in (0, 1]. Received: "
                f"min={betas.min()!r}, max={betas.max()!r}"
            )
        self.betas = betas
        self.T = int(betas.size)
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.posterior_variance = (
            betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        floor = self.posterior_variance[1] if self.T > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(
            np.append(floor, self.posterior_variance[1:])
        )
        self.posterior_mean_coef1 = (
            betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)
        )

    def __repr__(self):
        return (
            f"Schedule(T={self.T}, beta_0={self.betas[0]:.3g}, "
            f"beta_T-1={self.betas[-1]:.3g}, alpha_bar_T-1={self.alphas_cumprod[-1]:.3g})"
        )

    @property
    def num_steps(self):
        """T."""
        return self.T

    def marginal(self, level):
        """(√ᾱ_t, √(1 − ᾱ_t)) at timesteps ``level`` (float64 tensors)."""
        abar = tf.gather(tf.constant(self.alphas_cumprod, tf.float64), level)
        return tf.sqrt(abar), tf.sqrt(1.0 - abar)

    def _log_sigmas(self):
        """log σ_t = log √((1 − ᾱ_t)/ᾱ_t), ascending in t (numpy float64)."""
        abar = self.alphas_cumprod
        return np.log(np.sqrt((1.0 - abar) / abar))

    def sigma_range(self, eps=None):
        """(σ_0, σ_{T−1}) with σ_t = √((1 − ᾱ_t)/ᾱ_t)."""
        log_sigmas = self._log_sigmas()
        return float(np.exp(log_sigmas[0])), float(np.exp(log_sigmas[-1]))

    def at_sigma(self, sigmas, eps=None):
        """The timestep nearest each σ in log σ (k-diffusion's ``DiscreteEpsDDPMDenoiser`` with
        ``quantize=True``) and α = 1/√(1 + σ²) of σ itself."""
        positive = tf.where(sigmas > 0, sigmas, tf.constant(self.sigma_range()[0], tf.float64))
        distance = tf.abs(tf.math.log(positive)[:, None] - tf.constant(self._log_sigmas())[None, :])
        return tf.cast(tf.argmin(distance, axis=1), tf.int32), 1.0 / tf.sqrt(1.0 + sigmas**2)

    def level_checks(self, level):
        """Graph assertions that ``level`` holds timesteps in [0, T)."""
        message = f"Expected `level` (timesteps t) in [0, {self.T - 1}]. Received:"
        return [
            tf.debugging.assert_greater_equal(level, 0, message=f"{message} a negative t"),
            tf.debugging.assert_less(level, self.T, message=f"{message} t >= {self.T}"),
        ]

    @classmethod
    def from_config(cls, config):
        """Rebuilds a schedule from ``get_config()`` (``kdiff.schedules.from_config``)."""
        return from_config(config)

    def get_config(self):
        """A JSON-serializable description; ``schedules.from_config`` rebuilds the schedule."""
        if self._config is not None:
            return dict(self._config)
        return {"name": "custom", "betas": self.betas.tolist()}

    def check_timesteps(self, t, name="t"):
        """Raises ValueError when a concrete ``t`` holds values outside [0, T)."""
        if tf.executing_eagerly() or isinstance(t, (int, np.ndarray, list)):
            values = np.asarray(t)
            if values.size and (values.min() < 0 or values.max() >= self.T):
                raise ValueError(
                    f"Expected `{name}` in [0, {self.T - 1}]. "
                    f"Received: min={values.min()}, max={values.max()}"
                )

    def q_sample(self, x0, t, noise):
        """Draws x_t ~ q(x_t | x_0) by eq. 6: √ᾱ_t x_0 + √(1−ᾱ_t) ε.

        Args:
            x0: clean data, shape [batch, ...].
            t: int tensor of shape [batch], values in [0, T).
            noise: standard normal noise shaped like ``x0``.

        Returns:
            x_t, shaped like ``x0``.
        """
        x0 = checks.float_tensor(x0, "x0")
        noise = tf.cast(noise, x0.dtype)
        checks.same_shape(noise, x0, "noise", "x0")
        self.check_timesteps(t)
        return (
            _ops.gather_per_example(np.sqrt(self.alphas_cumprod), t, x0) * x0
            + _ops.gather_per_example(np.sqrt(1.0 - self.alphas_cumprod), t, x0) * noise
        )

    def q_mean_variance(self, x0, t):
        """Returns the mean, variance and log-variance of q(x_t | x_0) (eq. 5)."""
        x0 = checks.float_tensor(x0, "x0")
        mean = _ops.gather_per_example(np.sqrt(self.alphas_cumprod), t, x0) * x0
        variance = _ops.gather_per_example(1.0 - self.alphas_cumprod, t, x0)
        log_variance = _ops.gather_per_example(np.log(1.0 - self.alphas_cumprod), t, x0)
        return mean, variance, log_variance

    def q_posterior(self, x0, x_t, t):
        """The forward-process posterior q(x_{t−1} | x_t, x_0) of eqs. 8–10.

        Args:
            x0: clean data, shape [batch, ...].
            x_t: noisy data at step t, same shape.
            t: int tensor of shape [batch].

        Returns:
            ``(mean, variance, log_variance_clipped)``; the variance terms have shape
            [batch, 1, …, 1].
        """
        x0 = checks.float_tensor(x0, "x0")
        x_t = tf.cast(x_t, x0.dtype)
        checks.same_shape(x_t, x0, "x_t", "x0")
        self.check_timesteps(t)
        mean = (
            _ops.gather_per_example(self.posterior_mean_coef1, t, x0) * x0
            + _ops.gather_per_example(self.posterior_mean_coef2, t, x0) * x_t
        )
        return (
            mean,
            _ops.gather_per_example(self.posterior_variance, t, x0),
            _ops.gather_per_example(self.posterior_log_variance_clipped, t, x0),
        )

    def predict_x0(self, x_t, t, eps):
        """Inverts eq. 6: x̂_0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t (eq. 29)."""
        return (
            _ops.gather_per_example(np.sqrt(1.0 / self.alphas_cumprod), t, x_t) * x_t
            - _ops.gather_per_example(np.sqrt(1.0 / self.alphas_cumprod - 1.0), t, x_t) * eps
        )

    def respace(self, timesteps):
        """A schedule over a subset of timesteps with the same ᾱ's (Improved DDPM §4).

        Args:
            timesteps: increasing integers in [0, T).

        Returns:
            A new ``Schedule`` with β'_i = 1 − ᾱ_{t_i} / ᾱ_{t_{i−1}}.
        """
        timesteps = np.asarray(timesteps)
        if timesteps.ndim != 1 or np.any(np.diff(timesteps) <= 0):
            raise ValueError(
                f"Expected strictly increasing 1-D `timesteps`. Received: {timesteps!r}"
            )
        self.check_timesteps(timesteps, "timesteps")
        abar = self.alphas_cumprod[timesteps]
        return Schedule(1.0 - abar / np.append(1.0, abar[:-1]))


def linear(T=1000, beta_start=1e-4, beta_end=0.02):
    """Ho et al.'s linear schedule: β evenly spaced from ``beta_start`` to ``beta_end``.

    Args:
        T: number of steps.
        beta_start: β_0.
        beta_end: β_{T−1}.

    Returns:
        A ``Schedule``.
    """
    T = checks.positive_int(T, "T")
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not 0 < value <= 1:
            raise ValueError(f"Expected `{name}` in (0, 1]. Received: {name}={value!r}")
    config = {"name": "linear", "T": T, "beta_start": float(beta_start), "beta_end": float(beta_end)}
    return Schedule(np.linspace(beta_start, beta_end, T, dtype=np.float64), config)


def cosine(T=1000, s=0.008, max_beta=0.999):
    """Improved DDPM's cosine schedule (eq. 18): ᾱ_t = f(t)/f(0), f(t) = cos²((t/T+s)/(1+s)·π/2).

    Following the reference code, β_t = 1 − ᾱ_{t+1}/ᾱ_t (with our 0-based t, ᾱ of
    timestep t is f(t+1)/f(0)) and is clipped to ``max_beta`` to avoid the singularity
    at the end.

    Args:
        T: number of steps.
        s: small offset that keeps β_0 from being too small.
        max_beta: upper clip of β.

    Returns:
        A ``Schedule``.
    """
    T = checks.positive_int(T, "T")
    if s < 0:
        raise ValueError(f"Expected `s` >= 0. Received: s={s!r}")
    if not 0 < max_beta <= 1:
        raise ValueError(f"Expected `max_beta` in (0, 1]. Received: max_beta={max_beta!r}")

    def f(step):
        return math.cos((step / T + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1.0 - f(i + 1) / f(i), max_beta) for i in range(T)]
    config = {"name": "cosine", "T": T, "s": float(s), "max_beta": float(max_beta)}
    return Schedule(np.array(betas, dtype=np.float64), config)


class Sigmas(Process):
    """NCSN's noise levels σ_1 > … > σ_L as a process (Song & Ermon 2019).

    Behaves as the float64 array of its levels (``np.asarray``, ``len``, indexing,
    iteration), so code written for a bare array keeps working.

    Args:
        sigmas: descending positive noise levels.
        config: the constructor call that made it (``{"name": "geometric", ...}``).

    Attributes:
        sigmas: the float64 array of levels.
    """

    kind = "sigmas"
    family = "ncsn"
    level_description = "noise level sigma > 0 (the nearest of the model's sigmas is used)"
    default_data_range = (0.0, 1.0)
    default_sampler = "annealed_langevin"
    noised_prior = False
    steps_name = "L"

    def __init__(self, sigmas, config=None):
        if isinstance(sigmas, Sigmas):
            config = sigmas._config if config is None else config
        self.sigmas = checks.descending_sigmas(sigmas)
        self.sigmas.setflags(write=False)
        self._config = dict(config) if config is not None else None

    def __repr__(self):
        return f"Sigmas(L={len(self)}, sigma_max={self.sigmas[0]:.4g}, sigma_min={self.sigmas[-1]:.4g})"

    def __array__(self, dtype=None, copy=None):
        return self.sigmas if dtype is None else self.sigmas.astype(dtype)

    def __len__(self):
        return len(self.sigmas)

    def __getitem__(self, index):
        return self.sigmas[index]

    def __iter__(self):
        return iter(self.sigmas)

    @property
    def num_steps(self):
        """L, the number of levels."""
        return len(self.sigmas)

    @property
    def max_steps(self):
        """None: annealed Langevin takes any number of steps per level."""
        return None

    def marginal(self, level):
        """(1, σ): x = x₀ + σ z at level σ (float64 tensors)."""
        level = tf.cast(level, tf.float64)
        return tf.ones_like(level), level

    def sigma_range(self, eps=None):
        """(σ_L, σ_1)."""
        return float(self.sigmas[-1]), float(self.sigmas[0])

    def at_sigma(self, sigmas, eps=None):
        """σ itself as the level (σ = 0 becomes σ_L), α = 1."""
        positive = tf.where(sigmas > 0, sigmas, tf.constant(self.sigma_range()[0], tf.float64))
        return tf.cast(positive, tf.float32), tf.ones_like(sigmas)

    @classmethod
    def from_config(cls, config):
        """Rebuilds a ``Sigmas`` from ``get_config()`` (``kdiff.schedules.sigmas_from_config``)."""
        return sigmas_from_config(config)

    def get_config(self):
        """A JSON-serializable description; ``sigmas_from_config`` rebuilds it."""
        if self._config is not None:
            return dict(self._config)
        return {"name": "custom", "sigmas": self.sigmas.tolist()}

    def prior_sample(self, shape, seed, data_range=None):
        """NCSN's start: uniform noise over the data range."""
        low, high = self.default_data_range if data_range is None else data_range
        return tf.random.stateless_uniform(shape, _random.seed_pair(seed), low, high)

    def level_checks(self, level):
        """Graph assertions that ``level`` holds finite σ's > 0."""
        return [
            tf.debugging.assert_all_finite(level, message="Expected finite noise levels `level` (sigma)"),
            tf.debugging.assert_positive(level, message="Expected noise levels `level` (sigma) > 0"),
        ]


def sigmas_from_config(config):
    """Rebuilds a ``Sigmas`` from its config, or from a bare list of levels (older exports).

    Args:
        config: ``Sigmas.get_config()``, or a list of descending σ's.

    Returns:
        A ``Sigmas``.
    """
    if not isinstance(config, dict):
        return Sigmas(config)
    config = dict(config)
    name = config.pop("name", None)
    if name == "geometric":
        return Sigmas(geometric_sigmas(**config), {"name": name, **config})
    if name == "custom":
        return Sigmas(config["sigmas"])
    raise ValueError(f"Expected a sigmas config with name in ['geometric', 'custom']. Received: name={name!r}")


def from_config(config):
    """Rebuilds a schedule from ``Schedule.get_config()``.

    Args:
        config: a dict with "name" ("linear", "cosine" or "custom") and its arguments.

    Returns:
        A ``Schedule``.
    """
    config = dict(config)
    name = config.pop("name", None)
    builders = {"linear": linear, "cosine": cosine, "custom": lambda betas: Schedule(betas)}
    if name not in builders:
        raise ValueError(
            f"Expected a schedule config with name in {list(builders)}. Received: name={name!r}"
        )
    return builders[name](**config)


# The grids' names before kdiff.grids (the same functions).
spaced_timesteps = grids.spaced
geometric_sigmas = grids.geometric
karras_sigmas = grids.karras
