"""kdiff: diffusion models for Keras 3 / TensorFlow.

The four families of the survey — DDPM, DDIM, NCSN and score-based SDE models — as
schedules and SDEs (``kdiff.schedules``, ``kdiff.sde``), losses (``kdiff.losses``),
samplers (``kdiff.samplers``; DPM-Solver++ and Karras et al.'s in ``kdiff.solvers``), likelihoods (``kdiff.likelihood``) and metrics
(``kdiff.metrics``), plus ``kdiff.sample`` (one call from a model to images) and
``kdiff.slerp``; ``kdiff.guidance`` is classifier-free guidance; ``kdiff.recipes`` names reference sampling runs; ``kdiff.load`` opens an export once for many ``kdiff.sample`` calls. Every sampler is an entry of ``kdiff.registry``; every process (a
schedule, a σ ladder, an SDE) implements ``kdiff.process.Process``.
"""

from kdiff import (
    data,
    digits,
    distribute,
    draw,
    editing,
    export,
    guidance,
    images,
    likelihood,
    losses,
    metrics,
    models,
    optim,
    process,
    processes,
    recipes,
    registry,
    samplers,
    schedules,
    sde,
    solvers,
)
from kdiff.diffusion import DDPM, NCSN, ScoreSDE
from kdiff.editing import img2img, inpaint
from kdiff.convert.diffusers import from_diffusers
from kdiff.convert.ncsn import from_ncsn_checkpoint
from kdiff.export import load
from kdiff.interpolation import slerp
from kdiff.sampling import sample

__version__ = "0.1.0"

__all__ = [
    "DDPM",
    "NCSN",
    "ScoreSDE",
    "data",
    "digits",
    "distribute",
    "draw",
    "editing",
    "export",
    "from_diffusers",
    "from_ncsn_checkpoint",
    "guidance",
    "images",
    "img2img",
    "inpaint",
    "load",
    "optim",
    "likelihood",
    "losses",
    "metrics",
    "models",
    "process",
    "processes",
    "recipes",
    "registry",
    "samplers",
    "schedules",
    "sde",
    "solvers",
    "sample",
    "slerp",
    "__version__",
]
