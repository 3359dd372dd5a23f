"""From a run's config to a compiled kdiff model: the family, its network preset, its process.

``build_model(params, image_shape)`` reads the ``RunConfig`` fields the train stage
passes (``family``, ``network``, ``base_channels``, ``schedule``, ``T``, ``loss``,
``sigma_max``, ``sigma_min``, ``num_sigmas``, ``sde``, ``sde_N``, ``learning_rate``,
``warmup_steps``, ``ema_decay``, ``seed``, ``data_range``) and returns a compiled
``kdiff.DDPM``, ``kdiff.NCSN`` or ``kdiff.ScoreSDE``. Call it inside
``strategy.scope()`` and after ``kdiff.distribute.set_precision``.

Network presets:

``unet_small``
    ``kdiff.models.UNet.small``: ch 32 (or ``base_channels``), mult (1, 2), 2 blocks,
    attention at half the image size — CPU-sized.
``unet_ddpm_cifar10``
    Ho et al.'s CIFAR-10 layout (ch 128, mult (1, 2, 2, 2), attention at 16, dropout
    0.1) at the run's image size; attention at half the image size when 16 is not one of
    the network's resolutions.
``unet_improved``
    Improved DDPM / ADM's CIFAR-10 layout with a learned variance (trained with the
    hybrid loss): AdaGN, BigGAN resampling, 64-channel heads.
``ncsn_small`` / ``ncsn_cifar10``
    NCSN's RefineNet (ngf 16 / 128, or ``base_channels``), one class per noise level.

A U-Net with ``loss="hybrid"`` learns its variance (twice the output channels).
"""

from __future__ import annotations

import math

UNET_PRESETS = ("unet_small", "unet_ddpm_cifar10", "unet_improved")
NCSN_PRESETS = ("ncsn_small", "ncsn_cifar10")
NETWORKS = UNET_PRESETS + NCSN_PRESETS

# family → the networks it accepts, and the losses it trains with (first: the default)
FAMILY_NETWORKS = {"ddpm": UNET_PRESETS, "ncsn": NCSN_PRESETS, "sde": ("unet_small", "unet_ddpm_cifar10")}
FAMILY_LOSSES = {"ddpm": ("simple", "hybrid"), "ncsn": ("dsm", "ssm"), "sde": ("sde_dsm",)}
SCHEDULES = ("linear", "cosine")
SDES = ("vp", "subvp", "ve")

_GROUPS = 32  # the U-Net's GroupNorm groups: every level's channels must be a multiple


def _get(params, name, default=None):
    value = params.get(name, default)
    return default if value is None else value


def resolve_loss(family, network, loss):
    """The loss a family trains with: the config's, or the family's default.

    Args:
        family: "ddpm", "ncsn" or "sde".
        network: the network preset.
        loss: the config's ``loss`` (None: the default).

    Returns:
        The loss name ("sde_dsm" for the SDE family, whose loss is fixed).
    """
    if family == "sde":
        if loss not in (None, "sde_dsm", "dsm"):
            raise ValueError(
                "Expected no `loss` for family='sde' (score-based SDE models train with the "
                f"denoising score matching loss of their SDE). Received: loss={loss!r}"
            )
        return "sde_dsm"
    if loss is None:
        return "hybrid" if network == "unet_improved" else FAMILY_LOSSES[family][0]
    if loss not in FAMILY_LOSSES[family]:
        raise ValueError(
            f"Expected `loss` in {list(FAMILY_LOSSES[family])} for family={family!r}. Received: loss={loss!r}"
        )
    if network == "unet_improved" and loss != "hybrid":
        raise ValueError(
            "Expected loss='hybrid' with network='unet_improved' (it learns the variance, which "
            f"the hybrid loss trains). Received: loss={loss!r}; use network='unet_small' or "
            "'unet_ddpm_cifar10' for the simple loss."
        )
    return loss


