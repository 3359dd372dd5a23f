"""From a run's config to a compiled kdiff model: the family, its network preset, its process.

``build_model(params, image_shape)`` reads the train stage's parameters (the ``RunConfig``
fields declared for stage "train": ``family``, ``network``, ``base_channels``,
``schedule``, ``T``, ``loss``, ``sigma_max``, ``sigma_min``, ``num_sigmas``, ``sde``,
``sde_N``, ``learning_rate``, ``warmup_steps``, ``ema_decay``, ``precision``, ``seed``…)
and ``data_range``, and returns a compiled ``kdiff.DDPM``, ``kdiff.NCSN`` or
``kdiff.ScoreSDE``; call it inside ``strategy.scope()``. The values are resolved once: a
``pipeline.config.ResolvedParams`` (``RunConfig.resolved``, what the train stage passes)
is taken as it is; a plain dict (library use) is resolved here, its missing fields at
their ``RunConfig`` defaults (``pipeline.config.resolve``: one source of defaults and
checks), and the builders it calls take it resolved. ``precision`` becomes the network's
and model's Keras dtype policy (no global policy is set) and ``seed`` alone decides the
initial weights (no global RNG is left reseeded).

The network presets — their names, their ``kdiff.models`` factories and layouts — are this
module's table ``pipeline.presets.NETWORK_PRESETS`` (a module of its own so that the
config checks names against it without importing TensorFlow); ``build_network`` builds them.
"""

from __future__ import annotations

import contextlib
import math
import random

from pipeline import config as config_lib
from pipeline.config import (  # noqa: F401 - the config's choices, re-exported
    FAMILY_LOSSES,
    SCHEDULES,
    SDES,
    resolve_loss,
)
from pipeline.presets import (  # noqa: F401 - the presets this module builds, re-exported
    FAMILY_NETWORKS,
    NCSN_PRESETS,
    NETWORK_PRESETS,
    NETWORKS,
    UNET_PRESETS,
)

# The fields the builders read, filled with their RunConfig defaults and checked when a plain
# dict comes in: the train stage's parameters, so that a field declared for train reaches them.
MODEL_FIELDS = config_lib.stage_parameters("train")


def _resolved(params):
    """``params`` resolved once: a ``ResolvedParams`` as it is, a plain dict filled and checked."""
    return config_lib.resolve(params, MODEL_FIELDS)


