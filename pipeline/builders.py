"""From a run's config to a compiled kdiff model: the family, its network preset, its process.

``build_model(params, image_shape)`` reads the ``RunConfig`` fields the train stage
passes (``family``, ``network``, ``base_channels``, ``schedule``, ``T``, ``loss``,
``sigma_max``, ``sigma_min``, ``num_sigmas``, ``sde``, ``sde_N``, ``learning_rate``,
``warmup_steps``, ``ema_decay``, ``precision``, ``seed``, ``data_range``) and returns a
compiled ``kdiff.DDPM``, ``kdiff.NCSN`` or ``kdiff.ScoreSDE``; call it inside
``strategy.scope()``. A field the params lack takes its ``RunConfig`` default
(``pipeline.config.resolve``: one source of defaults and checks); ``precision`` becomes
the network's and model's Keras dtype policy (no global policy is set) and ``seed``
alone decides the initial weights (no global RNG is left reseeded).

Network presets:

``unet_small``
    ``kdiff.models.UNet.small``: ch 32 (or ``base_channels``), mult (1, 2), 2 blocks,
    attention at half the image size — CPU-sized.
``unet_medium``
    Ho et al.'s layout scaled down for 28–32 pixel images on a CPU (about 2.7M parameters
    at 32×32×1): ch 32 (or ``base_channels``), mult (1, 2, 4), 1 block, attention at 8×8
    (at half the image size when 8 is not one of its resolutions).
``unet_ddpm_cifar10``
    Ho et al.'s CIFAR-10 layout (ch 128, mult (1, 2, 2, 2), attention at 16, dropout
    0.1) at the run's image size; attention at half the image size when 16 is not one of
    the network's resolutions.
``unet_improved``
    Improved DDPM / ADM's CIFAR-10 layout with a learned variance (trained with the
    hybrid loss): AdaGN, BigGAN resampling, 64-channel heads.
``ncsn_small`` / ``ncsn_cifar10``
    NCSN's RefineNet (ngf 16 / 128, or ``base_channels``), one class per noise level.
``ncsnpp_small``
    Song et al.'s NCSN++ (``kdiff.models.NCSNpp``) scaled down, for family ``sde``:
    channels ch, 2·ch, 2·ch with ch 32 (or ``base_channels``), 1 block, attention at 8×8
    (or half the image size), Fourier features of log σ (σ conditioning), its input
    taken as is (the pipeline's data range, not NCSN++'s 2x − 1 mapping).

A U-Net with ``loss="hybrid"`` learns its variance (twice the output channels).
"""

from __future__ import annotations

import contextlib
import math
import random

from pipeline import config as config_lib
from pipeline.config import (  # noqa: F401 - the choices live with the config; re-exported
    FAMILY_LOSSES,
    FAMILY_NETWORKS,
    NCSN_PRESETS,
    NETWORKS,
    SCHEDULES,
    SDES,
    UNET_PRESETS,
    resolve_loss,
)

# The fields each builder reads (filled with their RunConfig defaults and checked).
NETWORK_FIELDS = ("family", "network", "base_channels", "num_res_blocks", "num_sigmas", "precision")
PROCESS_FIELDS = ("family", "schedule", "T", "sigma_max", "sigma_min", "num_sigmas", "sde", "sde_N")
OPTIMIZER_FIELDS = ("learning_rate", "warmup_steps", "warmup_from", "lr_decay", "train_steps", "epochs")
MODEL_FIELDS = tuple(
    dict.fromkeys(
        NETWORK_FIELDS + PROCESS_FIELDS + OPTIMIZER_FIELDS
        + ("loss", "ema_decay", "class_conditional", "label_dropout", "seed")
    )
)