def _check_network(family, network):
    if network not in NETWORKS:
        raise ValueError(f"Expected `network` in {list(NETWORKS)}. Received: network={network!r}")
    if network not in FAMILY_NETWORKS[family]:
        hint = {
            "ddpm": "a U-Net preset (unet_small, unet_ddpm_cifar10, unet_improved)",
            "ncsn": "an NCSN preset (ncsn_small, ncsn_cifar10)",
            "sde": "unet_small or unet_ddpm_cifar10 (a learned variance belongs to DDPM)",
        }[family]
        raise ValueError(
            f"Expected `network` for family={family!r} to be {hint}. Received: network={network!r}"
        )


def _attention_at(image_size, levels, wanted):
    """The wanted attention resolutions the network has; else half the image size."""
    resolutions = [image_size // 2**i for i in range(levels)]
    chosen = tuple(r for r in wanted if r in resolutions)
    return chosen or (resolutions[min(1, levels - 1)],)


def build_network(params, image_shape, *, loss=None):
    """The network a config asks for.

    Args:
        params: config fields (``family``, ``network``, ``base_channels``, ``num_sigmas``).
        image_shape: (height, width, channels) of the training images (square).
        loss: the resolved loss (a U-Net learns its variance for "hybrid").

    Returns:
        A ``kdiff.models.UNet`` or ``kdiff.models.NCSN``.
    """
    from kdiff.models import NCSN, UNet

    family = _get(params, "family", "ddpm")
    network = _get(params, "network", "ncsn_small" if family == "ncsn" else "unet_small")
    _check_network(family, network)
    height, width, channels = (int(d) for d in image_shape)
    if height != width:
        raise ValueError(f"Expected square images for the {network} network. Received: image_shape={image_shape!r}")
    size = height
    base = params.get("base_channels")
    if base is not None and (isinstance(base, bool) or not isinstance(base, int) or base < 1):
        raise ValueError(f"Expected `base_channels` to be an integer >= 1 or None. Received: {base!r}")

    if network in NCSN_PRESETS:
        levels = int(_get(params, "num_sigmas", 10))
        overrides = {} if base is None else {"ngf": base}
        factory = NCSN.small if network == "ncsn_small" else NCSN.cifar10
        return factory(image_size=size, in_channels=channels, num_classes=levels, **overrides)

    if base is not None and base % _GROUPS:
        raise ValueError(
            f"Expected `base_channels` divisible by {_GROUPS} for a U-Net (its GroupNorm groups). "
            f"Received: base_channels={base}"
        )
    learned = loss == "hybrid"
    overrides = {} if base is None else {"base_channels": base}
    if network == "unet_small":
        return UNet.small(image_size=size, in_channels=channels, learned_variance=learned, **overrides)
    if network == "unet_ddpm_cifar10":
        _check_divisible(size, 4, network)
        return UNet.ddpm_cifar10(
            image_size=size, in_channels=channels, learned_variance=learned,
            attention_resolutions=_attention_at(size, 4, (16,)), **overrides,
        )
    _check_divisible(size, 4, network)
    channels_first = base if base is not None else 128
    return UNet.improved_cifar10(
        image_size=size, in_channels=channels, attention_resolutions=_attention_at(size, 4, (32, 16, 8)),
        head_channels=math.gcd(64, channels_first), **overrides,
    )


def _check_divisible(size, levels, network):
    factor = 2 ** (levels - 1)
    if size % factor:
        raise ValueError(
            f"Expected `image_size` divisible by {factor} for network={network!r} ({levels} resolution "
            f"levels). Received: image_size={size}; use unet_small or another image size."
        )


def build_process(params, image_shape=None, data_range=(-1.0, 1.0)):
    """The family's process: a β schedule (DDPM), σ's (NCSN) or an SDE (ScoreSDE).

    For a VE SDE, σ_max is at least the largest possible distance between two images in
    ``data_range`` (Song & Ermon 2020's first technique), since NCSN's default σ_max = 1
    is far too small for it.

    Args:
        params: config fields (``family``, ``schedule``, ``T``, ``sigma_max``,
            ``sigma_min``, ``num_sigmas``, ``sde``, ``sde_N``).
        image_shape: (height, width, channels), for the VE SDE's σ_max.
        data_range: (low, high) of the data.

    Returns:
        A ``kdiff.schedules.Schedule``, a σ array or a ``kdiff.sde.SDE``.
    """
    from kdiff import schedules
    from kdiff import sde as sde_lib

    family = _get(params, "family", "ddpm")
    if family == "ddpm":
        name, T = _get(params, "schedule", "linear"), int(_get(params, "T", 1000))
        if name not in SCHEDULES:
            raise ValueError(f"Expected `schedule` in {list(SCHEDULES)}. Received: schedule={name!r}")
        return schedules.linear(T=T) if name == "linear" else schedules.cosine(T=T)
    sigma_max = float(_get(params, "sigma_max", 1.0))
    sigma_min = float(_get(params, "sigma_min", 0.01))
    if not 0 < sigma_min < sigma_max:
        raise ValueError(
            "Expected 0 < `sigma_min` < `sigma_max`. "
            f"Received: sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
        )
    if family == "ncsn":
        num = int(_get(params, "num_sigmas", 10))
        if num < 2:
            raise ValueError(f"Expected `num_sigmas` >= 2. Received: num_sigmas={num!r}")
        return schedules.geometric_sigmas(sigma_max, sigma_min, num)
    name, N = _get(params, "sde", "vp"), int(_get(params, "sde_N", 1000))
    if name not in SDES:
        raise ValueError(f"Expected `sde` in {list(SDES)}. Received: sde={name!r}")
    if name == "vp":
        return sde_lib.VPSDE(N=N)
    if name == "subvp":
        return sde_lib.SubVPSDE(N=N)
    if image_shape is not None:
        low, high = data_range
        sigma_max = max(sigma_max, (high - low) * math.sqrt(math.prod(int(d) for d in image_shape)))
    return sde_lib.VESDE(sigma_min=sigma_min, sigma_max=sigma_max, N=N)


def make_optimizer(params):
    """Adam with a warm-up from learning_rate/10 over ``warmup_steps`` (kdiff.optim.adam)."""
    from kdiff import optim

    learning_rate = float(_get(params, "learning_rate", 2e-4))
    if not learning_rate > 0:
        raise ValueError(f"Expected `learning_rate` > 0. Received: learning_rate={learning_rate!r}")
    warmup_steps = int(_get(params, "warmup_steps", 0))
    return optim.adam(learning_rate, warmup_steps=warmup_steps, warmup_from=learning_rate / 10)


def build_model(params, image_shape):
    """A compiled ``kdiff.DDPM`` / ``NCSN`` / ``ScoreSDE`` from a run's config.

    The network's initial weights come from ``seed`` (``keras.utils.set_random_seed``),
    as does the training noise.

    Args:
        params: a dict of ``RunConfig`` fields (a ``RunConfig.section``), optionally with
            ``data_range`` (default: (0, 1) for NCSN, (−1, 1) otherwise).
        image_shape: (height, width, channels) of the training images.

    Returns:
        The compiled model.

    Raises:
        ValueError: on an unknown family, network preset, schedule or SDE, or a network
            that does not fit the family or loss.
    """
    import keras

    import kdiff

    family = _get(params, "family", "ddpm")
    if family not in FAMILY_NETWORKS:
        raise ValueError(f"Expected `family` in {list(FAMILY_NETWORKS)}. Received: family={family!r}")
    network_name = _get(params, "network", "ncsn_small" if family == "ncsn" else "unet_small")
    _check_network(family, network_name)
    loss = resolve_loss(family, network_name, params.get("loss"))
    data_range = tuple(float(v) for v in _get(params, "data_range", (0.0, 1.0) if family == "ncsn" else (-1.0, 1.0)))
    seed = int(_get(params, "seed", 0))
    process = build_process(params, image_shape, data_range)  # its errors come before the slow build
    keras.utils.set_random_seed(seed)
    network = build_network(params, image_shape, loss=loss)
    common = {
        "image_shape": tuple(int(d) for d in image_shape),
        "ema_decay": float(_get(params, "ema_decay", 0.999)),
        "seed": seed,
        "data_range": data_range,
    }
    if family == "ddpm":
        model = kdiff.DDPM(network, process, loss=loss, **common)
    elif family == "ncsn":
        model = kdiff.NCSN(network, process, loss=loss, **common)
    else:
        model = kdiff.ScoreSDE(network, process, **common)
    model.compile(optimizer=make_optimizer(params))
    return model
