"""kdiff: diffusion models for Keras 3 / TensorFlow.

The four families of the survey — DDPM, DDIM, NCSN and score-based SDE models — as
schedules and SDEs (``kdiff.schedules``, ``kdiff.sde``), losses (``kdiff.losses``), every
sampler (``kdiff.samplers``, with its registry, recipes, guidance and editing), likelihoods
(``kdiff.likelihood``) and metrics (``kdiff.metrics``), plus ``kdiff.sample`` (one call from
a model to images), ``kdiff.slerp``, ``kdiff.inpaint`` / ``kdiff.img2img``, and
``kdiff.load`` (an export opened once for many ``kdiff.sample`` calls). Every process (a
schedule, a σ ladder, an SDE) implements ``kdiff.process.Process``.
"""

from kdiff import _moved
from kdiff import (
    data,
    digits,
    distribute,
    export,
    images,
    likelihood,
    losses,
    metrics,
    models,
    optim,
    process,
    samplers,
    schedules,
    sde,
)
from kdiff.diffusion import DDPM, NCSN, ScoreSDE
from kdiff.samplers.editing import img2img, inpaint
from kdiff.convert.diffusers import from_diffusers
from kdiff.convert.ncsn import from_ncsn_checkpoint
from kdiff.export import load
from kdiff.interpolation import slerp
from kdiff.sampling import sample

__version__ = "0.1.0"

_moved.install()


def __getattr__(name):
    """``kdiff.registry`` and the other moved modules: their new home, with a warning."""
    if f"kdiff.{name}" in _moved.MOVED:
        return _moved.resolve(f"kdiff.{name}")
    raise AttributeError(f"module 'kdiff' has no attribute {name!r}")


__all__ = [
    "DDPM",
    "NCSN",
    "ScoreSDE",
    "data",
    "digits",
    "distribute",
    "export",
    "from_diffusers",
    "from_ncsn_checkpoint",
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
    "samplers",
    "schedules",
    "sde",
    "sample",
    "slerp",
    "__version__",
]
