"""The interface every diffusion process shares (a discrete schedule, a σ ladder, an SDE),
and processes rebuilt from their configs.

A *process* is what a sampler walks backwards and what a network is conditioned on. Code
above the math (``kdiff.sample``, the diffusion models, the export, the CLI, the
pipeline) asks the process instead of branching on a family name:

============================  ==================  =================  ==================
                              ``Schedule``        ``Sigmas``         ``SDE``
============================  ==================  =================  ==================
``kind`` (sampler argument)   "schedule"          "sigmas"           "sde"
``family``                    "ddpm"              "ncsn"             "sde"
network level                 int32 timestep t    float32 σ          float32 time t
``default_data_range``        (−1, 1)             (0, 1)             (−1, 1)
``prior_sample``              N(0, I)             U(data range)      the SDE's prior
``model_output``              "eps"               "score"            "score"
``default_sampler``           "ddim"              annealed_langevin  predictor_corrector
``num_steps``                 T                   L (levels)         N
``marginal(level)``           (√ᾱ_t, √(1 − ᾱ_t))  (1, σ)             (mean coef., std)
``at_sigma(σ)``               nearest t in log σ  σ itself           t with std/α = σ
============================  ==================  =================  ==================

``marginal``, ``sigma_range`` and ``at_sigma`` are the conversions between a network level,
the state's x = α x₀ + std z and the σ = std/α parametrization: samplers call them instead
of branching on ``kind``.

``kdiff.schedules.Schedule``, ``kdiff.schedules.Sigmas`` and ``kdiff.sde.SDE`` subclass
``Process``; ``from_config`` rebuilds any of them from its config, ``from_model_config``
from a model's or an export's config, and ``as_process`` turns a list of σ's into one. Those
three import ``kdiff.schedules`` and ``kdiff.sde`` when called, because both import this
module for ``Process``.
"""

from __future__ import annotations

import abc
import importlib

import tensorflow as tf

from kdiff import _random

__all__ = ["Process", "as_process", "family_class", "from_config", "from_model_config"]


