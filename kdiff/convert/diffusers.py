"""Hugging Face diffusers checkpoints as kdiff models: ``kdiff.from_diffusers``.

Reads a ``UNet2DModel`` and its scheduler in the Hugging Face layout — a pipeline folder
(``model_index.json``, ``unet/``, ``scheduler/``), a bare model folder (``config.json`` and
``diffusion_pytorch_model.safetensors`` or ``.bin``, and ``scheduler_config.json``; a
pipeline's ``unet/`` takes the pipeline's ``../scheduler/``), or a hub id that
``huggingface_hub`` downloads — and returns

* ``kdiff.DDPM`` for a ``DDPMScheduler`` / ``DDIMScheduler`` / ``DPMSolverMultistepScheduler``
  (ε-prediction), its schedule holding exactly
  the scheduler's float32 betas, its network a ``kdiff.models.UNet`` (the DDPM layout:
  ``DownBlock2D`` / ``AttnDownBlock2D`` / ``UpBlock2D`` / ``AttnUpBlock2D``);
* ``kdiff.ScoreSDE`` for a ``ScoreSdeVeScheduler``, with ``VESDE(sigma_min, sigma_max,
  N=num_train_timesteps)`` and σ conditioning (the network takes σ(t) and returns the
  score, as diffusers' ``ScoreSdeVePipeline`` calls it), its network a
  ``kdiff.models.NCSNpp`` for the NCSN++ layout (``SkipDownBlock2D`` / ``AttnSkipDownBlock2D``
  / ``SkipUpBlock2D`` / ``AttnSkipUpBlock2D``, Fourier features).

``model.network(x, level)`` (x NHWC) returns what diffusers' ``unet(x_nchw, level).sample``
returns, transposed to NHWC; ``level`` is the integer timestep for DDPM and σ for NCSN++.

Safetensors files are read with the ``safetensors`` package's NumPy API (no torch); a
``.bin`` needs torch. Both attention key namings load (``query`` / ``key`` / ``value`` /
``proj_attn`` of the 2022 checkpoints, ``to_q`` / ``to_k`` / ``to_v`` / ``to_out.0`` of
today's), and both ``time_proj.W`` and ``time_proj.weight``. Every weight of the file
must be used and every kdiff weight found, with matching shapes; otherwise a ValueError
names the file and the key. A checkpoint without a scheduler needs ``scheduler=`` (a
config file, its dict, a diffusers scheduler, or "DDPMScheduler" for its defaults): the
noise schedule is not guessed.

The scheduler's sampling settings become the model's own sampling defaults
(``sampling_defaults``): ``kdiff.sample(model, n)`` runs the sampler of the source's
scheduler, and each sampler of a diffusers scheduler takes the settings that scheduler
would have, built from this config with ``from_config`` (as ``DDIMPipeline`` builds its
``DDIMScheduler``): ``clip_sample`` / ``clip_sample_range``, ``timestep_spacing``,
``steps_offset``, ``set_alpha_to_one``, DDIM's network ε (``use_clipped_model_output``
unset), ``variance_type``; a ``DPMSolverMultistepScheduler``'s ``solver_order``,
``algorithm_type``, ``solver_type``, ``lower_order_final``, ``final_sigmas_type``; a
``ScoreSdeVeScheduler``'s ``snr``, ``sampling_eps`` and ``correct_steps``. A setting kdiff
cannot reproduce is named in a ``UserWarning``. Options given to ``kdiff.sample`` override
these defaults.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings

import numpy as np

__all__ = ["SCHEDULER_NAMES", "from_diffusers", "diffusers_betas", "describe_source", "load_weights", "read_state_dict",
           "sampling_defaults", "unet_from_config"]

WEIGHTS_NAME = "diffusion_pytorch_model"
_DDPM_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler")
_VE_SCHEDULERS = ("ScoreSdeVeScheduler",)
_UNET_DOWN = ("DownBlock2D", "AttnDownBlock2D")
_UNET_UP = ("UpBlock2D", "AttnUpBlock2D")
_SKIP_DOWN = ("SkipDownBlock2D", "AttnSkipDownBlock2D")
_SKIP_UP = ("SkipUpBlock2D", "AttnSkipUpBlock2D")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# UNet2DModel's constructor defaults: what a config.json that omits a key means.
_UNET_DEFAULTS = {
    "sample_size": None,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1.0,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attn_norm_num_groups": None,
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
}
# The schedulers' defaults (DDPMScheduler / DDIMScheduler share theirs; ScoreSdeVeScheduler).
_DDPM_DEFAULTS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "variance_type": "fixed_small",
    "rescale_betas_zero_snr": False,
}
_VE_DEFAULTS = {"num_train_timesteps": 2000, "sigma_min": 0.01, "sigma_max": 1348.0,
                "sampling_eps": 1e-5}


# --------------------------------------------------------------------------- files


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
    except OSError as error:
        raise ValueError(f"Expected a readable JSON file. Received: path={path!r} ({error})") from error
    except ValueError as error:
        raise ValueError(f"Expected valid JSON in path={path!r}. Received: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"Expected a JSON object in path={path!r}. Received: {type(value).__name__}")
    return value


def _download(repo_id, revision):
    try:
        import huggingface_hub
    except ImportError as error:
        raise ValueError(
            f"Expected a local diffusers folder, or huggingface_hub to download the hub id "
            f"{repo_id!r}. Received: no folder {repo_id!r} and no huggingface_hub module "
            "(pip install huggingface_hub)."
        ) from error
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=["*.json", "*.safetensors"])
        if not _has_weights(folder):
            folder = huggingface_hub.snapshot_download(
                repo_id, revision=revision, allow_patterns=["*.json", "*.bin"])
    except Exception as error:  # no network, unknown repo, …: say which, keep the cause
        raise ValueError(
            f"Expected a local diffusers folder or a downloadable hub id. Received: path="
            f"{repo_id!r} is no folder here and its download failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    return folder


def _has_weights(folder):
    for _, _, files in os.walk(folder):
        if any(f.startswith(WEIGHTS_NAME) for f in files):
            return True
    return False


def _locate(path, revision):
    """(model folder, scheduler config path or None) for a local folder or a hub id."""
    path = os.fspath(path)
    if not os.path.exists(path):
        if _HUB_ID.fullmatch(path):
            path = _download(path, revision)
        else:
            raise ValueError(
                "Expected a diffusers folder (model_index.json with unet/ and scheduler/, or "
                f"config.json with {WEIGHTS_NAME}.safetensors) or a hub id 'owner/name'. "
                f"Received: path={path!r} does not exist"
            )
    if not os.path.isdir(path):
        raise ValueError(f"Expected a diffusers folder. Received: path={path!r} is not a directory")
    index = os.path.join(path, "model_index.json")
    if os.path.isfile(index):
        components = _read_json(index)
        unet = components.get("unet")
        if not isinstance(unet, (list, tuple)) or len(unet) != 2:
            raise ValueError(
                f"Expected a pipeline whose model_index.json names a `unet` component "
                f"(['diffusers', 'UNet2DModel']). Received: unet={unet!r} in {index!r}"
            )
        if unet[1] != "UNet2DModel":
            raise ValueError(
                f"Expected the pipeline's unet to be a UNet2DModel. Received: unet={unet!r} "
                f"in {index!r}"
            )
        model_dir = os.path.join(path, "unet")
        scheduler = os.path.join(path, "scheduler", "scheduler_config.json")
        return model_dir, (scheduler if os.path.isfile(scheduler) else None)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(
            "Expected a diffusers folder: model_index.json (a pipeline) or config.json (a "
            f"model). Received: path={path!r} holding {sorted(os.listdir(path))[:10]}"
        )
    for candidate in _scheduler_candidates(path):
        if os.path.isfile(candidate):
            return path, candidate
    return path, None


def _scheduler_candidates(model_dir):
    """Where a model folder's scheduler config may be: beside it, in ``scheduler/``, or —
    for the ``unet/`` of a pipeline (its parent holds ``model_index.json``) — the
    pipeline's ``../scheduler/``."""
    candidates = [os.path.join(model_dir, "scheduler_config.json"),
                  os.path.join(model_dir, "scheduler", "scheduler_config.json")]
    parent = os.path.dirname(os.path.abspath(model_dir))
    if os.path.isfile(os.path.join(parent, "model_index.json")):
        candidates.append(os.path.join(parent, "scheduler", "scheduler_config.json"))
    return candidates


