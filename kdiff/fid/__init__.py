"""Fréchet Inception Distance with pytorch-fid's network, in Keras.

* :mod:`kdiff.fid.inception` — :func:`FIDInceptionV3`, pytorch-fid's FID InceptionV3
  (2048-d pool3) as a Keras model, and its input preparation (pytorch-fid's or clean-fid's
  resize). A leaf: it imports no other module of kdiff.fid.
* :mod:`kdiff.fid.weights` — finding (torch hub's cache, ``$KDIFF_FID_WEIGHTS``), reading
  (``.pth`` with torch, ``.npz`` without) and loading pytorch-fid's weights;
  ``python -m kdiff.fid.weights convert IN.pth OUT.npz``.
* :mod:`kdiff.fid.extractors` — the feature spaces: :class:`FIDInceptionFeatures` (a
  batched extractor of uint8 images), the classifier, Keras' InceptionV3, the 2015 graph;
  their specs, ``load_extractor`` and ``describe``.
* :mod:`kdiff.fid.cli` — ``python -m kdiff.fid``.

The names below are imported on first use (``kdiff._lazy``), so that ``python -m
kdiff.fid.weights`` runs its module only once and ``python -m kdiff.fid --help`` imports no
TensorFlow.
"""

from kdiff import _lazy

__all__ = [
    "FIDInceptionFeatures",
    "FIDInceptionV3",
    "fetch_weights",
    "load_pytorch_fid_weights",
]

_ATTRIBUTES = {
    "FIDInceptionFeatures": "kdiff.fid.extractors",
    "FIDInceptionV3": "kdiff.fid.inception",
    "fetch_weights": "kdiff.fid.weights",
    "load_pytorch_fid_weights": "kdiff.fid.weights",
}

__getattr__ = _lazy.module_getattr(__name__, _ATTRIBUTES)
__dir__ = _lazy.module_dir(__name__, __all__)