def _attention_at(image_size, levels, wanted):
    """The wanted attention resolutions the network has; else half the image size."""
    resolutions = [image_size // 2**i for i in range(levels)]
    chosen = tuple(r for r in wanted if r in resolutions)
    return chosen or (resolutions[min(1, levels - 1)],)


def build_network(params, image_shape, *, loss=None, num_classes=None):
    """The network a config asks for.

    Args:
        params: config fields (``family``, ``network``, ``base_channels``,
            ``num_res_blocks``, ``num_sigmas``, ``precision``: the network's dtype policy).
        image_shape: (height, width, channels) of the training images (square).
        loss: the resolved loss (a U-Net learns its variance for "hybrid").
        num_classes: a U-Net's class embeddings (None: unconditional).

    Returns:
        A ``kdiff.models.UNet`` or ``kdiff.models.RefineNet``.
    """
    from kdiff import distribute
    from kdiff.models import NCSNpp, RefineNet, UNet

    params = config_lib.resolve(params, NETWORK_FIELDS)
    family, network = params["family"], params["network"]
    config_lib.check_network(family, network)
    height, width, channels = (int(d) for d in image_shape)
    if height != width:
        raise ValueError(f"Expected square images for the {network} network. Received: image_shape={image_shape!r}")
    size = height
    base = params["base_channels"]
    dtype = distribute.precision_policy(params["precision"])

    if network in NCSN_PRESETS:
        levels = params["num_sigmas"]
        overrides = {"dtype": dtype} if base is None else {"ngf": base, "dtype": dtype}
        factory = RefineNet.small if network == "ncsn_small" else RefineNet.cifar10
        return factory(image_size=size, in_channels=channels, num_classes=levels, **overrides)

    config_lib.check_base_channels(network, base)
    learned = loss == "hybrid"
    overrides = {"dtype": dtype} if base is None else {"base_channels": base, "dtype": dtype}
    if params["num_res_blocks"] is not None:
        overrides["num_res_blocks"] = params["num_res_blocks"]
    if num_classes is not None:
        overrides["num_classes"] = int(num_classes)
    if network == "unet_small":
        return UNet.small(image_size=size, in_channels=channels, learned_variance=learned, **overrides)
    if network == "unet_medium":
        _check_divisible(size, 3, network)
        return UNet.small(
            image_size=size, in_channels=channels, learned_variance=learned, channel_mult=(1, 2, 4),
            attention_resolutions=_attention_at(size, 3, (8,)), **{"num_res_blocks": 1, **overrides},
        )
    if network == "ncsnpp_small":
        _check_divisible(size, 3, network)
        width = 32 if base is None else base
        return NCSNpp.small(
            image_size=size, in_channels=channels, channels=(width, 2 * width, 2 * width),
            attention_resolutions=_attention_at(size, 3, (8,)), center_input=False, dtype=dtype,
        )
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


def build_process(params, image_shape=None, data_range=None):
    """The family's process: a β schedule (DDPM), σ's (NCSN) or an SDE (ScoreSDE).

    For a VE SDE, σ_max is at least the largest possible distance between two images in
    ``data_range`` (Song & Ermon 2020's first technique), since NCSN's default σ_max = 1
    is far too small for it.

    Args:
        params: config fields (``family``, ``schedule``, ``T``, ``sigma_max``,
            ``sigma_min``, ``num_sigmas``, ``sde``, ``sde_N``).
        image_shape: (height, width, channels), for the VE SDE's σ_max.
        data_range: (low, high) of the data (None: the family's,
            ``pipeline.config.family_data_range``).

    Returns:
        A ``kdiff.schedules.Schedule``, a σ array or a ``kdiff.sde.SDE``.
    """
    from kdiff import schedules
    from kdiff import sde as sde_lib

    params = config_lib.resolve(params, PROCESS_FIELDS)
    config_lib.check_model(params)  # σ_min < σ_max
    family = params["family"]
    if family == "ddpm":
        factory = schedules.linear if params["schedule"] == "linear" else schedules.cosine
        return factory(T=params["T"])
    sigma_max, sigma_min = params["sigma_max"], params["sigma_min"]
    if family == "ncsn":
        return schedules.geometric_sigmas(sigma_max, sigma_min, params["num_sigmas"])
    name, N = params["sde"], params["sde_N"]
    if name == "vp":
        return sde_lib.VPSDE(N=N)
    if name == "subvp":
        return sde_lib.SubVPSDE(N=N)
    if image_shape is not None:
        low, high = data_range if data_range is not None else config_lib.family_data_range(family)
        sigma_max = max(sigma_max, (high - low) * math.sqrt(math.prod(int(d) for d in image_shape)))
    return sde_lib.VESDE(sigma_min=sigma_min, sigma_max=sigma_max, N=N)


def make_optimizer(params):
    """Adam with a warm-up over ``warmup_steps`` from ``warmup_from`` (default learning_rate/10),
    then, with ``lr_decay``, a linear decay to 0 at step ``decay_steps`` (kdiff.optim.adam).

    Args:
        params: config fields (``learning_rate``, ``warmup_steps``, ``warmup_from``,
            ``lr_decay``, ``train_steps``, ``epochs``) and, with ``lr_decay``,
            ``decay_steps``: the run's total steps (the train stage sets it). Without it,
            a run whose length does not depend on the data — ``train_steps``, or neither
            ``train_steps`` nor ``epochs`` (``pipeline.config.DEFAULT_TRAIN_STEPS``) —
            decays over that length.

    Returns:
        A Keras optimizer.

    Raises:
        ValueError: ``lr_decay`` with ``epochs`` and without a positive ``decay_steps``
            (the steps of an epoch depend on the data), or ``decay_steps`` no more than
            ``warmup_steps``.
    """
    from kdiff import optim

    params = config_lib.resolve(params, OPTIMIZER_FIELDS)
    learning_rate = params["learning_rate"]
    warmup_from = params["warmup_from"] if params["warmup_from"] is not None else learning_rate / 10
    decay_steps = None
    if params["lr_decay"]:
        decay_steps = params.get("decay_steps")
        if decay_steps is None and params["epochs"] is None:
            decay_steps = params["train_steps"] or config_lib.DEFAULT_TRAIN_STEPS
        if not decay_steps or int(decay_steps) < 1:
            raise ValueError(
                "Expected `decay_steps` (the run's total training steps) with lr_decay=true and `epochs` "
                f"(the steps of an epoch depend on the data). Received: decay_steps={decay_steps!r}, "
                f"epochs={params['epochs']!r}"
            )
        decay_steps = int(decay_steps)
    return optim.adam(
        learning_rate, warmup_steps=params["warmup_steps"], warmup_from=warmup_from, decay_steps=decay_steps
    )


@contextlib.contextmanager
def seeded_initializers(seed):
    """Within the block, unseeded Keras initializers draw their seeds from ``seed`` alone.

    Keras offers no per-model seed: an initializer made without one (every layer of the
    network presets) takes its seed from Python's ``random`` module when it is made
    (``keras.src.random.seed_generator.make_default_seed``), and an unseeded
    ``keras.random`` call (NCSN's conditional-norm initializer) from Keras' global seed
    generator. So the block runs with Python's ``random`` seeded and a fresh global seed
    generator, and both are put back as they were afterwards: the weights depend on
    ``seed`` only, and no global RNG — Python's, NumPy's, TensorFlow's, Keras' — is left
    changed. (``keras.utils.set_random_seed`` would reseed all of them for good.) The
    weights equal those built after ``keras.utils.set_random_seed(seed)``.

    Args:
        seed: an integer ≥ 0.
    """
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator

    key = seed_generator.GLOBAL_SEED_GENERATOR
    python_state = random.getstate()
    keras_generator = global_state.get_global_attribute(key)
    random.seed(seed)
    global_state.set_global_attribute(key, None)
    try:
        yield
    finally:
        random.setstate(python_state)
        global_state.set_global_attribute(key, keras_generator)


def build_model(params, image_shape, num_classes=None):
    """A compiled ``kdiff.DDPM`` / ``NCSN`` / ``ScoreSDE`` from a run's config.

    The initial weights come from ``seed`` (``seeded_initializers``), as does the
    training noise; ``precision`` is the network's and the model's dtype policy
    (``mixed_float16`` adds Keras' loss scaling in ``compile``). With
    ``class_conditional``, the network has ``num_classes + 1`` class embeddings (the last
    is classifier-free guidance's null class) and the model drops labels to it with
    probability ``label_dropout``.

    Args:
        params: a dict of ``RunConfig`` fields (a ``RunConfig.section``), optionally with
            ``data_range`` (default: the family's, ``pipeline.config.family_data_range``);
            missing fields take their ``RunConfig`` defaults.
        image_shape: (height, width, channels) of the training images.
        num_classes: the dataset's classes (needed with ``class_conditional``).

    Returns:
        The compiled model.

    Raises:
        ValueError: on an unknown family, network preset, schedule or SDE, or a network
            that does not fit the family or loss.
    """
    import kdiff

    params = config_lib.resolve(params, MODEL_FIELDS)
    config_lib.check_model(params)
    family = params["family"]
    loss = resolve_loss(family, params["network"], params["loss"])
    data_range = tuple(float(v) for v in params["data_range"])
    process = build_process(params, image_shape, data_range)  # its errors come before the slow build
    network_classes = None
    conditioning = {}
    if params["class_conditional"]:
        if num_classes is None:
            raise ValueError(
                "Expected a labelled dataset (its number of classes) for class_conditional=true. "
                "Received: num_classes=None"
            )
        network_classes = int(num_classes) + 1
        conditioning = {"num_classes": int(num_classes), "label_dropout": params["label_dropout"]}
    common = {
        "image_shape": tuple(int(d) for d in image_shape),
        "ema_decay": params["ema_decay"],
        "seed": params["seed"],
        "data_range": data_range,
        "dtype": kdiff.distribute.precision_policy(params["precision"]),
        **conditioning,
    }
    with seeded_initializers(params["seed"]):
        classes = {} if network_classes is None else {"num_classes": network_classes}
        network = build_network(params, image_shape, loss=loss, **classes)
        if family == "ddpm":
            model = kdiff.DDPM(network, process, loss=loss, **common)
        elif family == "ncsn":
            model = kdiff.NCSN(network, process, loss=loss, **common)
        else:
            model = kdiff.ScoreSDE(network, process, **common)
    model.compile(optimizer=make_optimizer(params))
    return model