def read_state_dict(model_dir, variant=None):
    """A diffusers model folder's weights as NumPy float32 arrays.

    Args:
        model_dir: the folder with ``diffusion_pytorch_model[.variant].safetensors`` (read
            without torch) or ``.bin`` (read with torch).
        variant: the file variant, e.g. "fp16" for ``….fp16.safetensors``.

    Returns:
        ``(state, file)``: a dict of key → float32 array, and the file read.

    Raises:
        ValueError: naming the folder when there is no weights file, or saying that torch
            is needed for a ``.bin``.
    """
    stem = WEIGHTS_NAME if variant is None else f"{WEIGHTS_NAME}.{variant}"
    safetensors_file = os.path.join(model_dir, stem + ".safetensors")
    bin_file = os.path.join(model_dir, stem + ".bin")
    if os.path.isfile(safetensors_file):
        from safetensors.numpy import load_file

        try:
            raw = load_file(safetensors_file)
        except Exception as error:  # a truncated or foreign file
            raise ValueError(
                f"Expected a readable safetensors file. Received: {safetensors_file!r} "
                f"({type(error).__name__}: {error})"
            ) from error
        return {k: np.asarray(v, np.float32) for k, v in raw.items()}, safetensors_file
    if os.path.isfile(bin_file):
        try:
            import torch
        except ImportError as error:
            raise ValueError(
                f"Expected torch to read a PyTorch .bin checkpoint (pip install torch), or a "
                f"{stem}.safetensors beside it. Received: {bin_file!r} and no torch module"
            ) from error
        try:
            raw = torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"Expected a readable PyTorch state dict. Received: {bin_file!r} "
                f"({type(error).__name__}: {error})"
            ) from error
        return {k: v.float().numpy() for k, v in raw.items()}, bin_file
    present = sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else "no such folder"
    raise ValueError(
        f"Expected {stem}.safetensors (or .bin) in the model folder. Received: "
        f"model_dir={model_dir!r} holding {present}"
    )


def _normalized_keys(state):
    """The state dict with 2022 attention names and ``time_proj.W`` renamed to today's."""
    renames = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.",
               ".proj_attn.": ".to_out.0."}
    out = {}
    for key, value in state.items():
        new = key
        if ".attentions." in key:
            for old, current in renames.items():
                new = new.replace(old, current)
        if new == "time_proj.W":
            new = "time_proj.weight"
        if new in out:
            raise ValueError(f"Expected each weight once. Received: {key!r} and another key for {new!r}")
        out[new] = value
    return out


# --------------------------------------------------------------------------- schedules


def _torch_linspace(start, end, steps):
    """``torch.linspace(start, end, steps, dtype=torch.float32)``, bit for bit.

    PyTorch computes the float32 step once and fills the first half from ``start`` and
    the second from ``end``, each with one fused multiply-add per element.
    """
    start, end = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([start], np.float32)
    step = np.float32((end - start) / np.float32(steps - 1))
    i = np.arange(steps)
    step64 = np.float64(step)
    head = (step64 * i + np.float64(start)).astype(np.float32)
    tail = (np.float64(end) - step64 * (steps - 1 - i)).astype(np.float32)
    return np.where(i < steps // 2, head, tail)


def _cosine_betas(steps, max_beta=0.999):
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta)
                     for i in range(steps)], np.float32)


def _zero_terminal_snr(betas):
    root = np.sqrt(np.cumprod(1.0 - betas, dtype=np.float32))
    first, last = root[0], root[-1]
    root = (root - last) * (first / (first - last))
    alphas_bar = root ** 2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (1.0 - alphas).astype(np.float32)


