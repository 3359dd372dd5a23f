"""NCSN's reference checkpoints (github.com/ermongroup/ncsn) in kdiff, and back.

Song & Ermon (2019) released ``CondRefineNetDilated`` checkpoints for MNIST, CelebA and
CIFAR-10 (``run.zip``, linked from the ermongroup/ncsn README). Each is what the
reference's ``AnnealRunner`` saves: ``torch.save([state_dict, optimizer_state])``, the state
dict taken from a ``DataParallel`` model, so that every key starts with ``module.``.

``from_ncsn_checkpoint`` reads such a file (or the same state dict saved as ``.npz``) and
returns a ``kdiff.NCSN`` whose network, ``kdiff.models.RefineNet(center_input=True)``, computes
what the reference's ``net(x, labels)`` computes on x in [0, 1] (NCHW there, NHWC here),
with the reference's σ ladder and data range (0, 1), ready for ``kdiff.sample`` with
annealed Langevin dynamics. ``load_ncsn_state_dict`` loads a state dict into an existing
network, ``to_ncsn_state_dict`` writes a kdiff network back in the reference's key layout.

Reading a ``.pth`` file needs torch (``pip install torch``); an ``.npz`` does not.
"""

from __future__ import annotations

import os

import numpy as np

from kdiff import checks
from kdiff.convert import _files

__all__ = [
    "describe_source",
    "from_ncsn_checkpoint",
    "load_ncsn_state_dict",
    "ncsn_config",
    "ncsn_key_map",
    "read_ncsn_state_dict",
    "to_ncsn_state_dict",
]

_PREFIX = "module."  # torch.nn.DataParallel's, on every key of the released checkpoints
_CONFIG_KEYS = ("image_size", "channels", "ngf", "num_classes", "sigma_begin", "sigma_end")


# --------------------------------------------------------------------------- configs


def ncsn_config(name):
    """The reference's ``configs/anneal.yml`` settings of one of its datasets.

    The released checkpoints are trained with these (CelebA and CIFAR-10: ngf 128 at 32×32;
    MNIST: ngf 64 at 28×28); all use 10 noise levels, geometric from σ 1 to 0.01, and data in
    [0, 1] (``logit_transform: false``).

    Args:
        name: "celeba", "cifar10" or "mnist".

    Returns:
        A new dict with ``image_size``, ``channels``, ``ngf``, ``num_classes``,
        ``sigma_begin`` and ``sigma_end``.
    """
    common = dict(num_classes=10, sigma_begin=1.0, sigma_end=0.01)
    if name in ("celeba", "cifar10"):
        return dict(image_size=32, channels=3, ngf=128, **common)
    if name == "mnist":
        return dict(image_size=28, channels=1, ngf=64, **common)
    raise ValueError(
        "Expected `config` to be one of ['celeba', 'cifar10', 'mnist'] or a dict of "
        f"{list(_CONFIG_KEYS)}. Received: config={name!r}"
    )


def _resolve_config(config, overrides):
    """Preset or mapping, then the explicit keyword arguments that are not None."""
    if config is None:
        resolved = {}
    elif isinstance(config, str):
        resolved = ncsn_config(config)
    elif isinstance(config, dict):
        unknown = sorted(set(config) - set(_CONFIG_KEYS))
        if unknown:
            raise ValueError(
                f"Expected `config` keys among {list(_CONFIG_KEYS)}. Received: unknown keys "
                f"{unknown}"
            )
        resolved = dict(config)
    else:
        raise ValueError(
            "Expected `config` to be None, a preset name or a dict. "
            f"Received: config={config!r}"
        )
    resolved.update({k: v for k, v in overrides.items() if v is not None})
    return resolved


# --------------------------------------------------------------------------- reading


def _strip_prefix(state_dict):
    return {k[len(_PREFIX):] if k.startswith(_PREFIX) else k: v for k, v in state_dict.items()}


def _first_of_list(states):
    """The AnnealRunner's ``[state_dict, optimizer_state]`` → its state dict."""
    return states[0] if isinstance(states, (list, tuple)) and states else states


