"""pytorch-fid's Inception weights: finding the file, reading it, loading it into Keras.

pytorch-fid publishes its FID Inception weights (the 2015-12-05 TensorFlow Inception
graph ported to PyTorch) as ``pt_inception-2015-12-05-6726825d.pth``, the state dict of
torchvision's ``Inception3(num_classes=1008, aux_logits=False)`` with pytorch-fid's FID
blocks. :func:`fetch_weights` finds it where torch hub caches it
(``$TORCH_HOME/hub/checkpoints/``, by default ``~/.cache/torch/hub/checkpoints/``) — so a
file pytorch-fid has already downloaded is reused — or at ``$KDIFF_FID_WEIGHTS``, and
downloads it otherwise. :func:`load_pytorch_fid_weights` loads it (or an ``.npz`` of the
same state dict, or a dict of arrays) into :func:`kdiff.fid.inception.FIDInceptionV3`,
checking every key and shape first.

Reading the ``.pth`` file needs torch. Without torch, convert it once on a machine that
has torch::

    python -m kdiff.fid.weights convert pt_inception-2015-12-05-6726825d.pth fid_inception.npz

and pass the ``.npz`` (or point ``$KDIFF_FID_WEIGHTS`` at it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import urllib.request

import numpy as np

from kdiff.convert import _files
from kdiff.fid.inception import FIDInceptionV3

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_URL",
    "WEIGHTS_ENV",
    "convert_state_dict",
    "default_weights_path",
    "expected_state_dict_shapes",
    "fetch_weights",
    "load_pytorch_fid_weights",
    "read_state_dict",
    "torch_hub_checkpoint_dir",
]

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_ENV = "KDIFF_FID_WEIGHTS"

# pytorch-fid's InceptionV3 module keeps the pieces it uses in `blocks`; a state dict saved
# from it has these prefixes instead of Inception3's module names.
_BLOCK_NAMES = {
    "blocks.0.0": "Conv2d_1a_3x3",
    "blocks.0.1": "Conv2d_2a_3x3",
    "blocks.0.2": "Conv2d_2b_3x3",
    "blocks.1.0": "Conv2d_3b_1x1",
    "blocks.1.1": "Conv2d_4a_3x3",
    "blocks.2.0": "Mixed_5b",
    "blocks.2.1": "Mixed_5c",
    "blocks.2.2": "Mixed_5d",
    "blocks.2.3": "Mixed_6a",
    "blocks.2.4": "Mixed_6b",
    "blocks.2.5": "Mixed_6c",
    "blocks.2.6": "Mixed_6d",
    "blocks.2.7": "Mixed_6e",
    "blocks.3.0": "Mixed_7a",
    "blocks.3.1": "Mixed_7b",
    "blocks.3.2": "Mixed_7c",
}
# Keys of the checkpoint that the FID network does not use: Inception3's classifier.
_UNUSED_KEYS = ("fc.weight", "fc.bias")
# Torch BatchNorm names → Keras BatchNormalization variables.
_BN_VARIABLES = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)


# --------------------------------------------------------------------------- finding the file


def torch_hub_checkpoint_dir():
    """The folder where torch hub (and so pytorch-fid) caches downloaded checkpoints.

    ``$TORCH_HOME/hub/checkpoints``, where ``$TORCH_HOME`` defaults to
    ``$XDG_CACHE_HOME/torch`` and ``$XDG_CACHE_HOME`` to ``~/.cache`` — what
    ``torch.hub.get_dir()`` returns, without importing torch.

    Returns:
        The folder's path (it need not exist).
    """
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))
    return os.path.join(torch_home, "hub", "checkpoints")


def default_weights_path(cache_dir=None):
    """Where :func:`fetch_weights` looks for pytorch-fid's weights (the file need not exist).

    Args:
        cache_dir: a folder to use instead of torch hub's checkpoint folder.

    Returns:
        ``$KDIFF_FID_WEIGHTS`` when it is set (and non-empty), otherwise
        ``pt_inception-2015-12-05-6726825d.pth`` in ``cache_dir`` or in
        :func:`torch_hub_checkpoint_dir`.
    """
    override = os.getenv(WEIGHTS_ENV)
    if override:
        return os.path.expanduser(override)
    folder = os.fspath(cache_dir) if cache_dir is not None else torch_hub_checkpoint_dir()
    return os.path.join(os.path.expanduser(folder), FID_WEIGHTS_FILENAME)


def _download(url, path):
    """Downloads ``url`` to ``path`` through a temporary file in the same folder, renamed into place.

    A download that fails leaves no file at ``path``.

    Raises:
        OSError: the download failed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".partial", dir=folder)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def fetch_weights(cache_dir=None, url=FID_WEIGHTS_URL):
    """The local path of pytorch-fid's weights, downloaded first if no copy is found.

    Looks at ``$KDIFF_FID_WEIGHTS`` (a local file; never downloaded over), then at
    :func:`default_weights_path` (torch hub's cache, shared with pytorch-fid). A missing
    file is downloaded from pytorch-fid's release (about 96 MB) with urllib into a
    temporary file that is renamed into place when complete.

    Args:
        cache_dir: a folder to look in and download to instead of torch hub's.
        url: where to download from.

    Returns:
        The file's path.

    Raises:
        FileNotFoundError: ``$KDIFF_FID_WEIGHTS`` names a file that does not exist.
        OSError: the download failed (the message says where to put the file by hand).
    """
    path = default_weights_path(cache_dir)
    if os.getenv(WEIGHTS_ENV):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Expected ${WEIGHTS_ENV} to name pytorch-fid's weights file (.pth or .npz). "
                f"Received: {WEIGHTS_ENV}={os.getenv(WEIGHTS_ENV)!r}, which is not a file"
            )
        return path
    if os.path.isfile(path):
        return path
    print(f"Downloading pytorch-fid's Inception weights from {url} to {path}", file=sys.stderr, flush=True)
    try:
        _download(url, path)
    except OSError as error:
        raise OSError(
            f"Could not download pytorch-fid's Inception weights from {url} ({error}). Download "
            f"the file by hand and put it at {path}, or point ${WEIGHTS_ENV} at it."
        ) from error
    return path