def diffusers_betas(config, source="scheduler_config.json"):
    """The float32 betas a ``DDPMScheduler`` / ``DDIMScheduler`` computes from its config.

    Args:
        config: the scheduler's config dict (missing keys take the schedulers' defaults).
        source: the file it came from, for error messages.

    Returns:
        A float32 array of ``num_train_timesteps`` betas.
    """
    config = {**_DDPM_DEFAULTS, **config}
    steps = int(config["num_train_timesteps"])
    start, end = float(config["beta_start"]), float(config["beta_end"])
    schedule = config["beta_schedule"]
    if config["trained_betas"] is not None:
        betas = np.asarray(config["trained_betas"], np.float32)
    elif schedule == "linear":
        betas = _torch_linspace(start, end, steps)
    elif schedule == "scaled_linear":
        betas = _torch_linspace(start ** 0.5, end ** 0.5, steps) ** 2
    elif schedule == "squaredcos_cap_v2":
        betas = _cosine_betas(steps)
    elif schedule == "sigmoid":
        ramp = _torch_linspace(-6.0, 6.0, steps)
        sigmoid = np.float32(1.0) / (np.float32(1.0) + np.exp(-ramp))
        betas = (sigmoid * np.float32(end - start) + np.float32(start)).astype(np.float32)
    else:
        raise ValueError(
            "Expected `beta_schedule` in ['linear', 'scaled_linear', 'squaredcos_cap_v2', "
            f"'sigmoid'] (or trained_betas). Received: beta_schedule={schedule!r} in {source!r}"
        )
    if config["rescale_betas_zero_snr"]:
        betas = _zero_terminal_snr(betas)
    return betas


# --------------------------------------------------------------------------- networks


def _config_error(key, expected, value, source):
    return ValueError(f"Expected `{key}` {expected} in {source!r}. Received: {key}={value!r}")


def _image_size(config, source):
    size = config["sample_size"]
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise _config_error("sample_size", "square (kdiff networks take square images)", size, source)
        size = size[0]
    if not isinstance(size, int) or size < 1:
        raise _config_error("sample_size", "a positive int (the image size)", size, source)
    return size


