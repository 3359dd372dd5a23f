"""Sampling recipes by name: a sampler of ``kdiff.samplers.registry`` with the options of a reference run.

A recipe fixes what a paper or a reference pipeline samples with, so that one name
reproduces it::

    kdiff.sample(model, 16, recipe="ddim_50")
    kdiff sample --model export/ --recipe score_sde_ve_pc --out grid.png

The recipe supplies the sampler, its steps and its options; arguments given explicitly
(``steps=``, sampler options, ``--steps``, ``--option``) override them. The recipes:

``ddpm_1000``, ``ddpm_50``
    diffusers' ``DDPMPipeline`` (the survey's Table 2, google/ddpm-celebahq-256): ancestral
    sampling with σ² = β̃_t (``fixed_small``), x̂₀ clipped to the data range
    (``clip_sample``), over all 1,000 timesteps or respaced to 50 at i·(T // 50) (the
    scheduler's ``leading`` spacing: 980, 960, …, 0).
``ddim_50``, ``ddim_1000``
    diffusers' ``DDIMPipeline`` (the survey's Table 2): η = 0 over 50 or 1,000 timesteps
    i·(T // steps), x̂₀ clipped, the network's ε kept (``use_clipped_model_output`` unset).
``score_sde_ve_pc``
    diffusers' ``ScoreSdeVePipeline`` for NCSN++ (google/ncsnpp-celebahq-256; the survey's
    5.4.4): 2,000 iterations of one Langevin corrector step (snr 0.075) then one
    reverse-diffusion predictor step on score_sde's discrete grid (times
    linspace(1, 1e-5, 2000)), from N(0, σ_max²) (the VE SDE's prior), returning the last
    predictor step's mean.
``ncsn_annealed_langevin``
    NCSN's annealed Langevin dynamics (ermongroup/ncsn; the survey's 5.2.3): 100 steps per
    noise level, ε = 2e-5, from uniform noise over the data range (the σ process's prior),
    without a final denoising step.

This module imports nothing else of kdiff at import time.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from typing import Optional

__all__ = ["Recipe", "check_fits", "default_for", "get", "names", "recipes", "resolve"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One named sampling recipe.

    Attributes:
        name: the name users pass (``recipe="ddim_50"``).
        sampler: a sampler name of ``kdiff.samplers.registry``.
        steps: the sampler's steps argument (DDIM steps, Langevin steps per level,
            predictor steps).
        options: the sampler's options (a read-only mapping).
        description: one line for help texts.
        reference: where the recipe comes from.
    """

    name: str
    sampler: str
    steps: int
    options: types.MappingProxyType
    description: str = ""
    reference: str = ""

    def __post_init__(self):
        object.__setattr__(self, "options", types.MappingProxyType(dict(self.options)))


def _table():
    """The recipes, built on each call (no module-level mutable state)."""
    ddpm = {"variance": "beta_tilde", "spacing": "leading"}
    ddim = {"eta": 0.0, "clipped_eps": False}
    pc = {
        "predictor": "reverse_diffusion",
        "corrector": "langevin",
        "n_corrector": 1,
        "snr": 0.075,
        "eps": 1e-5,
        "denoise": True,
        "grid": "discrete",
    }
    langevin = {"step_lr": 2e-5, "denoise": False}
    table = (
        Recipe("ddpm_1000", "ddpm", 1000, ddpm, "DDPM, all 1,000 timesteps", "survey Table 2"),
        Recipe("ddpm_50", "ddpm", 50, ddpm, "DDPM respaced to 50 timesteps", "survey Table 2"),
        Recipe("ddim_50", "ddim", 50, ddim, "DDIM, 50 steps, eta 0", "survey Table 2"),
        Recipe("ddim_1000", "ddim", 1000, ddim, "DDIM, 1,000 steps, eta 0", "survey Table 2"),
        Recipe("score_sde_ve_pc", "predictor_corrector", 2000, pc,
               "2,000 Langevin-corrector + reverse-diffusion iterations (snr 0.075)",
               "diffusers ScoreSdeVePipeline; survey 5.4.4"),
        Recipe("ncsn_annealed_langevin", "annealed_langevin", 100, langevin,
               "annealed Langevin, 100 steps per level, eps 2e-5, uniform start",
               "ermongroup/ncsn; survey 5.2.3"),
    )
    return {recipe.name: recipe for recipe in table}


def recipes():
    """Every recipe, name → ``Recipe`` (a new dict on each call)."""
    return _table()


def names(kind=None):
    """The recipe names, all or those whose sampler walks a process kind.

    Args:
        kind: None, a process kind ("schedule", "sigmas", "sde") or a process.

    Returns:
        A list of names.
    """
    from kdiff.samplers import registry

    kind = getattr(kind, "kind", kind)
    return [n for n, r in _table().items() if kind is None or registry.get(r.sampler).accepts(kind)]


def check_fits(recipe, process):
    """Raises unless the recipe's sampler walks ``process``.

    Args:
        recipe: a recipe name.
        process: a ``kdiff.process.Process``.

    Raises:
        ValueError: naming the recipes that fit.
    """
    from kdiff.samplers import registry

    entry = get(recipe)
    if not registry.get(entry.sampler).accepts(process):
        raise ValueError(
            f"Expected a recipe for a {process.kind} ({type(process).__name__}) process: one of "
            f"{names(process.kind)}. Received: recipe={recipe!r} (sampler {entry.sampler!r})"
        )


def get(name):
    """The recipe called ``name``.

    Args:
        name: a recipe name (``names()``).

    Returns:
        A ``Recipe``.

    Raises:
        ValueError: naming the known recipes.
    """
    table = _table()
    if name not in table:
        close = difflib.get_close_matches(str(name), list(table), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"Expected `recipe` to be one of {list(table)}{hint}. Received: recipe={name!r}")
    return table[name]


def resolve(recipe, sampler=None, steps=None, options=None):
    """A recipe's sampler, steps and options, with the explicitly given ones overriding it.

    Args:
        recipe: a recipe name, or None (nothing is changed).
        sampler: an explicitly named sampler: None or the recipe's own (another one is an
            error: the recipe's options belong to its sampler).
        steps: explicit steps (None: the recipe's).
        options: explicit sampler options, applied over the recipe's.

    Returns:
        ``(sampler, steps, options)``.

    Raises:
        ValueError: an unknown recipe, or a sampler other than the recipe's.
    """
    options = dict(options or {})
    if recipe is None:
        return sampler, steps, options
    entry = get(recipe)
    if sampler is not None and sampler != entry.sampler:
        raise ValueError(
            f"Expected no `sampler`, or the recipe's ({entry.sampler!r}), with recipe={recipe!r}. "
            f"Received: sampler={sampler!r}"
        )
    return entry.sampler, entry.steps if steps is None else steps, {**entry.options, **options}


def default_for(kind) -> Optional[str]:
    """The recipe ``kdiff convert`` gives a model's ``generate`` by default.

    Args:
        kind: a process kind ("schedule", "sigmas", "sde").

    Returns:
        "ddim_50", "ncsn_annealed_langevin" or "score_sde_ve_pc"; None for another kind.
    """
    return {"schedule": "ddim_50", "sigmas": "ncsn_annealed_langevin", "sde": "score_sde_ve_pc"}.get(kind)