def _attention_at(image_size, levels, wanted):
    """The wanted attention resolutions the network has; else half the image size."""
    resolutions = [image_size // 2**i for i in range(levels)]
    chosen = tuple(r for r in wanted if r in resolutions)
    return chosen or (resolutions[min(1, levels - 1)],)


def _unet_layout(preset, params, loss, num_classes):
    """A ``kdiff.models.UNet`` factory's arguments: the preset's layout, then the config's."""
    layout = {}
    if preset.learned_variance is None:
        layout["learned_variance"] = loss == "hybrid"
    if preset.channel_mult is not None:
        layout["channel_mult"] = preset.channel_mult
    if preset.res_blocks is not None:
        layout["num_res_blocks"] = preset.res_blocks
    base = params["base_channels"]
    if preset.head_channels is not None:
        layout["head_channels"] = math.gcd(preset.head_channels, base or preset.width)
    if base is not None:
        layout["base_channels"] = base
    if params["num_res_blocks"] is not None:
        layout["num_res_blocks"] = params["num_res_blocks"]
    if num_classes is not None:
        layout["num_classes"] = int(num_classes)
    return layout


def _refinenet_layout(preset, params, loss, num_classes):
    """A ``kdiff.models.RefineNet`` factory's arguments: a class per noise level, ngf the base."""
    del preset, loss, num_classes  # NCSN's classes are its noise levels
    layout = {"num_classes": params["num_sigmas"]}
    if params["base_channels"] is not None:
        layout["ngf"] = params["base_channels"]
    return layout


def _ncsnpp_layout(preset, params, loss, num_classes):
    """A ``kdiff.models.NCSNpp`` factory's arguments: each level's channels from the base."""
    del loss, num_classes  # no learned variance, no class embeddings (RunConfig refuses them)
    base = params["base_channels"] or preset.width
    layout = {"channels": tuple(base * mult for mult in preset.channel_mult)}
    if preset.center_input is not None:
        layout["center_input"] = preset.center_input
    return layout


# kdiff.models class → its factory arguments from a preset and the config.
_LAYOUTS = {"UNet": _unet_layout, "RefineNet": _refinenet_layout, "NCSNpp": _ncsnpp_layout}


def build_network(params, image_shape, *, loss=None, num_classes=None):
    """The network a config asks for: its preset's factory (``pipeline.presets``) with the
    preset's layout and the config's overrides.

    Args:
        params: config fields (``family``, ``network``, ``base_channels``,
            ``num_res_blocks``, ``num_sigmas``, ``precision``: the network's dtype policy);
            resolved once (``_resolved``).
        image_shape: (height, width, channels) of the training images (square).
        loss: the resolved loss (a U-Net learns its variance for "hybrid").
        num_classes: a U-Net's class embeddings (None: unconditional).

    Returns:
        A ``kdiff.models.UNet``, ``RefineNet`` or ``NCSNpp``.

    Raises:
        ValueError: a network the family does not train, non-square images, or an image
            size the preset's resolution levels do not divide.
    """
    from kdiff import distribute, models

    params = _resolved(params)
    network = params["network"]
    preset = NETWORK_PRESETS[network]
    height, width, channels = (int(d) for d in image_shape)
    if height != width:
        raise ValueError(f"Expected square images for the {network} network. Received: image_shape={image_shape!r}")
    if preset.levels is not None:
        _check_divisible(height, preset.levels, network)
    arguments = {
        "image_size": height, "in_channels": channels, "dtype": distribute.precision_policy(params["precision"])
    }
    if preset.attention is not None:
        arguments["attention_resolutions"] = _attention_at(height, preset.levels, preset.attention)
    arguments.update(_LAYOUTS[preset.model](preset, params, loss, num_classes))
    factory = getattr(getattr(models, preset.model), preset.factory)
    return factory(**arguments)


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
            ``sigma_min``, ``num_sigmas``, ``sde``, ``sde_N``); resolved once (``_resolved``).
        image_shape: (height, width, channels), for the VE SDE's σ_max.
        data_range: (low, high) of the data (None: the family's,
            ``pipeline.config.family_data_range``).

    Returns:
        A ``kdiff.schedules.Schedule``, a σ array or a ``kdiff.sde.SDE``.
    """
    from kdiff import schedules
    from kdiff import sde as sde_lib

    params = _resolved(params)  # σ_min < σ_max checked there
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
            decays over that length. Resolved once (``_resolved``).

    Returns:
        A Keras optimizer.

    Raises:
        ValueError: ``lr_decay`` with ``epochs`` and without a positive ``decay_steps``
            (the steps of an epoch depend on the data), or ``decay_steps`` no more than
            ``warmup_steps``.
    """
    from kdiff import optim

    params = _resolved(params)
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
        params: ``RunConfig.resolved`` values (taken as they are), or a dict of
            ``RunConfig`` fields, optionally with ``data_range`` (default: the family's,
            ``pipeline.config.family_data_range``), whose missing fields take their
            ``RunConfig`` defaults.
        image_shape: (height, width, channels) of the training images.
        num_classes: the dataset's classes (needed with ``class_conditional``).

    Returns:
        The compiled model.

    Raises:
        ValueError: on an unknown family, network preset, schedule or SDE, or a network
            that does not fit the family or loss.
    """
    import kdiff

    params = _resolved(params)  # once: build_process, build_network and make_optimizer take it as it is
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