def _attention_levels(config, down_kinds, up_kinds, source):
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    channels = list(config["block_out_channels"])
    if not (len(down) == len(up) == len(channels)) or not channels:
        raise ValueError(
            f"Expected as many `down_block_types` and `up_block_types` as `block_out_channels` "
            f"in {source!r}. Received: {len(down)}, {len(up)} and {len(channels)}"
        )
    for key, types, kinds in (("down_block_types", down, down_kinds), ("up_block_types", up, up_kinds)):
        for t in types:
            if t not in kinds:
                raise _config_error(key, f"with every block in {list(kinds)}", types, source)
    attn_down = {i for i, t in enumerate(down) if t.startswith("Attn")}
    attn_up = {len(up) - 1 - i for i, t in enumerate(up) if t.startswith("Attn")}
    if attn_down != attn_up:
        raise ValueError(
            "Expected the up blocks' attention to mirror the down blocks' (kdiff networks attend "
            f"at the same resolutions on both paths) in {source!r}. Received: down_block_types="
            f"{down}, up_block_types={up}"
        )
    size = _image_size(config, source)
    return tuple(size // 2**i for i in sorted(attn_down))


def _require(config, key, allowed, source, what=None):
    value = config[key]
    if value not in allowed:
        raise _config_error(key, what or f"in {list(allowed)}", value, source)
    return value


def _layout(config, source):
    down = list(config["down_block_types"])
    if down and all(t in _UNET_DOWN for t in down):
        return "unet"
    if down and all(t in _SKIP_DOWN for t in down):
        return "ncsnpp"
    unknown = [t for t in down if t not in _UNET_DOWN + _SKIP_DOWN]
    raise ValueError(
        f"Expected `down_block_types` all of the DDPM layout {list(_UNET_DOWN)} or all of the "
        f"NCSN++ layout {list(_SKIP_DOWN)} in {source!r}. Received: down_block_types={down}"
        + (f" (unsupported: {unknown})" if unknown else " (a mix)")
    )


def unet_from_config(config, source="config.json", learned_variance=False):
    """The kdiff network (not yet holding weights) for a ``UNet2DModel`` config.

    Args:
        config: the model's ``config.json`` as a dict.
        source: the file it came from, for error messages.
        learned_variance: the scheduler's ``variance_type`` is "learned_range" (the
            output holds ``[ε, v]``, twice the input channels).

    Returns:
        A ``kdiff.models.UNet`` (DDPM layout) or ``kdiff.models.NCSNpp`` (skip blocks).

    Raises:
        ValueError: naming the key and the file for anything kdiff's networks cannot
            reproduce (another model class, block types, activations, …).
    """
    from kdiff.models import NCSNpp, UNet

    name = config.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise _config_error("_class_name", "'UNet2DModel' (the unconditional diffusers U-Net)", name, source)
    config = {**_UNET_DEFAULTS, **config}
    layout = _layout(config, source)
    _require(config, "act_fn", ("silu", "swish"), source)
    shift = _require(config, "resnet_time_scale_shift", ("default", "scale_shift"), source)
    _require(config, "mid_block_type", ("UNetMidBlock2D",), source)
    _require(config, "class_embed_type", (None,), source)
    attention = _attention_levels(config, _UNET_DOWN if layout == "unet" else _SKIP_DOWN,
                                  _UNET_UP if layout == "unet" else _SKIP_UP, source)
    channels = [int(c) for c in config["block_out_channels"]]
    if config["time_embedding_dim"] not in (None, 4 * channels[0]):
        raise _config_error("time_embedding_dim", f"None or 4 * block_out_channels[0] = {4 * channels[0]}",
                            config["time_embedding_dim"], source)
    size = _image_size(config, source)
    in_ch, out_ch = int(config["in_channels"]), int(config["out_channels"])
    head = config["attention_head_dim"]
    common = dict(image_size=size, in_channels=in_ch, num_res_blocks=int(config["layers_per_block"]),
                  attention_resolutions=attention, dropout=float(config["dropout"]),
                  norm_eps=float(config["norm_eps"]))
    if layout == "unet":
        _require(config, "time_embedding_type", ("positional",), source)
        _require(config, "center_input_sample", (False,), source)
        _require(config, "downsample_type", ("conv",), source)
        _require(config, "upsample_type", ("conv",), source)
        if float(config["mid_block_scale_factor"]) != 1.0:
            raise _config_error("mid_block_scale_factor", "1 for the DDPM layout",
                                config["mid_block_scale_factor"], source)
        if config["norm_num_groups"] is None:
            raise _config_error("norm_num_groups", "an int for the DDPM layout", None, source)
        if config["attn_norm_num_groups"] not in (None, config["norm_num_groups"]):
            raise _config_error("attn_norm_num_groups", f"None or norm_num_groups="
                                f"{config['norm_num_groups']}", config["attn_norm_num_groups"], source)
        base = channels[0]
        if any(c % base for c in channels):
            raise _config_error("block_out_channels", "multiples of the first entry", channels, source)
        if learned_variance and out_ch != 2 * in_ch:
            raise _config_error("out_channels", f"2 * in_channels = {2 * in_ch} for variance_type "
                                "'learned_range'", out_ch, source)
        out = in_ch if learned_variance else out_ch
        return UNet(
            base_channels=base, channel_mult=tuple(c // base for c in channels),
            out_channels=None if out == in_ch else out, learned_variance=learned_variance,
            num_heads=1, head_channels=None if head is None else int(head),
            num_classes=config["num_class_embeds"], norm_groups=int(config["norm_num_groups"]),
            downsample_padding=int(config["downsample_padding"]),
            flip_sin_to_cos=bool(config["flip_sin_to_cos"]), freq_shift=config["freq_shift"],
            mid_attention=bool(config["add_attention"]), adaptive_norm=shift == "scale_shift",
            # diffusers' middle attention has a GroupNorm only with the "default" shift or
            # an explicit attn_norm_num_groups
            mid_attention_norm=shift == "default" or config["attn_norm_num_groups"] is not None,
            **common)
    embedding = _require(config, "time_embedding_type", ("fourier", "positional"), source)
    if abs(float(config["mid_block_scale_factor"]) - math.sqrt(2.0)) > 1e-6:
        raise _config_error("mid_block_scale_factor", "√2 for the NCSN++ layout",
                            config["mid_block_scale_factor"], source)
    _require(config, "add_attention", (True,), source)
    _require(config, "num_class_embeds", (None,), source)
    _require(config, "resnet_time_scale_shift", ("default",), source, "'default' for the NCSN++ layout")
    if learned_variance:
        raise _config_error("variance_type", "not 'learned_range' for the NCSN++ layout",
                            "learned_range", source)
    groups = config["norm_num_groups"]
    return NCSNpp(
        out_channels=None if out_ch == in_ch else out_ch, channels=tuple(channels),
        embedding="fourier" if embedding == "fourier" else "sinusoidal",
        flip_sin_to_cos=bool(config["flip_sin_to_cos"]), freq_shift=config["freq_shift"],
        center_input=bool(config["center_input_sample"]), head_channels=None if head is None else int(head),
        norm_groups=None if groups is None else int(groups), **common)


# --------------------------------------------------------------------------- weights


class _Weights:
    """A state dict being mapped onto Keras variables: every key used once, shapes checked."""

    def __init__(self, state, source):
        self.state = state
        self.source = source
        self.pending = []  # (variable, value)
        self.used = set()

    def _take(self, key, shape):
        if key not in self.state:
            raise ValueError(
                f"Expected the weight {key!r} (shape {list(shape)}, as the config implies) in "
                f"{self.source!r}. Received: no such key"
            )
        value = self.state[key]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"Expected {key!r} of shape {list(shape)} (as the config implies) in "
                f"{self.source!r}. Received: shape={list(value.shape)}"
            )
        self.used.add(key)
        return value

    def _set(self, variable, value):
        self.pending.append((variable, value))

    def same_layout(self, variable, key):
        """A weight stored as Keras stores it (embedding tables, Fourier frequencies)."""
        self._set(variable, self._take(key, tuple(variable.shape)))

    def conv(self, layer, prefix):
        kh, kw, cin, cout = layer.kernel.shape
        self._set(layer.kernel, self._take(f"{prefix}.weight", (cout, cin, kh, kw)).transpose(2, 3, 1, 0))
        self._set(layer.bias, self._take(f"{prefix}.bias", (cout,)))

    def dense(self, layer, prefix):
        cin, cout = layer.kernel.shape
        key = f"{prefix}.weight"
        if key in self.state and self.state[key].shape == (cout, cin, 1, 1):  # a 1×1 conv of old files
            self.state[key] = self.state[key][:, :, 0, 0]
        self._set(layer.kernel, self._take(key, (cout, cin)).T)
        self._set(layer.bias, self._take(f"{prefix}.bias", (cout,)))

    def norm(self, layer, prefix):
        channels = layer.gamma.shape[0]
        self._set(layer.gamma, self._take(f"{prefix}.weight", (channels,)))
        self._set(layer.beta, self._take(f"{prefix}.bias", (channels,)))

    def resblock(self, block, prefix):
        self.norm(block.norm1, f"{prefix}.norm1")
        self.conv(block.conv1, f"{prefix}.conv1")
        self.dense(block.emb_proj, f"{prefix}.time_emb_proj")
        self.norm(block.norm2, f"{prefix}.norm2")
        self.conv(block.conv2, f"{prefix}.conv2")
        if block.skip is not None:
            self.conv(block.skip, f"{prefix}.conv_shortcut")

    def attention(self, block, prefix):
        if block.norm is not None:
            self.norm(block.norm, f"{prefix}.group_norm")
        channels = block.proj.kernel.shape[0]
        kernels, biases = [], []
        for name in ("to_q", "to_k", "to_v"):
            kernels.append(self._take(f"{prefix}.{name}.weight", (channels, channels)).T)
            biases.append(self._take(f"{prefix}.{name}.bias", (channels,)))
        self._set(block.qkv.kernel, np.concatenate(kernels, axis=1))
        self._set(block.qkv.bias, np.concatenate(biases))
        self.dense(block.proj, f"{prefix}.to_out.0")

    def time_embedding(self, network):
        self.dense(network.time_dense0, "time_embedding.linear_1")
        self.dense(network.time_dense1, "time_embedding.linear_2")
        features = network.time_features
        if hasattr(features, "frequencies"):
            self.same_layout(features.frequencies, "time_proj.weight")

    def finish(self):
        unused = sorted(set(self.state) - self.used)
        if unused:
            shown = ", ".join(repr(k) for k in unused[:8]) + (" …" if len(unused) > 8 else "")
            raise ValueError(
                f"Expected every weight of {self.source!r} to have a place in the kdiff network "
                f"built from its config. Received: {len(unused)} unused: {shown}"
            )
        for variable, value in self.pending:
            variable.assign(np.asarray(value, np.float32))


def _map_unet(w, net):
    w.time_embedding(net)
    w.conv(net.conv_in, "conv_in")
    if net.class_embedding is not None:
        w.same_layout(net.class_embedding.embeddings, "class_embedding.weight")
    for level, blocks in enumerate(net.down_blocks):
        for i, (block, attn) in enumerate(blocks):
            w.resblock(block, f"down_blocks.{level}.resnets.{i}")
            if attn is not None:
                w.attention(attn, f"down_blocks.{level}.attentions.{i}")
        if level < len(net.downsamplers):
            w.conv(net.downsamplers[level].conv, f"down_blocks.{level}.downsamplers.0.conv")
    w.resblock(net.mid_block1, "mid_block.resnets.0")
    if net.mid_attn is not None:
        w.attention(net.mid_attn, "mid_block.attentions.0")
    w.resblock(net.mid_block2, "mid_block.resnets.1")
    for i, blocks in enumerate(net.up_blocks):
        for j, (block, attn) in enumerate(blocks):
            w.resblock(block, f"up_blocks.{i}.resnets.{j}")
            if attn is not None:
                w.attention(attn, f"up_blocks.{i}.attentions.{j}")
        if i < len(net.upsamplers):
            w.conv(net.upsamplers[i].conv, f"up_blocks.{i}.upsamplers.0.conv")
    w.norm(net.norm_out, "conv_norm_out")
    w.conv(net.conv_out, "conv_out")


def _map_ncsnpp(w, net):
    w.time_embedding(net)
    w.conv(net.conv_in, "conv_in")
    for level, blocks in enumerate(net.down_blocks):
        for i, (block, attn) in enumerate(blocks):
            w.resblock(block, f"down_blocks.{level}.resnets.{i}")
            if attn is not None:
                w.attention(attn, f"down_blocks.{level}.attentions.{i}")
        if level < len(net.downsamplers):
            w.resblock(net.downsamplers[level], f"down_blocks.{level}.resnet_down")
            w.conv(net.down_skips[level], f"down_blocks.{level}.skip_conv")
    w.resblock(net.mid_block1, "mid_block.resnets.0")
    w.attention(net.mid_attn, "mid_block.attentions.0")
    w.resblock(net.mid_block2, "mid_block.resnets.1")
    for i, blocks in enumerate(net.up_blocks):
        for j, block in enumerate(blocks):
            w.resblock(block, f"up_blocks.{i}.resnets.{j}")
        if net.up_attns[i] is not None:
            w.attention(net.up_attns[i], f"up_blocks.{i}.attentions.0")
        if i < len(net.upsamplers):
            w.norm(net.up_skip_norms[i], f"up_blocks.{i}.skip_norm")
            w.conv(net.up_skip_convs[i], f"up_blocks.{i}.skip_conv")
            w.resblock(net.upsamplers[i], f"up_blocks.{i}.resnet_up")
    w.norm(net.norm_out, "conv_norm_out")
    w.conv(net.conv_out, "conv_out")


def load_weights(network, state, source="state dict"):
    """Copies a ``UNet2DModel`` state dict into a network made by ``unet_from_config``.

    Args:
        network: a ``kdiff.models.UNet`` or ``NCSNpp`` matching the checkpoint's config.
        state: key → array (torch layout; either attention naming, either
            ``time_proj`` naming).
        source: the file it came from, for error messages.

    Raises:
        ValueError: naming the key for a missing, unused or misshapen weight; the network
            is left unchanged then.
    """
    from kdiff.models import NCSNpp

    weights = _Weights(_normalized_keys(state), source)
    (_map_ncsnpp if isinstance(network, NCSNpp) else _map_unet)(weights, network)
    weights.finish()


# --------------------------------------------------------------------------- sampling settings

# The sampler that runs each scheduler's steps (a DDPMPipeline loops its scheduler's `step`).
_SCHEDULER_SAMPLERS = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim", "DPMSolverMultistepScheduler": "dpm_solver",
                       "ScoreSdeVeScheduler": "predictor_corrector"}
