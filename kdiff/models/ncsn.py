"""Deprecated: the RefineNet's old module; the network is ``kdiff.models.refinenet.RefineNet``.

``from kdiff.models.ncsn import NCSN`` still works for one release, with a
``DeprecationWarning`` that names ``kdiff.models.RefineNet``.
"""

from kdiff import _moved

__all__ = []

__getattr__ = _moved.renamed(__name__, {"NCSN": "kdiff.models.RefineNet"}, " (kdiff.NCSN is the diffusion model)")