def read_ncsn_state_dict(path):
    """Reads a reference checkpoint as numpy arrays under the reference's keys.

    Args:
        path: a ``.npz`` file of the state dict (read with numpy), or anything else — the
            reference's ``checkpoint.pth`` — read with ``torch.load`` (torch needed); a list
            ``[state_dict, optimizer_state]`` gives its state dict.

    Returns:
        A dict of numpy arrays, the ``module.`` prefix of ``DataParallel`` removed.

    Raises:
        FileNotFoundError: no file at ``path``.
        ImportError: a ``.pth`` file and no torch.
        ValueError: the file is not a checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an NCSN checkpoint file. Received: path={path!r}, "
                                "which does not exist")
    if path.endswith(".npz"):
        state_dict = _files.read_npz(path, "the reference's state dict")
    else:
        state_dict = _files.read_torch_state_dict(
            path, "ermongroup/ncsn (torch.save of [state_dict, optimizer_state] or of a state dict)",
            "or save its state dict as an .npz of numpy arrays, which loads without torch.",
            unwrap=_first_of_list,
        )
    return _strip_prefix(state_dict)


# --------------------------------------------------------------------------- key layout


def _conv(key, conv):
    pairs = [(f"{key}.weight", conv.kernel)]
    if conv.use_bias:
        pairs.append((f"{key}.bias", conv.bias))
    return pairs


def _norm(key, norm):
    return [(f"{key}.embed.weight", norm.embedding)]


def _rcu(key, rcu):
    pairs = []
    for i in range(rcu.n_blocks):
        for j in range(rcu.n_stages):
            k = i * rcu.n_stages + j
            pairs += _norm(f"{key}.{i + 1}_{j + 1}_norm", rcu.norms[k])
            pairs += _conv(f"{key}.{i + 1}_{j + 1}_conv", rcu.convs[k])
    return pairs


def _residual(key, block):
    # ConvMeanPool wraps its convolution: conv2 and shortcut of the pooling blocks.
    pool = ".conv" if block.resample == "down" and block.dilation is None else ""
    pairs = _norm(f"{key}.normalize1", block.norm1) + _conv(f"{key}.conv1", block.conv1)
    pairs += _norm(f"{key}.normalize2", block.norm2) + _conv(f"{key}.conv2{pool}", block.conv2)
    if block.shortcut is not None:
        pairs += _conv(f"{key}.shortcut{pool}", block.shortcut)
    return pairs


def _refine(key, block):
    pairs = []
    for i, rcu in enumerate(block.adapt):
        pairs += _rcu(f"{key}.adapt_convs.{i}", rcu)
    if block.msf is not None:
        for i, (norm, conv) in enumerate(zip(block.msf.norms, block.msf.convs)):
            pairs += _norm(f"{key}.msf.norms.{i}", norm) + _conv(f"{key}.msf.convs.{i}", conv)
    for i, (norm, conv) in enumerate(zip(block.crp.norms, block.crp.convs)):
        pairs += _norm(f"{key}.crp.norms.{i}", norm) + _conv(f"{key}.crp.convs.{i}", conv)
    return pairs + _rcu(f"{key}.output_convs", block.output_rcu)


def ncsn_key_map(network):
    """Each key of the reference's state dict, with the kdiff weight that holds it.

    Args:
        network: a ``kdiff.models.RefineNet``.

    Returns:
        A list of ``(key, variable)`` pairs in the reference's naming (without the
        ``module.`` prefix), one per weight of ``network``. Convolution kernels are HWIO
        here and OIHW in the reference (keys ending in ``.weight`` of a rank-4 variable);
        everything else has the same layout.
    """
    from kdiff.models.refinenet import RefineNet

    if not isinstance(network, RefineNet):
        raise ValueError(
            f"Expected a kdiff.models.RefineNet. Received: network={type(network).__name__}"
        )
    pairs = _conv("begin_conv", network.conv_in)
    for stage in range(1, 5):
        for i, block in enumerate(getattr(network, f"res{stage}")):
            pairs += _residual(f"res{stage}.{i}", block)
    for r in range(1, 5):
        pairs += _refine(f"refine{r}", getattr(network, f"refine{r}"))
    pairs += _norm("normalizer", network.norm_out) + _conv("end_conv", network.conv_out)
    if len(pairs) != len(network.weights):  # a layer this map does not know
        raise RuntimeError(
            f"Expected one reference key per weight of {network.name}. Received: "
            f"{len(pairs)} keys for {len(network.weights)} weights"
        )
    return pairs


def _to_kdiff(array):
    """OIHW convolution kernels → HWIO; other arrays unchanged."""
    return np.transpose(array, (2, 3, 1, 0)) if array.ndim == 4 else array


def _to_reference(array):
    """HWIO convolution kernels → OIHW; other arrays unchanged."""
    return np.transpose(array, (3, 2, 0, 1)) if array.ndim == 4 else array


def _key_list(keys, limit=8):
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{keys[:limit]}{more}"


def load_ncsn_state_dict(network, state_dict):
    """Loads a reference state dict into a kdiff RefineNet, every key checked first.

    Nothing is assigned unless every key of ``network``'s layout is present, no other key
    is, and every shape matches.

    Args:
        network: a built ``kdiff.models.RefineNet`` of the checkpoint's configuration.
        state_dict: a mapping of the reference's keys (with or without ``module.``) to
            arrays (OIHW convolution kernels).

    Returns:
        ``network``, holding the converted weights.

    Raises:
        ValueError: a missing or unexpected key, or an array of the wrong shape (the
            message names the key and both shapes).
    """
    state_dict = _strip_prefix(dict(state_dict))
    pairs = ncsn_key_map(network)
    expected = {key for key, _ in pairs}
    missing, unexpected = expected - set(state_dict), set(state_dict) - expected
    if missing or unexpected:
        raise ValueError(
            f"Expected the {len(expected)} keys of CondRefineNetDilated(ngf={network.ngf}, "
            f"channels={network.in_channels}, num_classes={network.num_classes}). Received: "
            f"missing keys {_key_list(missing)}, unexpected keys {_key_list(unexpected)}"
        )
    values = []
    for key, variable in pairs:
        array = np.asarray(state_dict[key])
        want = tuple(variable.shape)
        value = _to_kdiff(array) if len(want) == 4 else array
        if tuple(value.shape) != want:
            reference_shape = (want[3], want[2], want[0], want[1]) if len(want) == 4 else want
            raise ValueError(
                f"Expected `{key}` of shape {reference_shape} (kdiff's {variable.path}: "
                f"{want}). Received: {key}.shape={tuple(array.shape)}"
            )
        values.append((variable, value.astype(variable.dtype)))
    for variable, value in values:
        variable.assign(value)
    return network


def to_ncsn_state_dict(network, prefix=_PREFIX):
    """A kdiff RefineNet's weights in the reference's key layout.

    The result loads into the reference's ``CondRefineNetDilated`` (after
    ``torch.from_numpy``; with the default prefix, into the ``DataParallel`` wrapper its
    runners use), or back into kdiff with ``load_ncsn_state_dict``. It reproduces the
    reference's outputs only for a network with ``center_input=True``.

    Args:
        network: a ``kdiff.models.RefineNet``.
        prefix: prepended to every key (``"module."``, as in the released checkpoints; ""
            for a bare model).

    Returns:
        A dict of float32 numpy arrays (OIHW convolution kernels).
    """
    if not isinstance(prefix, str):
        raise ValueError(f"Expected `prefix` to be a string. Received: prefix={prefix!r}")
    return {prefix + key: _to_reference(np.asarray(variable.numpy(), np.float32))
            for key, variable in ncsn_key_map(network)}


# --------------------------------------------------------------------------- the model


def _inferred(state_dict):
    """ngf, channels and num_classes read off the first convolution and the last norm."""
    for key in ("begin_conv.weight", "normalizer.embed.weight"):
        if key not in state_dict:
            raise ValueError(
                "Expected a state dict of ermongroup/ncsn's CondRefineNetDilated (with "
                f"begin_conv.weight and normalizer.embed.weight). Received: no `{key}` among "
                f"{len(state_dict)} keys {_key_list(state_dict, 4)}"
            )
    begin, embed = state_dict["begin_conv.weight"], state_dict["normalizer.embed.weight"]
    if np.ndim(begin) != 4 or np.ndim(embed) != 2 or embed.shape[1] != 3 * begin.shape[0]:
        raise ValueError(
            "Expected begin_conv.weight [ngf, channels, 3, 3] and normalizer.embed.weight "
            f"[num_classes, 3·ngf]. Received: begin_conv.weight.shape={tuple(begin.shape)}, "
            f"normalizer.embed.weight.shape={tuple(embed.shape)}"
        )
    return {"ngf": int(begin.shape[0]), "channels": int(begin.shape[1]),
            "num_classes": int(embed.shape[0])}


def from_ncsn_checkpoint(path, config=None, *, image_size=None, channels=None, ngf=None,
                         num_classes=None, sigmas=None, **model_kwargs):
    """A reference NCSN checkpoint as a ``kdiff.NCSN``, ready for ``kdiff.sample``.

    ngf, channels and num_classes are read off the weights; any given (as arguments or in
    ``config``) must agree with them. The image size is not in the weights (the network is
    convolutional): it comes from ``config`` / ``image_size``, default 32.

    Args:
        path: the reference's ``checkpoint.pth`` (torch needed) or its state dict as
            ``.npz`` (see ``read_ncsn_state_dict``).
        config: None, a preset of the reference's ``anneal.yml`` ("celeba", "cifar10",
            "mnist"; see ``ncsn_config``), or a dict with some of its keys.
        image_size: height and width of the images (default 32).
        channels: image channels (checked against the weights).
        ngf: the network's base width (checked against the weights).
        num_classes: noise levels (checked against the weights).
        sigmas: the descending noise levels; default geometric from ``sigma_begin`` (1) to
            ``sigma_end`` (0.01) in ``num_classes`` levels, as the reference's runner.
        **model_kwargs: ``kdiff.NCSN`` arguments (``ema_decay``, ``seed``, …); the data
            range is (0, 1).

    Returns:
        A ``kdiff.NCSN`` whose ``network`` (and EMA copy) holds the converted weights:
        ``model.network(x, labels)`` on NHWC x in [0, 1] equals the reference's
        ``net(x_nchw, labels)`` transposed to NHWC.

    Raises:
        FileNotFoundError, ImportError, ValueError: see ``read_ncsn_state_dict`` and
            ``load_ncsn_state_dict``; a given setting that disagrees with the weights.
    """
    from kdiff import diffusion, schedules
    from kdiff.models.refinenet import RefineNet

    settings = _resolve_config(config, dict(image_size=image_size, channels=channels, ngf=ngf,
                                            num_classes=num_classes))
    state_dict = read_ncsn_state_dict(path)
    for name, value in _inferred(state_dict).items():
        given = settings.setdefault(name, value)
        if given != value:
            raise ValueError(
                f"Expected `{name}` to match the checkpoint's weights ({value}). "
                f"Received: {name}={given!r} for path={os.fspath(path)!r}"
            )
    network = RefineNet(
        image_size=checks.positive_int(settings.get("image_size", 32), "image_size"),
        in_channels=settings["channels"],
        num_classes=settings["num_classes"],
        ngf=settings["ngf"],
        center_input=True,
    )
    load_ncsn_state_dict(network, state_dict)
    if sigmas is None:
        sigmas = schedules.geometric_sigmas(settings.get("sigma_begin", 1.0),
                                            settings.get("sigma_end", 0.01),
                                            settings["num_classes"])
    model_kwargs.setdefault("data_range", (0.0, 1.0))
    return diffusion.NCSN(network, sigmas, **model_kwargs)


def describe_source(path, model):
    """Where a converted NCSN checkpoint comes from, as ``kdiff convert`` records it.

    Args:
        path: the checkpoint file ``from_ncsn_checkpoint`` read.
        model: the ``kdiff.NCSN`` it returned.

    Returns:
        A dict: ``kind`` "ncsn", ``path`` (absolute), ``model_type``
        "CondRefineNetDilated" and ``config``, the reference's ``anneal.yml`` settings
        (``image_size``, ``channels``, ``ngf``, ``num_classes``, ``sigma_begin``,
        ``sigma_end``).
    """
    network, sigmas = model.network, np.asarray(model.process.sigmas, dtype=np.float64)
    config = {
        "image_size": int(model.image_shape[0]),
        "channels": int(model.image_shape[2]),
        "ngf": int(network.ngf),
        "num_classes": int(len(sigmas)),
        "sigma_begin": float(sigmas[0]),
        "sigma_end": float(sigmas[-1]),
    }
    return {"kind": "ncsn", "path": os.path.abspath(os.fspath(path)), "model_type": "CondRefineNetDilated",
            "config": config}