# Pipelines that build their own scheduler from the config, whatever its class.
_PIPELINE_SAMPLERS = {"DDIMPipeline": "ddim"}
# The sampling settings of DDPMScheduler / DDIMScheduler / DPMSolverMultistepScheduler and their defaults
# (what from_config gives a key the config lacks).
_DDPM_SAMPLING = {"clip_sample": True, "clip_sample_range": 1.0, "timestep_spacing": "leading", "steps_offset": 0,
                  "thresholding": False}
_DDIM_SAMPLING = {**_DDPM_SAMPLING, "set_alpha_to_one": True}
_DPM_SAMPLING = {"solver_order": 2, "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": True,
                 "final_sigmas_type": "zero", "timestep_spacing": "linspace", "thresholding": False,
                 "euler_at_final": False, "use_karras_sigmas": False, "use_exponential_sigmas": False,
                 "use_beta_sigmas": False, "use_lu_lambdas": False, "use_flow_sigmas": False,
                 "lambda_min_clipped": -math.inf}
_VE_SAMPLING = {"snr": 0.15, "sampling_eps": 1e-5, "correct_steps": 1}
_DDPM_VARIANCES = {None: "beta_tilde", "fixed_small": "beta_tilde", "fixed_small_log": "beta_tilde",
                   "fixed_large": "beta", "fixed_large_log": "beta", "learned_range": "learned"}


def _settings(config, defaults):
    return {key: config.get(key, default) for key, default in defaults.items()}


def _clip(settings):
    """``clip_x0`` of ``clip_sample`` / ``clip_sample_range``: ±range, or None for no clipping."""
    return float(settings["clip_sample_range"]) if settings["clip_sample"] else None


def _spacing(settings, source):
    spacing = settings["timestep_spacing"]
    from kdiff.samplers.ddpm_ddim import SPACINGS

    if spacing not in SPACINGS:
        raise _config_error("timestep_spacing", f"in {list(SPACINGS)}", spacing, source)
    return spacing