# --------------------------------------------------------------------------- reading


def read_state_dict(source):
    """Reads pytorch-fid's Inception state dict as numpy arrays under its keys.

    Args:
        source: a ``.npz`` file (read with numpy), any other file (a PyTorch checkpoint
            such as ``pt_inception-2015-12-05-6726825d.pth``, read with
            ``torch.load(weights_only=True)``), or a dict of arrays (numpy arrays, or
            anything with ``.numpy()``, such as torch tensors).

    Returns:
        ``(state_dict, label)``: a dict key → numpy array, and a label naming the source
        for messages.

    Raises:
        FileNotFoundError: no file at ``source``.
        ImportError: a PyTorch checkpoint and no torch (the message says how to convert it).
        ValueError: the file cannot be read, or ``source`` is neither a path nor a dict.
    """
    if isinstance(source, dict):
        state = {}
        for key, value in source.items():
            if hasattr(value, "detach"):
                value = value.detach()
            if hasattr(value, "cpu"):
                value = value.cpu()
            state[str(key)] = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        return state, "the state dict"
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "Expected `source` to be the path of a .pth / .npz file or a dict of arrays. "
            f"Received: source of type {type(source).__name__}"
        )
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected pytorch-fid's weights file at {path!r}. Received: no such file")
    what = "pytorch-fid's Inception state dict"
    if path.endswith(".npz"):
        state = _files.read_npz(path, what)
    else:
        state = _files.read_torch_state_dict(
            path, what,
            f"or convert it once on a machine that has torch with `python -m kdiff.fid.weights convert {path} "
            "OUT.npz` and use the .npz, which loads without torch.",
        )
    return state, repr(path)


# --------------------------------------------------------------------------- mapping


def _layer_map(model):
    """``[(torch key, keras variable, transpose or None), ...]`` for every weight of ``model``."""
    import keras

    pairs = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            if not layer.name.endswith(".conv"):
                raise ValueError(f"Expected the Conv2D layers of a FIDInceptionV3 model. Received: {layer.name!r}")
            pairs.append((f"{layer.name}.weight", layer.kernel, (3, 2, 0, 1)))
        elif isinstance(layer, keras.layers.BatchNormalization):
            for torch_name, keras_name in _BN_VARIABLES:
                pairs.append((f"{layer.name}.{torch_name}", getattr(layer, keras_name), None))
    return pairs


def _torch_shape(variable, transpose):
    shape = tuple(int(s) for s in variable.shape)
    return tuple(shape[i] for i in transpose) if transpose else shape


def expected_state_dict_shapes(model):
    """The keys of pytorch-fid's state dict that ``model`` uses, with their torch shapes.

    Args:
        model: a :func:`kdiff.fid.inception.FIDInceptionV3` model.

    Returns:
        A dict key → shape tuple (convolutions OIHW), in the model's layer order.
    """
    return {key: _torch_shape(variable, transpose) for key, variable, transpose in _layer_map(model)}


def _key_list(keys, limit=8):
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(repr(k) for k in keys[:limit]) + more


def _renamed(state, label):
    """``state`` with pytorch-fid's ``blocks.i.j.`` prefixes renamed to Inception3's module names."""
    out = {}
    for key, value in state.items():
        name = key
        parts = key.split(".")
        if len(parts) > 3 and parts[0] == "blocks":
            prefix = ".".join(parts[:3])
            if prefix in _BLOCK_NAMES:
                name = ".".join([_BLOCK_NAMES[prefix]] + parts[3:])
        if name in out:
            raise ValueError(
                f"Expected each weight once in {label}. Received: {key!r} and the key it "
                f"stands for, {name!r}, both"
            )
        out[name] = value
    return out


