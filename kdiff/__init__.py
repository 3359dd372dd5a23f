"""kdiff: diffusion models for Keras 3 / TensorFlow.

The four families of the survey — DDPM, DDIM, NCSN and score-based SDE models — as
schedules and SDEs (``kdiff.schedules``, ``kdiff.sde``), losses (``kdiff.losses``),
samplers (``kdiff.samplers``), likelihoods (``kdiff.likelihood``) and metrics
(``kdiff.metrics``), plus ``kdiff.sample`` (one call from a model to images) and
``kdiff.slerp``.
"""

from kdiff import digits, distribute, export, images, likelihood, losses, metrics, models, optim, samplers, schedules, sde
from kdiff.diffusion import DDPM, NCSN, ScoreSDE
from kdiff.interpolation import slerp
from kdiff.sampling import sample

__version__ = "0.1.0"

__all__ = [
    "DDPM",
    "NCSN",
    "ScoreSDE",
    "digits",
    "distribute",
    "export",
    "images",
    "optim",
    "likelihood",
    "losses",
    "metrics",
    "models",
    "samplers",
    "schedules",
    "sde",
    "sample",
    "slerp",
    "__version__",
]