def _ddpm_family_defaults(config, source, unmatched):
    """The ``ddpm`` and ``ddim`` defaults of a DDPM / DDIM / DPM-Solver scheduler config:
    DDPMScheduler.from_config's and DDIMScheduler.from_config's settings (DDIMPipeline's
    η = 0 and network ε: the ``ddim_50`` recipe's options)."""
    from kdiff.samplers import recipes

    ddpm = _settings(config, _DDPM_SAMPLING)
    ddim = _settings(config, _DDIM_SAMPLING)
    if ddpm["thresholding"]:
        unmatched.append("thresholding=True (kdiff has no dynamic thresholding; x̂₀ is clipped as clip_sample says)")
    variance = config.get("variance_type", "fixed_small")
    return {
        "ddpm": {**recipes.get("ddpm_1000").options, "variance": _DDPM_VARIANCES.get(variance, "beta_tilde"),
                 "spacing": _spacing(ddpm, source), "steps_offset": int(ddpm["steps_offset"]), "clip_x0": _clip(ddpm)},
        "ddim": {**recipes.get("ddim_50").options, "spacing": _spacing(ddim, source),
                 "steps_offset": int(ddim["steps_offset"]), "final_alpha_one": bool(ddim["set_alpha_to_one"]),
                 "clip_x0": _clip(ddim)},
    }


def _dpm_defaults(config, unmatched):
    """``dpm_solver``'s defaults for a DPMSolverMultistepScheduler config (no clipping, as diffusers')."""
    from kdiff.samplers.dpm_multistep import DPM_ALGORITHMS, DPM_SOLVER_TYPES, DPM_SPACINGS

    dpm = _settings(config, _DPM_SAMPLING)
    options = {"order": int(dpm["solver_order"]), "lower_order_final": bool(dpm["lower_order_final"]),
               "final_sigma_zero": dpm["final_sigmas_type"] == "zero", "clip_x0": None}
    if dpm["algorithm_type"] in DPM_ALGORITHMS:
        options["algorithm"] = dpm["algorithm_type"]
    else:
        unmatched.append(f"algorithm_type={dpm['algorithm_type']!r} (kdiff's dpm_solver runs {list(DPM_ALGORITHMS)}; "
                         "it keeps 'dpmsolver++')")
    if dpm["solver_type"] in DPM_SOLVER_TYPES:
        options["solver_type"] = dpm["solver_type"]
    if dpm["timestep_spacing"] in DPM_SPACINGS:
        options["spacing"] = dpm["timestep_spacing"]
        options["steps_offset"] = int(config.get("steps_offset", 0))
    else:
        unmatched.append(f"timestep_spacing={dpm['timestep_spacing']!r} (kdiff's dpm_solver walks 'linspace')")
    for key in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas",
                "euler_at_final", "thresholding"):
        if dpm[key]:
            unmatched.append(f"{key}=True (kdiff's dpm_solver has no such option)")
    if dpm["lambda_min_clipped"] is not None and math.isfinite(float(dpm["lambda_min_clipped"])):
        unmatched.append(f"lambda_min_clipped={dpm['lambda_min_clipped']!r} (kdiff's dpm_solver does not clip λ)")
    return options


def sampling_defaults(config, pipeline=None, source="scheduler_config.json"):
    """The sampling defaults a diffusers scheduler config gives the imported kdiff model.

    Each sampler that stands for a diffusers scheduler gets the settings that scheduler
    would have, built from this config (``from_config``): ``ddpm`` those of
    ``DDPMScheduler`` (``variance_type``, ``timestep_spacing``, ``steps_offset``, clipping),
    ``ddim`` those of ``DDIMScheduler`` with ``DDIMPipeline``'s η = 0 and network ε (the
    ``ddim_50`` recipe's options; also ``set_alpha_to_one``), ``dpm_solver`` — for a
    ``DPMSolverMultistepScheduler`` only — its solver settings without clipping, and
    ``predictor_corrector`` — for a ``ScoreSdeVeScheduler`` — ``ScoreSdeVePipeline``'s loop
    (the ``score_sde_ve_pc`` recipe's options) with the config's ``snr``,
    ``sampling_eps`` and ``correct_steps``.

    Args:
        config: the scheduler's config dict (with ``_class_name``).
        pipeline: the pipeline class of the checkpoint (``model_index.json``'s
            ``_class_name``), or None; a ``DDIMPipeline`` samples with DDIM whatever its
            scheduler.
        source: where the config came from, for messages.

    Returns:
        ``(default_sampler, sampler_defaults, unmatched)``: the sampler name, ``{sampler:
        {option: value}}`` and a list of the settings kdiff cannot reproduce (each with
        what kdiff does instead).

    Raises:
        ValueError: an unknown scheduler class or ``timestep_spacing``, naming it.
    """
    from kdiff.samplers import recipes

    name = config.get("_class_name")
    if name not in _SCHEDULER_SAMPLERS:
        raise _config_error("_class_name", f"one of {sorted(_SCHEDULER_SAMPLERS)}", name, source)
    default = _PIPELINE_SAMPLERS.get(pipeline, _SCHEDULER_SAMPLERS[name])
    unmatched = []
    if name in _VE_SCHEDULERS:
        ve = _settings(config, _VE_SAMPLING)
        pc = {**recipes.get("score_sde_ve_pc").options, "snr": float(ve["snr"]), "eps": float(ve["sampling_eps"]),
              "n_corrector": int(ve["correct_steps"])}
        return default, {"predictor_corrector": pc}, unmatched
    defaults = _ddpm_family_defaults(config, source, unmatched)
    if name == "DPMSolverMultistepScheduler":
        defaults["dpm_solver"] = _dpm_defaults(config, unmatched)
    return default, defaults, unmatched


def _pipeline_class(model_dir):
    """The ``_class_name`` of the pipeline whose ``unet/`` is ``model_dir`` (None for a bare model)."""
    index = os.path.join(os.path.dirname(os.path.abspath(model_dir)), "model_index.json")
    return _read_json(index).get("_class_name") if os.path.isfile(index) else None


# --------------------------------------------------------------------------- models


