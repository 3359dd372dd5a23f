"""kdiff: diffusion models for Keras 3 / TensorFlow.

The four families of the survey — DDPM, DDIM, NCSN and score-based SDE models — as
schedules and SDEs (``kdiff.schedules``, ``kdiff.sde``), losses (``kdiff.losses``), every
sampler (``kdiff.samplers``, with its registry, recipes, guidance and editing), likelihoods
(``kdiff.likelihood``) and metrics (``kdiff.metrics``), plus ``kdiff.sample`` (one call from
a model to images), ``kdiff.slerp``, ``kdiff.inpaint`` / ``kdiff.img2img``, and
``kdiff.load`` (an export opened once for many ``kdiff.sample`` calls). Every process (a
schedule, a σ ladder, an SDE) implements ``kdiff.process.Process``.

The names below, and every submodule, are imported on first use (``kdiff._lazy``), so that
``import kdiff`` and the commands' ``--help`` do not import TensorFlow. Keras learns kdiff's
classes (to load a saved ``.keras`` model) when their modules are imported: ``kdiff.DDPM``
(or ``import kdiff.diffusion``) for the diffusion models, which bring the networks and
optimizers of ``kdiff.models`` and ``kdiff.optim`` when a model is loaded.
"""

from kdiff import _lazy, _moved

__version__ = "0.1.0"

# The public submodules (any other imports on first use too).
_SUBMODULES = (
    "data",
    "digits",
    "distribute",
    "export",
    "images",
    "likelihood",
    "losses",
    "metrics",
    "models",
    "optim",
    "process",
    "samplers",
    "schedules",
    "sde",
)
# The public functions and classes: name → its module.
_ATTRIBUTES = {
    "DDPM": "kdiff.diffusion",
    "NCSN": "kdiff.diffusion",
    "ScoreSDE": "kdiff.diffusion",
    "from_diffusers": "kdiff.convert.diffusers",
    "from_ncsn_checkpoint": "kdiff.convert.ncsn",
    "img2img": "kdiff.samplers.editing",
    "inpaint": "kdiff.samplers.editing",
    "load": "kdiff.export",
    "sample": "kdiff.sampling",
    "slerp": "kdiff.interpolation",
}

__all__ = sorted(_SUBMODULES + tuple(_ATTRIBUTES)) + ["__version__"]

_moved.install()


def _moved_module(name):
    """``kdiff.registry`` and the other moved modules: their new home, with a warning; else None."""
    return _moved.resolve(f"kdiff.{name}") if f"kdiff.{name}" in _moved.MOVED else None


__getattr__ = _lazy.module_getattr(__name__, _ATTRIBUTES, fallback=_moved_module)
__dir__ = _lazy.module_dir(__name__, __all__)
