"""The sampler registry: the one table that ``kdiff.sample``, ``model.generate``, the export,
the ``kdiff`` CLI and the pipeline's sample stage read.

An entry names a sampler function ``fn(model_fn, x_start, process, *, steps, seed,
return_trajectory, compiled, jit_compile, callback, **options)`` (the shape of every function in
``kdiff.samplers``), the process kinds it accepts ("schedule", "sigmas", "sde"), its steps
argument and default, and whether it runs inside a graph with a runtime number of steps
(what an export's ``generate`` signature needs). Its options and their defaults are read
from the function's own signature, so they are written once.

Adding a sampler is one function plus one entry::

    kdiff.samplers.registry.register(kdiff.samplers.registry.Sampler(
        "my_sampler", my_sampler, processes=("schedule",), default_steps=20))

and it is at once a ``kdiff.sample(..., sampler="my_sampler")`` choice, a
``kdiff.export.export(..., sampler="my_sampler")`` choice, a ``kdiff sample --sampler``
choice and a pipeline ``--samplers`` choice. ``registered(entry)`` adds one for the
duration of a ``with`` block (tests). The table is, like Keras' registry of serializable
classes, the one piece of process-wide state in kdiff; with a multi-process Beam runner,
register custom samplers in a module the workers import.

This module imports nothing else of kdiff at import time (built-in functions are named by
their dotted path and imported on first use).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import inspect
from typing import Callable, Optional, Union

__all__ = [
    "Sampler",
    "LOOP_OPTIONS",
    "get",
    "learned_variance_defaults",
    "names",
    "uses_learned_variance",
    "entries",
    "register",
    "unregister",
    "registered",
]

# Keyword arguments every sampler takes from the caller, not from the user's options.
LOOP_OPTIONS = ("seed", "noise_fn", "return_trajectory", "compiled", "jit_compile", "callback", "edit")

ALL_STEPS = "all"  # default_steps: the process's own number of steps (T or N)


@dataclasses.dataclass(frozen=True)
class Sampler:
    """One registry entry.

    Attributes:
        name: the name users pass (``sampler="ddim"``).
        function: the sampler function, or its dotted path "module:attribute".
        processes: the process kinds it accepts ("schedule", "sigmas", "sde").
        steps_arg: the name of its steps argument (None: it takes none).
        default_steps: an int, "all" (the process's ``num_steps``: T or N) or None (the
            function's own default).
        clips_x0: it takes ``clip_x0``; user-facing calls then clip the predicted x₀ to
            the model's data range unless told ``clip_x0=None``.
        learned_variance: it uses a learned variance: a model trained with one (Improved
            DDPM's hybrid loss) gives it [ε, v] and ``variance="learned"`` by default;
            other samplers get ε alone.
        in_graph: True, False, or ``fn(options) -> bool``: whether it runs inside a
            ``tf.function`` with a tensor number of steps (an export's ``generate``).
        edits: True, False, or ``fn(options) -> bool``: whether it takes an ``edit``
            (``kdiff.samplers._loop.StepEdit``: inpainting and img2img, ``kdiff.samplers.editing``) — a
            fixed-step loop that reports the level of its state.
        resamples: True, False, or ``fn(options) -> bool``: whether RePaint's resampling
            (re-noising the state and repeating steps) fits it — its steps carry no
            history (a multistep solver's does) and its levels do not repeat (Langevin's do).
        nfe_per_step: network evaluations a step costs (None: it depends on the options or
            the solver, as for a predictor-corrector, Langevin dynamics per level or an
            adaptive ODE solver).
        nfe_saved: evaluations the run saves in all (Heun's last step is an Euler step: 1).
        description: one line for help texts.
    """

    name: str
    function: Union[Callable, str]
    processes: tuple
    steps_arg: Optional[str] = "steps"
    default_steps: Union[int, str, None] = None
    clips_x0: bool = False
    learned_variance: bool = False
    in_graph: Union[bool, Callable] = True
    edits: Union[bool, Callable] = False
    resamples: Union[bool, Callable] = False
    nfe_per_step: Optional[int] = 1
    nfe_saved: int = 0
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Expected `name` to be a non-empty string. Received: name={self.name!r}")
        kinds = tuple(self.processes)
        unknown = [k for k in kinds if k not in ("schedule", "sigmas", "sde")]
        if not kinds or unknown:
            raise ValueError(
                "Expected `processes` to name one or more of 'schedule', 'sigmas', 'sde'. "
                f"Received: processes={self.processes!r}"
            )
        object.__setattr__(self, "processes", kinds)
        if not (self.default_steps is None or self.default_steps == ALL_STEPS or _is_positive_int(self.default_steps)):
            raise ValueError(
                f"Expected `default_steps` to be an int >= 1, {ALL_STEPS!r} or None. "
                f"Received: default_steps={self.default_steps!r}"
            )

    def nfe(self, steps):
        """The network evaluations of a run of ``steps`` steps (None where they depend on more).

        Args:
            steps: the sampler's steps argument.

        Returns:
            An int, or None.
        """
        if self.nfe_per_step is None:
            return None
        return self.nfe_per_step * int(steps) - self.nfe_saved

    def steps_for_nfe(self, nfe):
        """The most steps whose run costs at most ``nfe`` network evaluations.

        Args:
            nfe: the budget, an int >= 1.

        Returns:
            The steps (>= 1).

        Raises:
            ValueError: a sampler whose cost per step is not fixed, or a budget below one step's.
        """
        if self.nfe_per_step is None:
            raise ValueError(
                f"Expected a sampler with a fixed cost per step for an NFE budget. Received: sampler={self.name!r}, "
                "whose evaluations per step depend on its options (a corrector, Langevin steps, an adaptive solver)"
            )
        steps = (int(nfe) + self.nfe_saved) // self.nfe_per_step
        if steps < 1 or self.nfe(steps) < 1:
            raise ValueError(
                f"Expected an NFE budget of at least {self.nfe(1)} for sampler {self.name!r}. Received: nfe={nfe!r}"
            )
        return steps

    def resolve(self):
        """The sampler function (importing it on first use when given as a dotted path)."""
        if callable(self.function):
            return self.function
        module, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def options(self):
        """The user-settable options and their defaults, from the function's signature.

        Returns:
            A dict name → default (``inspect.Parameter.empty`` for a required option).
        """
        parameters = list(inspect.signature(self.resolve()).parameters.values())[3:]  # after (model_fn, x, process)
        return {
            p.name: p.default
            for p in parameters
            if p.name not in LOOP_OPTIONS and p.name != self.steps_arg
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def takes_callback(self):
        """Whether the function reports its steps: has a ``callback`` argument
        (``callback(i, num_steps)`` after each step, as every ``kdiff.samplers`` function)."""
        return "callback" in inspect.signature(self.resolve()).parameters

    def check_options(self, options, name="sampler options"):
        """Returns ``options`` merged over the defaults, or raises on unknown or missing ones.

        Args:
            options: the options given.
            name: what they are called, for the message.

        Returns:
            A new dict with every option.
        """
        accepted = self.options()
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(accepted) + ([self.steps_arg] if self.steps_arg else []), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"Expected {name} of sampler {self.name!r} among {sorted(accepted)}{hint}. "
                f"Received: unknown option(s) {unknown}"
            )
        merged = {**accepted, **options}
        missing = sorted(k for k, v in merged.items() if v is inspect.Parameter.empty)
        if missing:
            raise ValueError(f"Expected {name} of sampler {self.name!r} to set {missing}. Received: none")
        return merged

    def accepts(self, process):
        """Whether the sampler walks this process (a ``Process`` or its kind)."""
        return getattr(process, "kind", process) in self.processes

    def steps_for(self, process, steps=None):
        """The steps to pass: ``steps``, else the default for ``process`` (None: the function's own)."""
        if steps is not None:
            return steps
        if self.default_steps == ALL_STEPS:
            return process.num_steps
        return self.default_steps

    def runs_in_graph(self, options):
        """Whether, with these (merged) options, the sampler runs in a graph with tensor steps."""
        return _holds(self.in_graph, options)

    def can_edit(self, options, resampling=False):
        """Whether, with these (merged) options, the sampler takes an edit (inpainting,
        img2img), and with ``resampling`` RePaint's resampling too."""
        return _holds(self.edits, options) and (not resampling or _holds(self.resamples, options))


def _holds(flag, options):
    """A capability flag (a bool, or ``fn(options) -> bool``) for these options."""
    return flag(options) if callable(flag) else bool(flag)


def _is_positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _fixed_step_ode(options):
    from kdiff.samplers.reverse_sde import ODE_FIXED_METHODS

    return options.get("method") in ODE_FIXED_METHODS


_EDITS = dict(edits=True, resamples=True)  # stateless fixed steps: inpainting, img2img and RePaint's resampling


_BUILTIN = (
    Sampler("ddpm", "kdiff.samplers:ddpm", ("schedule",), clips_x0=True, learned_variance=True, **_EDITS,
            description="DDPM ancestral sampling (all T steps, or respaced)"),
    Sampler("ddim", "kdiff.samplers:ddim", ("schedule",), default_steps=50, clips_x0=True, **_EDITS,
            description="DDIM (eta = 0: deterministic)"),
    Sampler("annealed_langevin", "kdiff.samplers:annealed_langevin", ("sigmas",), steps_arg="n_steps_each",
            default_steps=100, edits=True, nfe_per_step=None, description="NCSN's annealed Langevin dynamics (steps per noise level)"),
    Sampler("euler_maruyama", "kdiff.samplers:euler_maruyama", ("sde",), default_steps=ALL_STEPS, **_EDITS,
            description="Euler-Maruyama on the reverse SDE"),
    Sampler("predictor_corrector", "kdiff.samplers:predictor_corrector", ("sde",), default_steps=ALL_STEPS,
            nfe_per_step=None, **_EDITS,
            description="predictor-corrector sampling of the reverse SDE"),
    Sampler("probability_flow", "kdiff.samplers:probability_flow", ("sde",), in_graph=_fixed_step_ode, nfe_per_step=None,
            edits=_fixed_step_ode, resamples=_fixed_step_ode, description="the probability-flow ODE (adaptive RK45, or euler / heun / rk4)"),
    Sampler("dpm_solver", "kdiff.samplers:dpm_solver", ("schedule", "sde"), default_steps=20, clips_x0=True,
            edits=True, description="multistep DPM-Solver++ (orders 1-3; diffusers' DPMSolverMultistepScheduler)"),
    Sampler("heun", "kdiff.samplers:heun", ("schedule", "sigmas", "sde"), default_steps=20, clips_x0=True,
            nfe_per_step=2, nfe_saved=1, **_EDITS,
            description="Karras et al.'s Heun sampler on Karras sigmas (2 evaluations a step but the last)"),
    Sampler("euler", "kdiff.samplers:euler", ("schedule", "sigmas", "sde"), default_steps=20, clips_x0=True, **_EDITS,
            description="Euler's method on the probability-flow ODE over Karras sigmas"),
    Sampler("euler_ancestral", "kdiff.samplers:euler_ancestral", ("schedule", "sigmas", "sde"), default_steps=20,
            clips_x0=True, **_EDITS, description="ancestral Euler sampling over Karras sigmas (k-diffusion's, eta = 1)"),
)


class _Registry:
    """Name → ``Sampler``, in registration order."""

    def __init__(self, entries):
        self._entries = {entry.name: entry for entry in entries}

    def get(self, name):
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"Expected `sampler` to be one of {list(self._entries)}{hint}. Received: sampler={name!r}")
        return self._entries[name]

    def names(self, kind=None):
        return [n for n, e in self._entries.items() if kind is None or e.accepts(kind)]

    def add(self, entry, overwrite):
        if not isinstance(entry, Sampler):
            raise ValueError(f"Expected a kdiff.samplers.registry.Sampler. Received: {entry!r}")
        if entry.name in self._entries and not overwrite:
            raise ValueError(
                f"Expected a new sampler name. Received: name={entry.name!r} is registered (pass overwrite=True)"
            )
        previous = self._entries.get(entry.name)
        self._entries[entry.name] = entry
        return previous

    def remove(self, name):
        return self._entries.pop(name, None)


_SAMPLERS = _Registry(_BUILTIN)


def get(name):
    """The entry registered as ``name``; ValueError naming the registered ones otherwise."""
    return _SAMPLERS.get(name)


def uses_learned_variance(name):
    """Whether the sampler ``name`` takes a learned variance ([ε, v]); False for None."""
    return name is not None and _SAMPLERS.get(name).learned_variance


def learned_variance_defaults():
    """``SamplingSpec.sampler_defaults`` of a model with a learned variance: ``variance="learned"``
    for every sampler that uses one."""
    return {entry.name: {"variance": "learned"} for entry in entries() if entry.learned_variance}


def names(kind=None):
    """The registered sampler names, all or those accepting a process kind ("schedule", …)."""
    return _SAMPLERS.names(getattr(kind, "kind", kind))


def entries(kind=None):
    """The registered ``Sampler`` entries, all or those accepting a process kind."""
    return [_SAMPLERS.get(n) for n in names(kind)]


def register(entry, overwrite=False):
    """Adds a sampler to the registry.

    Args:
        entry: a ``Sampler``.
        overwrite: replace an entry of the same name.

    Returns:
        ``entry``.
    """
    _SAMPLERS.add(entry, overwrite)
    return entry


def unregister(name):
    """Removes the sampler ``name`` (no error when it is not registered)."""
    _SAMPLERS.remove(name)


@contextlib.contextmanager
def registered(entry, overwrite=False):
    """Registers ``entry`` for the duration of a ``with`` block, then restores the table."""
    previous = _SAMPLERS.add(entry, overwrite)
    try:
        yield entry
    finally:
        _SAMPLERS.remove(entry.name)
        if previous is not None:
            _SAMPLERS.add(previous, overwrite=True)