_SCHEDULER_DEFAULTS = {**{name: _DDPM_DEFAULTS for name in _DDPM_SCHEDULERS},
                       **{name: _VE_DEFAULTS for name in _VE_SCHEDULERS}}
# The scheduler class names ``scheduler=`` takes for that scheduler's defaults.
SCHEDULER_NAMES = tuple(sorted(_SCHEDULER_DEFAULTS))


def _no_scheduler_error(model_dir):
    """The ValueError for a model folder without a scheduler: where kdiff looked, how to pass one."""
    looked = [os.path.relpath(p, model_dir) for p in _scheduler_candidates(model_dir)]
    return ValueError(
        f"Expected a scheduler for the diffusers model in {model_dir!r} (as DDPMPipeline.from_pretrained "
        f"needs one). Received: no {' or '.join(looked)} there. Pass it: scheduler= a scheduler_config.json "
        "(or its folder), its dict, a diffusers scheduler, or 'DDPMScheduler' for DDPMScheduler()'s defaults "
        "(linear betas 1e-4 to 0.02, num_train_timesteps=1000; 'ScoreSdeVeScheduler' for an NCSN++ model); "
        "with kdiff convert: --scheduler PATH|DDPMScheduler"
    )


def _scheduler_file(path):
    """The scheduler_config.json that ``scheduler=`` names.

    Args:
        path: the file itself, or a folder holding it (directly or in ``scheduler/``).

    Returns:
        The file's path.

    Raises:
        ValueError: naming ``path`` when there is no such file.
    """
    if os.path.isdir(path):
        for candidate in (os.path.join(path, "scheduler_config.json"),
                          os.path.join(path, "scheduler", "scheduler_config.json")):
            if os.path.isfile(candidate):
                return candidate
        raise ValueError(
            f"Expected `scheduler` to be a scheduler_config.json or a folder holding one. Received: "
            f"scheduler={path!r}, a folder without scheduler_config.json"
        )
    if not os.path.isfile(path):
        raise ValueError(
            f"Expected `scheduler` to be a scheduler_config.json (or its folder), a dict, a diffusers "
            f"scheduler or one of {sorted(_SCHEDULER_DEFAULTS)}. Received: scheduler={path!r}, no such file"
        )
    return path


def _given_scheduler(scheduler):
    """(config, source) of a ``scheduler=`` argument: a class name, a path, a dict or a diffusers scheduler.

    Args:
        scheduler: "DDPMScheduler" / "DDIMScheduler" / "ScoreSdeVeScheduler" (that
            scheduler's defaults), the path of a scheduler_config.json or its folder, a
            config dict with ``_class_name``, or a diffusers scheduler (its ``.config``).

    Returns:
        The config dict and a label of where it came from, for messages.
    """
    if isinstance(scheduler, str) and scheduler in _SCHEDULER_DEFAULTS:
        return {"_class_name": scheduler}, f"{scheduler}'s defaults"
    if isinstance(scheduler, (str, os.PathLike)):
        path = _scheduler_file(os.fspath(scheduler))
        return _read_json(path), path
    if isinstance(scheduler, dict):
        if "_class_name" not in scheduler:
            raise ValueError(
                f"Expected a scheduler dict with `_class_name` (one of {sorted(_SCHEDULER_DEFAULTS)}), as in "
                f"scheduler_config.json. Received: keys {sorted(scheduler)}"
            )
        return dict(scheduler), "the scheduler dict"
    config = getattr(scheduler, "config", None)
    if config is None or not hasattr(config, "items"):
        raise ValueError(
            f"Expected `scheduler` to be a scheduler_config.json (or its folder), a dict, a diffusers "
            f"scheduler or one of {sorted(_SCHEDULER_DEFAULTS)}. Received: {type(scheduler).__name__}"
        )
    name = type(scheduler).__name__
    return {**dict(config.items()), "_class_name": name}, f"the {name} given"


def _scheduler_config(scheduler, found, model_dir):
    """(config, source): the scheduler given, else the one found with the model, else an error.

    Args:
        scheduler: ``from_diffusers``' ``scheduler`` argument (None: the checkpoint's).
        found: the scheduler_config.json found with the model, or None.
        model_dir: the model folder, for the message.

    Returns:
        The scheduler's config dict and where it came from (a path or a label).

    Raises:
        ValueError: no scheduler given or found (naming the folder and how to pass one),
            or a ``scheduler`` of an unknown kind.
    """
    if scheduler is not None:
        return _given_scheduler(scheduler)
    if found is None:
        raise _no_scheduler_error(model_dir)
    return _read_json(found), found


def _scheduler(config, source):
    """(kind, config) of a scheduler config: "ddpm" or "ve", its missing keys the defaults."""
    name = config.get("_class_name")
    if name in _DDPM_SCHEDULERS:
        return "ddpm", {**_DDPM_DEFAULTS, **config}
    if name in _VE_SCHEDULERS:
        return "ve", {**_VE_DEFAULTS, **config}
    raise _config_error("_class_name", f"one of {list(_DDPM_SCHEDULERS + _VE_SCHEDULERS)}", name, source)