class Process(abc.ABC):
    """What samplers, models and exports need to know about a diffusion process.

    Class attributes:
        kind: the keyword under which samplers take it ("schedule", "sigmas", "sde") and
            the key of its config in an export's ``config.json``.
        family: the diffusion family it belongs to ("ddpm", "ncsn", "sde").
        level_dtype: the dtype of the network's level input.
        level_description: what that level is, in words (for signatures and errors).
        default_data_range: (low, high) of the data the family trains on by default.
        default_sampler: the registry name of the family's usual sampler.
        model_output: what the family's network predicts ("eps" or "score"; the name of
            an export's ``denoise`` output).
        steps_name: the symbol of ``num_steps`` ("T", "L", "N"), for messages.
        continuous_time: levels are times in (0, T] and samplers stop at ``eps`` > 0.
        noised_prior: ``prior_sample`` is the state at the largest level (x = α x_σmax);
            False for NCSN's uniform start, which σ-space samplers noise to σ_max first.
    """

    kind = None
    family = None
    level_dtype = tf.float32
    level_description = None
    default_data_range = (-1.0, 1.0)
    default_sampler = None
    model_output = "score"
    steps_name = None
    continuous_time = False  # an SDE: its samplers stop at a smallest time ``eps`` > 0
    noised_prior = True  # the prior is the process's own state at its largest level (not NCSN's uniform noise)

    @property
    @abc.abstractmethod
    def num_steps(self):
        """The process's own number of steps (T, the number of σ's, or N)."""

    @property
    def max_steps(self):
        """The most sampling steps the process allows: ``num_steps`` (a schedule's T — a
        sampler visits each timestep at most once —, an SDE's N); None: no limit."""
        return self.num_steps

    @abc.abstractmethod
    def marginal(self, level):
        """α and std of x at ``level`` given x₀ (x = α x₀ + std z).

        Args:
            level: a [n] tensor of network levels (``level_dtype``, or float64 times).

        Returns:
            ``(alpha, std)``: float64 tensors [n].
        """

    @abc.abstractmethod
    def sigma_range(self, eps=None):
        """The process's σ = std/α at its ends.

        Args:
            eps: an SDE's smallest time (its σ_min is σ(eps)); ignored by the others.

        Returns:
            ``(sigma_min, sigma_max)``: Python floats.
        """

    @abc.abstractmethod
    def at_sigma(self, sigmas, eps=None):
        """The network level and α at each σ (σ = 0 allowed: the data, where α = 1).

        Args:
            sigmas: a float64 tensor [n] of σ ≥ 0.
            eps: an SDE's smallest time (the σ's below σ(eps) map to it); ignored by the others.

        Returns:
            ``(level, alpha)``: a tensor of ``level_dtype`` and a float64 tensor, [n] each.
        """

    @abc.abstractmethod
    def get_config(self):
        """A JSON-serializable description; ``kdiff.process.from_config`` rebuilds it."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config):
        """Rebuilds a process of this kind from its ``get_config()``.

        Args:
            config: what ``get_config()`` returned.

        Returns:
            A process of this kind.
        """

    def prior_sample(self, shape, seed, data_range=None):
        """Draws the start of the reverse process.

        Args:
            shape: the output shape, batch first (a list or an int tensor).
            seed: an int or a shape-[2] int tensor (stateless draws).
            data_range: (low, high) of the model's data (used where the prior depends on
                it: NCSN's uniform start); default ``default_data_range``.

        Returns:
            A float32 tensor of ``shape``.
        """
        return tf.random.stateless_normal(shape, _random.seed_pair(seed))

    def level_checks(self, level):
        """Graph assertions that a network level input is valid for this process.

        Args:
            level: a [batch] tensor of ``level_dtype``.

        Returns:
            A list of assertion ops (empty when nothing needs checking).
        """
        return [
            tf.debugging.assert_all_finite(level, message=f"Expected finite `level` ({self.level_description})"),
        ]

    @classmethod
    def check(cls, value, name=None):
        """Returns ``value`` unless it is not an instance of this process class.

        Args:
            value: the received object.
            name: the argument's name (default: the class's ``kind``).

        Returns:
            ``value``.

        Raises:
            ValueError: naming the argument, the expected class and what was received.
        """
        if not isinstance(value, cls):
            name = name or cls.kind or "process"
            raise ValueError(
                f"Expected `{name}` to be a {cls.__module__}.{cls.__name__}. Received: {name}={value!r}"
            )
        return value



# The modules of kdiff's own processes; they import this one, so it names them.
_PROCESS_MODULES = ("kdiff.schedules", "kdiff.sde")


def _classes_by(attribute):
    """The ``Process`` subclasses that define ``attribute`` ("kind" or "family") in their own
    body, by its value: kdiff's ``Schedule``, ``Sigmas`` and ``SDE`` (their modules,
    ``_PROCESS_MODULES``, loaded here by name on first use, as the sampler registry loads its
    samplers) and any a user adds. Found through the class tree, so that this module
    imports none of them (they import it).

    Args:
        attribute: "kind" or "family".

    Returns:
        A dict value → class (in the order the classes were defined: their modules are
        imported on first use, so a message should sort the values).
    """
    for module in _PROCESS_MODULES:
        importlib.import_module(module)
    found, queue = {}, list(Process.__subclasses__())
    while queue:
        cls = queue.pop(0)
        queue.extend(cls.__subclasses__())
        value = cls.__dict__.get(attribute)
        if value is None:
            continue
        if value in found and found[value] is not cls:
            raise TypeError(
                f"Expected one Process class per {attribute}. Received two for {attribute}={value!r}: "
                f"{found[value].__qualname__} and {cls.__qualname__}"
            )
        found[value] = cls
    return found


def family_class(family):
    """The process class of a diffusion family, whose class attributes are the family's
    defaults (data range, default sampler, network level).

    Args:
        family: "ddpm", "ncsn" or "sde".

    Returns:
        ``Schedule``, ``Sigmas`` or ``SDE``.
    """
    classes = _classes_by("family")
    if family not in classes:
        raise ValueError(f"Expected a diffusion family in {sorted(classes)}. Received: family={family!r}")
    return classes[family]


def from_config(kind, config):
    """Rebuilds a process of ``kind`` from its ``get_config()``.

    Args:
        kind: "schedule", "sigmas" or "sde".
        config: the process's config.

    Returns:
        A ``Process``.
    """
    classes = _classes_by("kind")
    if kind not in classes:
        raise ValueError(f"Expected a process kind in {sorted(classes)}. Received: kind={kind!r}")
    return classes[kind].from_config(config)


def from_model_config(config, source="config"):
    """The process described by a model's or an export's config (the one kind key it holds).

    Args:
        config: a dict with one of the keys "schedule", "sigmas", "sde".
        source: what the config is, for the error message.

    Returns:
        A ``Process``.
    """
    known = list(_classes_by("kind"))
    kinds = [kind for kind in known if config.get(kind) is not None]
    if len(kinds) != 1:
        raise ValueError(
            f"Expected exactly one process ({' | '.join(known)}) in the {source}. Received: {kinds or 'none'}"
        )
    return from_config(kinds[0], config[kinds[0]])


def as_process(value, name="process"):
    """``value`` as a ``Process``: a process is returned as it is, a sequence of σ's becomes ``Sigmas``.

    Args:
        value: a ``Schedule``, ``Sigmas``, ``SDE``, or descending noise levels.
        name: the argument's name, for the message.

    Returns:
        A ``Process``.
    """
    if isinstance(value, Process):
        return value
    try:
        return _classes_by("kind")["sigmas"](value)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Expected `{name}` to be a kdiff process (kdiff.schedules.Schedule, kdiff.schedules.Sigmas, "
            f"kdiff.sde.SDE) or descending noise levels. Received: {name}={value!r} ({error})"
        ) from None
