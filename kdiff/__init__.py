"""kdiff: diffusion models for Keras 3 / TensorFlow.

The four families of the survey — DDPM, DDIM, NCSN and score-based SDE models — as
schedules and SDEs (``kdiff.schedules``, ``kdiff.sde``), losses (``kdiff.losses``), every
sampler (``kdiff.samplers``, with its registry, recipes, guidance and editing), likelihoods
(``kdiff.likelihood``) and metrics (``kdiff.metrics``), plus ``kdiff.sample`` (one call from
a model to images), ``kdiff.slerp``, ``kdiff.inpaint`` / ``kdiff.img2img``, and
``kdiff.load`` (an export opened once for many ``kdiff.sample`` calls). Every process (a
schedule, a σ ladder, an SDE) implements ``kdiff.process.Process``.

The public names, listed in ``__init__.pyi``, and every submodule are imported on first use
(``kdiff._lazy``), so that ``import kdiff`` and the commands' ``--help`` do not import
TensorFlow. Keras learns kdiff's classes (to load a saved ``.keras`` model) when their
modules are imported: ``kdiff.DDPM`` (or ``import kdiff.diffusion``) for the diffusion
models, which bring the networks and optimizers of ``kdiff.models`` and ``kdiff.optim``
when a model is loaded.
"""

from kdiff import _lazy, _moved

__version__ = "0.1.0"

_moved.install()


def _moved_module(name):
    """``kdiff.registry`` and the other moved modules: their new home, with a warning; else None."""
    return _moved.resolve(f"kdiff.{name}") if f"kdiff.{name}" in _moved.MOVED else None


# The public names, in __init__.pyi.
__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__, fallback=_moved_module)