def from_diffusers(path, *, scheduler=None, revision=None, variant=None, **model_kwargs):
    """A diffusers ``UNet2DModel`` checkpoint and its scheduler as a kdiff model.

    Args:
        path: a local folder in the Hugging Face layout — a pipeline (``model_index.json``,
            ``unet/``, ``scheduler/``), a model (``config.json``, weights, and
            ``scheduler_config.json`` or ``scheduler/``; a pipeline's ``unet/`` takes the
            pipeline's ``../scheduler/``) — or a hub id such as
            "google/ddpm-celebahq-256", downloaded with ``huggingface_hub`` (where there is
            internet).
        scheduler: the scheduler, for a checkpoint without one or to override its own: the
            path of a ``scheduler_config.json`` (or its folder), its dict (with
            ``_class_name``), a diffusers scheduler object, or a scheduler class name —
            "DDPMScheduler" / "DDIMScheduler" / "DPMSolverMultistepScheduler" (diffusers'
            defaults: linear betas 1e-4 to 0.02 over 1000 steps) or "ScoreSdeVeScheduler".
            None: the checkpoint's own. Its sampling settings become the model's sampling
            defaults (``sampling_defaults``; a given scheduler decides the default sampler
            even for a ``DDIMPipeline`` folder).
        revision: the hub revision (branch, tag or commit) of a hub id.
        variant: the weights file variant ("fp16" reads ``….fp16.safetensors``).
        **model_kwargs: more ``kdiff.DDPM`` / ``kdiff.ScoreSDE`` arguments (``ema_decay``,
            ``seed``, …; ``default_sampler`` / ``sampler_defaults`` replace the scheduler's).

    Returns:
        ``kdiff.DDPM`` (``DDPMScheduler`` / ``DDIMScheduler`` / ``DPMSolverMultistepScheduler``:
        the scheduler's betas exactly) or ``kdiff.ScoreSDE`` (``ScoreSdeVeScheduler``:
        ``VESDE(sigma_min, sigma_max, num_train_timesteps)``, σ conditioning, data in [0, 1]
        for ``center_input_sample`` models); ``network`` and ``ema_network`` both hold the
        checkpoint's weights; ``default_sampler`` and ``sampler_defaults`` are the
        scheduler's (``sampling_defaults``), so that ``kdiff.sample(model, n)`` and
        ``kdiff.sample(model, n, sampler="ddim", steps=k)`` sample as the source's scheduler
        and ``DDIMPipeline`` do.

    Warns:
        UserWarning: naming the scheduler settings kdiff cannot reproduce (e.g. DPM-Solver's
            ``use_karras_sigmas``, dynamic ``thresholding``).

    Raises:
        ValueError: naming the file and key for a missing or unreadable file, an
            unsupported model or scheduler, or weights that disagree with the config; a
            checkpoint without a scheduler and no ``scheduler`` (naming the folder and the
            ways to pass one: kdiff does not guess the noise schedule).
    """
    import kdiff
    from kdiff import schedules, sde

    model_dir, scheduler_path = _locate(path, revision)
    config_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"Expected the model's config.json. Received: no file {config_path!r}")
    config = _read_json(config_path)
    scheduler_config, source = _scheduler_config(scheduler, scheduler_path, model_dir)
    _scheduler(scheduler_config, source)  # a scheduler kdiff does not read fails here, naming the ones it does
    default_sampler, sampler_defaults, unmatched = sampling_defaults(
        scheduler_config, None if scheduler is not None else _pipeline_class(model_dir), source)
    if unmatched:
        warnings.warn(
            f"kdiff cannot reproduce every sampling setting of the scheduler in {source!r}: " + "; ".join(unmatched)
            + ". The model samples without them.",
            UserWarning, stacklevel=2,
        )
    model_kwargs.setdefault("default_sampler", default_sampler)
    model_kwargs.setdefault("sampler_defaults", sampler_defaults)
    kind, scheduler_config = _scheduler(scheduler_config, source)
    learned = scheduler_config.get("variance_type") == "learned_range"
    network = unet_from_config(config, config_path, learned_variance=learned)
    state, weights_file = read_state_dict(model_dir, variant)
    load_weights(network, state, weights_file)

    fourier = getattr(network, "embedding", None) == "fourier"
    if kind == "ddpm":
        if fourier:
            raise ValueError(
                f"Expected a ScoreSdeVeScheduler for a Fourier-feature (NCSN++) model, which "
                f"takes σ. Received: {scheduler_config.get('_class_name')} in {source!r}"
            )
        _require(scheduler_config, "prediction_type", ("epsilon",), source,
                 "'epsilon' (kdiff's DDPM predicts ε)")
        _require(scheduler_config, "variance_type",  # None: a DPMSolverMultistepScheduler's ε-only model
                 ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned_range", None),
                 source)
        betas = diffusers_betas(scheduler_config, source)
        schedule = schedules.Schedule(betas.astype(np.float64))
        if getattr(network, "num_classes", None) is not None:  # num_class_embeds
            model_kwargs.setdefault("num_classes", network.num_classes)
        return kdiff.DDPM(network, schedule, loss="hybrid" if learned else "simple", **model_kwargs)
    ve = sde.VESDE(sigma_min=float(scheduler_config["sigma_min"]),
                   sigma_max=float(scheduler_config["sigma_max"]),
                   N=int(scheduler_config["num_train_timesteps"]))
    model_kwargs.setdefault("eps", float(scheduler_config["sampling_eps"]))
    if getattr(network, "center_input", False):
        model_kwargs.setdefault("data_range", (0.0, 1.0))
    return kdiff.ScoreSDE(network, ve, conditioning="sigma", **model_kwargs)


def describe_source(path, *, scheduler=None, revision=None):
    """Where a diffusers checkpoint comes from, as ``kdiff convert`` records it in an export.

    Args:
        path: what ``from_diffusers`` was given: a local folder or a hub id.
        scheduler: what ``from_diffusers`` was given as ``scheduler`` (None: the
            checkpoint's own).
        revision: the hub revision of a hub id.

    Returns:
        A dict: ``kind`` "diffusers", ``path`` (the absolute folder, or the hub id as
        given), ``revision`` (hub ids), ``model_type`` and ``scheduler_type`` (the configs'
        ``_class_name``), ``scheduler_source`` (the scheduler_config.json read, or how the
        scheduler was given), ``diffusers_version`` (the model config's
        ``_diffusers_version``) and ``config`` (the model's config.json).

    Raises:
        ValueError: as ``from_diffusers``, for a path that is not a diffusers checkpoint
            or has no scheduler.
    """
    given = os.fspath(path)
    model_dir, scheduler_path = _locate(given, revision)
    config = _read_json(os.path.join(model_dir, "config.json"))
    scheduler_config, scheduler_source = _scheduler_config(scheduler, scheduler_path, model_dir)
    if os.path.isfile(scheduler_source):
        scheduler_source = os.path.abspath(scheduler_source)
    local = os.path.exists(given)
    info = {
        "kind": "diffusers",
        "path": os.path.abspath(given) if local else given,
        "model_type": config.get("_class_name"),
        "scheduler_type": scheduler_config.get("_class_name"),
        "scheduler_source": scheduler_source,
        "diffusers_version": config.get("_diffusers_version"),
        "config": config,
    }
    if not local:
        info["revision"] = revision
    return info
