"""Models the pipeline imports instead of training: ``RunConfig.model_source``.

``KIND:TARGET`` names where a model comes from:

- ``diffusers:HUB_ID_OR_FOLDER`` (a folder may be an ``s3://`` URL) — a diffusers ``UNet2DModel`` and its scheduler
  (``kdiff.from_diffusers``): google/ddpm-celebahq-256 (the survey's Table 2),
  google/ncsnpp-celebahq-256 (its 5.4.4);
- ``ncsn:CHECKPOINT`` (a path or an ``s3://`` URL) — an ermongroup/ncsn ``checkpoint.pth`` (torch needed) or its
  ``.npz`` (``kdiff.from_ncsn_checkpoint``): the survey's 5.4.3;
- ``standin:ddpm`` / ``standin:ncsnpp`` / ``standin:ncsn`` — small random-weight models
  of the classes those importers return (``kdiff.DDPM`` with a ``UNet`` and a 1,000-step
  linear schedule; ``kdiff.ScoreSDE`` with an ``NCSNpp``, σ conditioning and a VE SDE;
  ``kdiff.NCSN`` with a centered-input RefineNet and NCSN's 10 σ's), built by code at the
  run's image size: the experiments' ``--scale=small`` runs through the same stages
  with them, downloading nothing. Their samples are noise; they test the code path.

The train stage calls ``import_model`` and writes the model as its Model artifact.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket

from pipeline import config as config_lib
from pipeline import io

STANDINS = ("ddpm", "ncsnpp", "ncsn")
HUB_HOST = "huggingface.co"
# The stand-ins' processes: the imported checkpoints' own (google/ddpm-celebahq-256: 1,000
# linear steps; google/ncsnpp-celebahq-256: σ from 0.01, 2,000 steps; NCSN: σ 1 → 0.01 in 10).
STANDIN_DDPM_T = 1000
STANDIN_VE_N = 2000
STANDIN_NCSN_LEVELS = 10


def parse_model_source(model_source):
    """``"KIND:TARGET"`` → ``(kind, target)``, checked as ``RunConfig`` checks it.

    Args:
        model_source: the config's ``model_source``.

    Returns:
        ``(kind, target)``.

    Raises:
        ValueError: another form, or an unknown stand-in.
    """
    config_lib.check_field("model_source", model_source)
    kind, _, target = model_source.partition(":")
    target = target.strip()
    if kind == "standin" and target not in STANDINS:
        raise ValueError(f"Expected a stand-in in {list(STANDINS)}. Received: model_source={model_source!r}")
    return kind, target


def standin_model(name, image_shape, seed=0):
    """A small random-weight model of the class an importer returns.

    Args:
        name: "ddpm", "ncsnpp" or "ncsn".
        image_shape: (height, width, channels) of the run's images.
        seed: the initial weights' seed.

    Returns:
        A ``kdiff.DDPM``, ``kdiff.ScoreSDE`` or ``kdiff.NCSN``.
    """
    import kdiff
    from kdiff import schedules, sde
    from kdiff.models import NCSNpp, RefineNet, UNet

    from pipeline.builders import seeded_initializers

    size, _, channels = (int(d) for d in image_shape)
    with seeded_initializers(seed):
        if name == "ddpm":
            network = UNet.small(image_size=size, in_channels=channels, num_res_blocks=1)
            return kdiff.DDPM(network, schedules.linear(T=STANDIN_DDPM_T), seed=seed)
        if name == "ncsnpp":
            network = NCSNpp.small(image_size=size, in_channels=channels)
            diameter = math.sqrt(size * size * channels)  # data in [0, 1]: the largest distance
            process = sde.VESDE(sigma_min=0.01, sigma_max=diameter, N=STANDIN_VE_N)
            return kdiff.ScoreSDE(network, process, conditioning="sigma", data_range=(0.0, 1.0), seed=seed)
        if name == "ncsn":
            network = RefineNet.small(image_size=size, in_channels=channels, num_classes=STANDIN_NCSN_LEVELS,
                                 center_input=True)
            sigmas = schedules.geometric_sigmas(1.0, 0.01, STANDIN_NCSN_LEVELS)
            return kdiff.NCSN(network, sigmas, data_range=(0.0, 1.0), seed=seed)
    raise ValueError(f"Expected a stand-in in {list(STANDINS)}. Received: name={name!r}")


def import_model(model_source, image_shape, seed=0):
    """The model ``model_source`` names, and its provenance for the export's ``source``.

    Args:
        model_source: ``KIND:TARGET`` (see the module docstring).
        image_shape: the run's (height, width, channels): a stand-in's size, an NCSN
            checkpoint's image size (not stored in its weights).
        seed: a stand-in's weights' seed (and the imported models' sampling seed).

    Returns:
        ``(model, source)``: a kdiff model and a JSON-able dict (``kind``, ``path``, …).

    Raises:
        ValueError, FileNotFoundError, ImportError: from the importers, naming the file.
    """
    kind, target = parse_model_source(model_source)
    if kind == "standin":
        model = standin_model(target, image_shape, seed)
        return model, {"kind": "standin", "path": target, "model_type": type(model).__name__,
                       "note": "random weights: a stand-in for a pretrained checkpoint"}
    # the importers read local files: a folder or checkpoint in an object store is copied in
    with (io.local_copy(target) if io.is_remote(target) else contextlib.nullcontext(target)) as local:
        if kind == "diffusers":
            from kdiff.convert import diffusers

            model = diffusers.from_diffusers(local, seed=seed)
            source = diffusers.describe_source(local)
        else:
            from kdiff.convert import ncsn

            model = ncsn.from_ncsn_checkpoint(local, image_size=int(image_shape[0]), seed=seed)
            source = ncsn.describe_source(local, model)
    if local != target:  # the provenance names the URL, not the temporary copy
        source = _relocated(source, os.path.abspath(local), target)
    return model, source


def _relocated(source, local, target):
    """``source`` with the paths under the temporary copy ``local`` named under ``target``."""
    return {
        key: target + value[len(local):] if isinstance(value, str) and value.startswith(local) else value
        for key, value in source.items()
    }


def missing(model_source, timeout=3.0):
    """What a run cannot find before it starts: a missing file, or no way to a hub id.

    A local folder or file must exist; a hub id needs ``huggingface_hub`` and either its
    local cache or a connection to the hub (tried with a socket, ``timeout`` seconds).

    Args:
        model_source: ``KIND:TARGET``.
        timeout: seconds to wait for the hub.

    Returns:
        A message naming what is missing, or None.
    """
    kind, target = parse_model_source(model_source)
    if kind == "standin":
        return None
    if kind == "ncsn" or io.is_remote(target) or io.exists(target) or target.startswith((".", "/", "~")):
        if not io.exists(os.path.expanduser(target)):
            return f"--model_source={model_source}: no file or folder {target!r}"
        return None
    try:
        import huggingface_hub
    except ImportError:
        return f"--model_source={model_source}: the hub id needs huggingface_hub (pip install huggingface_hub)"
    try:
        huggingface_hub.snapshot_download(target, allow_patterns=["*.json"], local_files_only=True)
        return None  # in the local cache
    except Exception:  # noqa: BLE001 - not cached: is the hub reachable?
        pass
    if not reachable(HUB_HOST, timeout=timeout):
        return (
            f"--model_source={model_source}: {target!r} is not in huggingface_hub's cache and {HUB_HOST} cannot "
            f"be reached (no internet); download it where there is internet (huggingface-cli download {target}) "
            "and pass the folder as diffusers:PATH"
        )
    return None


def reachable(host, port=443, timeout=3.0):
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