def convert_state_dict(state_dict, model=None, source=None):
    """Maps pytorch-fid's state dict onto the variables of a FIDInceptionV3 model, checked.

    Every key must be used exactly once: each convolution weight (OIHW, transposed to
    Keras' HWIO) and BatchNorm weight / bias / running mean / running var must be there
    with the right shape, and no other key may be, except those the FID network does not
    use — the classifier ``fc.weight`` / ``fc.bias`` of the checkpoint and BatchNorm's
    ``num_batches_tracked``. Keys saved from pytorch-fid's ``InceptionV3`` module
    (``blocks.0.0.conv.weight``, ...) are accepted too.

    Args:
        state_dict: a dict key → array, as :func:`read_state_dict` returns it.
        model: the :func:`kdiff.fid.inception.FIDInceptionV3` model whose variables the
            arrays are for (None: a new one is built).
        source: the label of the state dict's origin in messages (a file name).

    Returns:
        A dict ``"layer_name/variable_name"`` → float32 numpy array in Keras' layout.

    Raises:
        ValueError: a missing key, an unexpected key, or an array of the wrong shape or
            dtype; the message names the source and the key.
    """
    if model is None:
        model = FIDInceptionV3()
    label = source or "the state dict"
    state = _renamed(state_dict, label)
    pairs = _layer_map(model)
    expected = {key for key, _, _ in pairs}
    ignored = {key for key in state if key in _UNUSED_KEYS}
    ignored |= {
        key for key in state if key.endswith(".num_batches_tracked")
        and key[: -len("num_batches_tracked")] + "running_mean" in expected
    }
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(
            f"Expected the key {missing[0]!r} in pytorch-fid's Inception weights {label}. "
            f"Received: no such key ({len(missing)} missing: {_key_list(missing)})"
        )
    unexpected = sorted(set(state) - expected - ignored)
    if unexpected:
        raise ValueError(
            f"Expected only the keys of pytorch-fid's FID Inception network in {label}. "
            f"Received: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected: "
            f"{_key_list(unexpected)}); is it pytorch-fid's pt_inception-2015-12-05 file?"
        )
    out = {}
    for key, variable, transpose in pairs:
        array = np.asarray(state[key])
        want = _torch_shape(variable, transpose)
        if tuple(array.shape) != want:
            raise ValueError(
                f"Expected {key!r} of shape {want} in {label}. Received: {key}.shape={tuple(array.shape)}"
            )
        if array.dtype.kind != "f":
            raise ValueError(
                f"Expected {key!r} to hold floats in {label}. Received: dtype={array.dtype}"
            )
        if transpose:
            array = np.transpose(array, (2, 3, 1, 0))  # OIHW → HWIO
        out[variable.path] = np.ascontiguousarray(array, dtype=np.float32)
    return out


def load_pytorch_fid_weights(model, source):
    """Loads pytorch-fid's Inception weights into a FIDInceptionV3 model.

    Nothing is assigned unless every key and shape checks out (:func:`convert_state_dict`).

    Args:
        model: a :func:`kdiff.fid.inception.FIDInceptionV3` model.
        source: a ``.pth`` file (needs torch), an ``.npz`` of the same state dict, or a
            dict of arrays (see :func:`read_state_dict`).

    Returns:
        ``model``, holding the weights.

    Raises:
        FileNotFoundError: no such file.
        ImportError: a ``.pth`` file and no torch.
        ValueError: the file is unreadable, or a key is missing, unexpected or of the
            wrong shape (the message names the file and the key).
    """
    state, label = read_state_dict(source)
    arrays = convert_state_dict(state, model, label)
    variables = {variable.path: variable for _, variable, _ in _layer_map(model)}
    for path, array in arrays.items():
        variables[path].assign(array)
    return model


# --------------------------------------------------------------------------- command line


def main(argv=None):
    """``python -m kdiff.fid.weights convert IN.pth OUT.npz``: a checkpoint as an .npz, checked.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status, 0.
    """
    parser = argparse.ArgumentParser(
        prog="python -m kdiff.fid.weights",
        description="pytorch-fid's Inception weights for kdiff.fid.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert",
        help="convert a pytorch-fid .pth checkpoint (needs torch) into an .npz that loads without torch",
    )
    convert.add_argument("source", help="the .pth file, e.g. pt_inception-2015-12-05-6726825d.pth")
    convert.add_argument("target", help="the .npz file to write (same keys as the state dict)")
    args = parser.parse_args(argv)
    state, label = read_state_dict(args.source)
    convert_state_dict(state, source=label)  # check it before writing anything
    target = args.target if args.target.endswith(".npz") else args.target + ".npz"
    np.savez(target, **state)
    print(f"Wrote {len(state)} arrays from {args.source} to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
