"""One dataclass describes a run: defaults plus small overrides (score_sde's configs/ pattern).

``RunConfig()`` is the default run (a DDPM on scikit-learn's digits, sampled with DDIM
and DDPM); ``preset("tiny", family=...)`` is the seconds-long run the tests use. The
effective config is written next to every run's outputs (``<output_dir>/config.json``).

This module is the one source of the pipeline's parameters: every field declares, once,
its default, its one-line help, the stages that read it and its check. A stage's
parameters (``StageSpec.parameters``, hence its fingerprint) are the fields that name it
(``stage_parameters``); ``RunConfig`` validates every field when it is made (from a
preset, a file or flags alike), and ``RunConfig.resolved`` hands the stages and
``pipeline.builders`` its values resolved once; ``resolve`` does the same for a plain
dict (a test's, a library caller's) — the same defaults, the same checks. The network
presets are ``pipeline.presets``' (the builders'): this module checks names against them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from typing import Optional

from pipeline import io
from pipeline.presets import (
    DEFAULT_NETWORKS,
    FAMILY_NETWORKS,
    GROUPNORM_PRESETS,
    LEARNED_VARIANCE_PRESETS,
    NCSNPP_PRESETS,
    NETWORKS,
    UNET_GROUPS,
    UNET_PRESETS,
)
from pipeline.stages import STAGE_ORDER

FAMILIES = ("ddpm", "ncsn", "sde")
# family → the losses it trains with (first: the default).
FAMILY_LOSSES = {"ddpm": ("simple", "hybrid"), "ncsn": ("dsm", "ssm"), "sde": ("sde_dsm",)}
SCHEDULES = ("linear", "cosine")
SDES = ("vp", "subvp", "ve")
LIMIT_ORDERS = ("stratified", "file_number")
FID_FEATURES = ("classifier", "fid_inception", "inception", "inception_graph")
RETRIEVAL_FEATURES = ("inception",)
MODEL_SOURCE_KINDS = ("diffusers", "ncsn", "standin")

# The stage groups of the fields, in the order the flags are listed.
STAGE_GROUPS = ("ingest", "train", "sample", "evaluate", "run")

# The samplers each family runs by default: name → kdiff.sample arguments.
DEFAULT_SAMPLERS = {
    "ddpm": {
        # Both draw the run's num_samples, so that their FIDs compare. DDPM's 1,000 steps are
        # not a default row: at 500 images they would take a third of the default run's
        # 10-minute budget (docs/benchmarks.md); --samplers adds them back, e.g.
        # '{"ddpm_1000": {"sampler": "ddpm", "steps": 1000, "clip_x0": 1.0}}'.
        # DDIM with ε recomputed from the clipped x̂₀ (kdiff's DDIM default; diffusers'
        # use_clipped_model_output=True). Not the recipe ddim_50, which keeps the network's ε:
        # a row named like a recipe must run it (the sample stage checks).
        "ddim_50_clipped_eps": {"sampler": "ddim", "steps": 50, "clip_x0": 1.0, "clipped_eps": True},
        # third order: what Lu et al. advise for unconditional sampling (the second order for
        # guided); at 10 steps it beat the second order on each model of the defaults' tries
        "dpm_solver_10": {"sampler": "dpm_solver", "steps": 10, "order": 3, "clip_x0": 1.0},
    },
    "ncsn": {
        "annealed_langevin": {"sampler": "annealed_langevin", "steps": 100, "step_lr": 2e-5, "denoise": True},
    },
    "sde": {
        "predictor_corrector": {"sampler": "predictor_corrector", "steps": 1000},
        "probability_flow": {"sampler": "probability_flow", "steps": 100, "method": "rk4"},
    },
}

# The samplers an NFE sweep (--nfe_sweep) runs by default, per family.
SWEEP_SAMPLERS = {
    "ddpm": ("ddim", "dpm_solver", "heun"),
    "ncsn": ("heun", "euler"),
    "sde": ("dpm_solver", "heun", "euler"),
}


# The training length of a run that gives neither `train_steps` nor `epochs`: optimizer
# steps, so that a folder of 300 images trains as long as the 1,797 digits do.
DEFAULT_TRAIN_STEPS = 4000

# The two ways to give the training length: a config sets at most one of them, and a layer
# that sets one (flags over a --config file over a preset) replaces the other's value.
TRAINING_LENGTH_FIELDS = ("train_steps", "epochs")


# ----------------------------------------------------------------------------- field checks
# Each takes (value, field name) and returns the value (normalized) or raises ValueError
# "Expected … Received: name=value".


def _checks():
    # kdiff.checks imports TensorFlow: imported on first use, so that flag parsing and
    # --help stay fast and quiet.
    from kdiff import checks

    return checks


def _optional(check):
    def run(value, name):
        return None if value is None else check(value, name)

    return run


def _text(value, name):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"Expected `{name}` to be a non-empty string. Received: {name}={value!r}")
    return value


def _choice(choices):
    return lambda value, name: _checks().one_of(value, name, choices)


def _int_at_least(low):
    return lambda value, name: _checks().int_in_range(value, name, low, None)


def _positive_int(value, name):
    return _checks().positive_int(value, name)


def _positive(value, name):
    return _checks().positive(value, name)


def _non_negative(value, name):
    return _checks().non_negative(value, name)


def _channels(value, name):
    return _checks().one_of(value, name, (1, 3))


def _flag(value, name):
    if not isinstance(value, bool):
        raise ValueError(f"Expected `{name}` to be true or false. Received: {name}={value!r}")
    return value


def _dropout(value, name):
    value = _checks().non_negative(value, name)
    if value >= 1:
        raise ValueError(f"Expected `{name}` in [0, 1). Received: {name}={value!r}")
    return value


def _fraction(value, name):
    value = _checks().non_negative(value, name)
    if value > 1:
        raise ValueError(f"Expected `{name}` in [0, 1]. Received: {name}={value!r}")
    return value


def _strategy(value, name):
    from kdiff import distribute

    return _checks().one_of(value, name, distribute.STRATEGIES)


AUTO_PRECISION = "auto"


def _precision(value, name):
    """A dtype policy name; "auto" becomes ``kdiff.distribute.default_precision()`` here (so
    the stage's fingerprint and records name the precision it trained in)."""
    from kdiff import distribute

    if value == AUTO_PRECISION:
        return distribute.default_precision()
    return _checks().one_of(value, name, (*distribute.POLICIES, AUTO_PRECISION))


def _network(value, name):
    if value not in NETWORKS:
        raise ValueError(f"Expected `{name}` in {list(NETWORKS)}. Received: {name}={value!r}")
    return value


def _model_source(value, name):
    kind, _, target = str(value).partition(":")
    if not isinstance(value, str) or kind not in MODEL_SOURCE_KINDS or not target.strip():
        raise ValueError(
            f"Expected `{name}` as KIND:TARGET with KIND one of {list(MODEL_SOURCE_KINDS)} (e.g. "
            f"'diffusers:google/ddpm-celebahq-256', 'ncsn:run/logs/celeba/checkpoint.pth', 'standin:ddpm'). "
            f"Received: {name}={value!r}"
        )
    return value


def _samplers(value, name):
    # The sample stage checks each entry against the sampler registry; here, the shape.
    if not isinstance(value, dict) or not value or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError(
            f"Expected `{name}` to be a non-empty dict name → kdiff.sample arguments (a dict). Received: {name}={value!r}"
        )
    return value


def _budgets(text, name="nfe_sweep"):
    """``"5,10,20"`` → (5, 10, 20): distinct positive ints, in the order given."""
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise ValueError(
            f"Expected `{name}` as distinct comma-separated network-evaluation counts >= 1, e.g. '5,10,20,50'. "
            f"Received: {name}={text!r}"
        )
    return tuple(values)


def _budget_list(value, name):
    return ",".join(map(str, _budgets(value, name)))


# ----------------------------------------------------------------------------- RunConfig


def declare(default, *, stages, help, check, group=None):  # noqa: A002 - the field's help text
    """A ``RunConfig`` field, declared once: what the flags, the stages and the checks read
    (a subclass of ``RunConfig`` declares its own fields with it too).

    Args:
        default: the field's default.
        stages: the stages that read it (``pipeline.stages.STAGE_ORDER`` names): it is a
            parameter of each, part of each one's fingerprint.
        help: its one-line ``--help`` text.
        check: (value, name) → the value (normalized), or ValueError naming the field.
        group: the ``--help`` group it is listed in (``STAGE_GROUPS``); None: its first stage's.

    Returns:
        A ``dataclasses.field`` whose metadata holds ``stages``, ``stage`` (the group),
        ``help`` and ``check``.
    """
    stages = tuple(stages)
    group = stages[0] if group is None and stages else group
    if not stages or not set(stages) <= set(STAGE_ORDER) or group not in STAGE_GROUPS:
        raise ValueError(
            f"Expected `stages` among {list(STAGE_ORDER)} and a `group` among {list(STAGE_GROUPS)}. "
            f"Received: stages={stages!r}, group={group!r}"
        )
    return dataclasses.field(
        default=default, metadata={"stages": stages, "stage": group, "help": help, "check": check}
    )


@dataclasses.dataclass
class RunConfig:
    """Everything a run depends on. Field groups follow the stages that read them.

    Each field's metadata says, once, what it is: ``help`` (its one-line description,
    what ``python -m pipeline.run --help`` lists, grouped by ``stage``), ``stages`` (the
    stages that read it: their parameters and fingerprints) and ``check``. Fields whose
    default is None take the family's or the source's own value: ``network`` (the family's
    first preset, ``DEFAULT_NETWORKS``), ``samplers`` (``DEFAULT_SAMPLERS``), ``loss`` (the
    family's first loss; "hybrid" for unet_improved), ``channels`` (the source's),
    ``base_channels`` (the preset's), ``limit`` (every image).

    Raises:
        ValueError: on any field outside its accepted values, naming the field
            ("Expected … Received: name=value").
    """

    dataset: str = declare(
        "digits", stages=("ingest", "report"), check=_text,
        help='the source: "digits", "fashion_mnist" (its 60,000 training images: TFDS\' prepared copy, Keras\' '
        'cache or Debian\'s dataset-fashion-mnist), "tfds:NAME[/CONFIG]", "folder:PATH" or "idx:DIR" (IDX files, '
        'PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz]; prefix train if present)',
    )
    limit: Optional[int] = declare(
        None, stages=("ingest",), check=_optional(_positive_int),
        help="use at most this many source images (none: all of them)",
    )
    limit_order: str = declare(
        "stratified", stages=("ingest",), check=_choice(LIMIT_ORDERS),
        help="which images --limit keeps: stratified (a seeded subset, every class in proportion) or "
        "file_number (the first N by the number in the file name; digits / TFDS: their own order)",
    )
    image_size: int = declare(
        8, stages=("ingest", "report"), check=_positive_int,
        help="images are center-cropped and resized to this square size",
    )
    crop_size: Optional[int] = declare(
        None, stages=("ingest",), check=_optional(_positive_int),
        help="the side of the central square cropped before resizing (e.g. 140 for CelebA, as NCSN did); "
        "none: the shorter side",
    )
    channels: Optional[int] = declare(
        None, stages=("ingest",), check=_optional(_channels),
        help="1 (grayscale) or 3 (RGB); none: the source's own",
    )
    num_shards: int = declare(4, stages=("ingest",), check=_positive_int, help="TFRecord shards of the training split")
    family: str = declare(
        "ddpm", stages=("train", "report"), check=_choice(FAMILIES), help="the diffusion family: ddpm, ncsn or sde"
    )
    model_source: Optional[str] = declare(
        None, stages=("train",), check=_optional(_model_source),
        help="import a model instead of training one: diffusers:HUB_ID_OR_FOLDER, ncsn:CHECKPOINT (.pth or .npz) "
        "or standin:ddpm|ncsnpp|ncsn (a small random-weight model of the importers' classes, for tests); "
        "none: train",
    )
    network: Optional[str] = declare(
        None, stages=("train", "report"), check=_optional(_network),
        help=f"the network preset, one of {', '.join(NETWORKS)}; none: the family's",
    )
    base_channels: Optional[int] = declare(
        None, stages=("train",), check=_optional(_positive_int),
        help="overrides the preset's base channels (none: the preset's)",
    )
    num_res_blocks: Optional[int] = declare(
        None, stages=("train",), check=_optional(_positive_int),
        help="a U-Net's residual blocks per resolution, overriding the preset's (none: the preset's)",
    )
    schedule: str = declare(
        "linear", stages=("train",), check=_choice(SCHEDULES), help="DDPM's β schedule: linear or cosine"
    )
    T: int = declare(1000, stages=("train",), check=_positive_int, help="DDPM's diffusion steps")
    loss: Optional[str] = declare(
        None, stages=("train",), check=_optional(_text),
        help="simple / hybrid (ddpm), dsm / ssm (ncsn); none: the family's",
    )
    sigma_max: float = declare(
        1.0, stages=("train",), check=_positive,
        help="NCSN's largest noise level (also a VE SDE's, at least the data's diameter)",
    )
    sigma_min: float = declare(
        0.01, stages=("train",), check=_positive, help="NCSN's (and a VE SDE's) smallest noise level"
    )
    num_sigmas: int = declare(10, stages=("train",), check=_int_at_least(2), help="NCSN's number of noise levels")
    sde: str = declare("vp", stages=("train",), check=_choice(SDES), help="the SDE of family sde: vp, subvp or ve")
    sde_N: int = declare(1000, stages=("train",), check=_positive_int, help="the SDE's discretization steps")
    train_steps: Optional[int] = declare(
        None, stages=("train",), check=_optional(_positive_int),
        help="optimizer steps to train for, whatever the dataset's size (the epochs follow from it); "
        f"none: --epochs' steps if given, else {DEFAULT_TRAIN_STEPS:,} steps",
    )
    epochs: Optional[int] = declare(
        None, stages=("train", "report"), check=_optional(_positive_int),
        help="passes over the training split, instead of --train_steps (give one of the two); none: --train_steps "
        "decides",
    )
    batch_size: int = declare(64, stages=("train", "report"), check=_positive_int, help="the global batch size")
    learning_rate: float = declare(1e-3, stages=("train",), check=_positive, help="Adam's peak learning rate")
    warmup_steps: int = declare(
        200, stages=("train",), check=_int_at_least(0), help="linear warm-up steps from a tenth of the learning rate"
    )
    warmup_from: Optional[float] = declare(
        None, stages=("train",), check=_optional(_positive),
        help="the learning rate the warm-up starts from (none: a tenth of --learning_rate)",
    )
    lr_decay: bool = declare(
        True, stages=("train",), check=_flag,
        help="after the warm-up, decay the learning rate linearly to 0 at the last step (the survey's 5.2.1)",
    )
    ema_decay: float = declare(
        0.999, stages=("train",), check=_fraction, help="decay of the EMA copy of the weights that is sampled from"
    )
    class_conditional: bool = declare(
        False, stages=("train",), check=_flag,
        help="train on the labels, with a null class for classifier-free guidance (ddpm and sde)",
    )
    label_dropout: float = declare(
        0.1, stages=("train",), check=_dropout,
        help="class-conditional runs: the probability a training label becomes the null class",
    )
    strategy: str = declare(
        "default", stages=("train",), check=_strategy,
        help="tf.distribute strategy: default, mirrored, multi_worker or tpu",
    )
    precision: str = declare(
        AUTO_PRECISION, stages=("train",), check=_precision,
        help="the network's dtype policy in training: float32, mixed_float16, mixed_bfloat16, or auto "
        "(mixed_bfloat16 on CPUs with native bfloat16, AVX-512 BF16 or AMX, and no GPU or TPU; else float32). "
        "The export and the samplers compute in float32",
    )
    checkpoint_every_steps: int = declare(
        500, stages=("train",), check=_int_at_least(0), help="steps between checkpoints (0: at epoch ends only)"
    )
    samplers: Optional[dict] = declare(
        None, stages=("sample",), check=_optional(_samplers),
        help='JSON: name → kdiff.sample arguments, e.g. \'{"ddim_20": {"sampler": "ddim", "steps": 20}}\'; '
        "none: the family's",
    )
    guidance_scale: Optional[float] = declare(
        None, stages=("sample",), check=_optional(_non_negative),
        help="class-conditional runs: also draw every sampler with this classifier-free guidance scale, as "
        "<name>_guided (none: conditional samples only)",
    )
    nfe_sweep: Optional[str] = declare(
        None, stages=("sample",), check=_optional(_budget_list),
        help="comma-separated network-evaluation budgets, e.g. 5,10,20,50: a row <sampler>_nfe<N> per swept "
        "sampler and budget, and the report's FID-against-NFE plot (none: no sweep)",
    )
    sweep_samplers: Optional[str] = declare(
        None, stages=("sample",), check=_optional(_text),
        help="comma-separated samplers the NFE sweep runs (none: the family's, "
        + "; ".join(f"{family}: {','.join(names)}" for family, names in SWEEP_SAMPLERS.items()) + ")",
    )
    num_samples: int = declare(500, stages=("sample",), check=_positive_int, help="images drawn per sampler")
    sample_shards: int = declare(1, stages=("sample",), check=_positive_int, help="Beam work items per sampler")
    sample_batch_size: int = declare(250, stages=("sample",), check=_positive_int, help="images per sampling batch")
    trajectory_samples: int = declare(
        8, stages=("sample",), check=_int_at_least(0),
        help="samples in each sampler's denoising-trajectory picture (0: none, and no tracing of its loop)",
    )
    fid_features: str = declare(
        "classifier", stages=("evaluate",), check=_choice(FID_FEATURES),
        help="FID feature space: classifier (trained on the labels), fid_inception (pytorch-fid's network: "
        "published FIDs), inception (Keras' ImageNet InceptionV3) or inception_graph (the 2015 graph)",
    )
    fid_weights: Optional[str] = declare(
        None, stages=("evaluate",), check=_optional(_text),
        help="pytorch-fid's weight file for fid_inception (.pth with torch, or its .npz); none: torch hub's "
        "cache, $KDIFF_FID_WEIGHTS, or a download",
    )
    inception_weights: str = declare(
        "imagenet", stages=("evaluate", "retrieve"), check=_text,
        help='InceptionV3 weights: "imagenet" (downloaded once) or a file',
    )
    inception_graph: Optional[str] = declare(
        None, stages=("evaluate",), check=_optional(_text),
        help="path of classify_image_graph_def.pb for inception_graph",
    )
    knn: int = declare(
        5, stages=("retrieve",), group="evaluate", check=_positive_int,
        help="nearest training images shown per sample in retrieval",
    )
    retrieval_features: Optional[str] = declare(
        None, stages=("retrieve",), group="evaluate", check=_optional(_choice(RETRIEVAL_FEATURES)),
        help="the feature space of the retrieval: inception (Keras' InceptionV3, --inception_weights: the "
        "survey's section 5.5); none: the FID features",
    )
    seed: int = declare(
        0, stages=("ingest", "train", "sample", "evaluate", "report"), group="run", check=_int_at_least(0),
        help="the seed of everything random (subset, split, weights, noise, samples)",
    )

    def __post_init__(self):
        for field in dataclasses.fields(self):
            setattr(self, field.name, _checked(field, getattr(self, field.name)))
        check_training_length(self.train_steps, self.epochs)
        if self.network is None:
            self.network = DEFAULT_NETWORKS[self.family]
        if self.samplers is None:
            self.samplers = json.loads(json.dumps(DEFAULT_SAMPLERS[self.family]))
        check_model(self.to_dict())
        if self.guidance_scale is not None:
            if not self.class_conditional:
                raise ValueError(
                    "Expected `guidance_scale` only with class_conditional=true (classifier-free guidance "
                    f"needs a model trained on the labels). Received: guidance_scale={self.guidance_scale!r}"
                )
            self.samplers = with_guided_samplers(self.samplers, self.guidance_scale)
        if self.sweep_samplers is not None and self.nfe_sweep is None:
            raise ValueError(
                f"Expected `sweep_samplers` only with an `nfe_sweep`. Received: sweep_samplers={self.sweep_samplers!r}"
            )
        if self.nfe_sweep is not None:
            swept = SWEEP_SAMPLERS[self.family] if self.sweep_samplers is None else _names(self.sweep_samplers)
            self.samplers = with_nfe_sweep(self.samplers, _budgets(self.nfe_sweep), swept)

    @property
    def data_range(self):
        """(low, high) of the data the family trains on (``family_data_range``)."""
        return family_data_range(self.family)

    def to_dict(self):
        return dataclasses.asdict(self)

    def section(self, names):
        """The values of ``names``: a stage's parameters, for its fingerprint."""
        return {name: getattr(self, name) for name in names}

    def resolved(self, names=None):
        """The values of ``names`` as the stages and builders read them, resolved once.

        The config checked and filled its values (``network``, ``samplers``) when it was
        made; this adds the family's ``data_range`` and marks them resolved, so that
        ``resolve`` and ``pipeline.builders`` take them as they are.

        Args:
            names: field names (a stage's ``SPEC.parameters``); None: every field.

        Returns:
            A ``ResolvedParams``.
        """
        if names is None:
            names = [field.name for field in dataclasses.fields(self)]
        return ResolvedParams(self.section(names), data_range=list(self.data_range))


FIELD_NAMES = tuple(field.name for field in dataclasses.fields(RunConfig))

GUIDED_SUFFIX = "_guided"


def _fields():
    # Read at each call, so that a RunConfig with other fields (a test's) is the one asked.
    return {field.name: field for field in dataclasses.fields(RunConfig)}


def _checked(field, value):
    return field.metadata["check"](value, field.name)


def stage_parameters(stage):
    """The parameters of a stage: the ``RunConfig`` fields that name it, in field order.

    A field declared with ``stages=("train",)`` is thereby a train parameter, part of its
    fingerprint (``pipeline.stages.base.StageSpec.parameters`` reads this).

    Args:
        stage: a stage name (``pipeline.stages.STAGE_ORDER``).

    Returns:
        A tuple of field names.
    """
    return tuple(name for name, field in _fields().items() if stage in field.metadata["stages"])


def _names(text):
    return tuple(part.strip() for part in str(text).split(",") if part.strip())


def with_nfe_sweep(samplers, budgets, swept):
    """The sampler configs plus a row ``<sampler>_nfe<N>`` for each swept sampler and budget N.

    Each row takes the steps that spend N network evaluations (``kdiff.samplers.registry.Sampler.
    steps_for_nfe``: Heun's steps cost two but the last); rows already there (a config read
    back from a run) are replaced by the same.

    Args:
        samplers: name → ``kdiff.sample`` arguments.
        budgets: the NFE budgets.
        swept: registry names of the samplers to sweep.

    Returns:
        A new dict.

    Raises:
        ValueError: a sampler that is not registered or whose cost per step depends on its
            options (a predictor-corrector), or a budget it cannot spend exactly.
    """
    from kdiff.samplers import registry

    result = {name: dict(kwargs) for name, kwargs in samplers.items()}
    for sampler in swept:
        entry = registry.get(sampler)
        for nfe in budgets:
            steps = entry.steps_for_nfe(nfe)
            result[f"{sampler}_nfe{nfe}"] = {"sampler": sampler, "steps": steps}
    return result


def with_guided_samplers(samplers, guidance_scale):
    """The sampler configs plus, for each unguided one, ``<name>_guided`` at ``guidance_scale``.

    Idempotent: a config that already has the guided rows (one read back from a run's
    ``config.json``) gets them set to ``guidance_scale`` again, nothing more.

    Args:
        samplers: name → ``kdiff.sample`` arguments.
        guidance_scale: the classifier-free guidance scale of the added rows.

    Returns:
        A new dict.
    """
    result = {name: dict(kwargs) for name, kwargs in samplers.items()}
    for name, kwargs in samplers.items():
        if "guidance_scale" not in kwargs and not name.endswith(GUIDED_SUFFIX):
            result[name + GUIDED_SUFFIX] = {**kwargs, "guidance_scale": float(guidance_scale)}
    return result


def family_data_range(family):
    """(low, high) of the data a family trains on: its process's ``default_data_range``
    ((0, 1) for ncsn, (−1, 1) otherwise), the one source kdiff's models use too.

    Args:
        family: "ddpm", "ncsn" or "sde".

    Returns:
        A (low, high) tuple of floats.
    """
    from kdiff.process import family_class  # imports TensorFlow: on first use, as checks

    family = _checks().one_of(family, "family", FAMILIES)
    return tuple(float(v) for v in family_class(family).default_data_range)


def field_types():
    """Field name → its type (``int``, ``float``, ``str``, ``dict``) and whether None is allowed.

    Returns:
        A dict name → (type, optional).
    """
    hints = typing.get_type_hints(RunConfig)
    types = {}
    for name in _fields():
        hint = hints[name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = bool(typing.get_args(hint)) and len(args) < len(typing.get_args(hint))
        types[name] = (args[0] if optional else hint, optional)
    return types


def field_default(name):
    """The ``RunConfig`` default of field ``name`` (None where the family or source decides).

    Args:
        name: a field name.

    Returns:
        The default value.
    """
    return _field_named(name).default


def _field_named(name):
    fields = _fields()
    if name not in fields:
        raise ValueError(f"Expected a RunConfig field name{_did_you_mean(name)}. Received: name={name!r}")
    return fields[name]


def check_field(name, value):
    """Checks one field's value with the check its field declares: the check ``RunConfig``,
    the stages and the builders share.

    Args:
        name: the field name.
        value: its value.

    Returns:
        The value (ints as ``int``, numbers as ``float``).

    Raises:
        ValueError: "Expected … Received: name=value".
    """
    return _checked(_field_named(name), value)


def check_training_length(train_steps, epochs):
    """Raises ValueError when both ``train_steps`` and ``epochs`` are set: each alone sets
    the training length, and together they would contradict each other.

    Args:
        train_steps: the config's ``train_steps`` (None: not given).
        epochs: the config's ``epochs`` (None: not given).
    """
    if train_steps is not None and epochs is not None:
        raise ValueError(
            "Expected at most one of `train_steps` (optimizer steps) and `epochs` (passes over the training "
            "split): each sets the training length on its own; drop one (none: "
            f"{DEFAULT_TRAIN_STEPS:,} steps). Received: train_steps={train_steps!r}, epochs={epochs!r}"
        )


@dataclasses.dataclass(frozen=True)
class TrainingLength:
    """How long a run trains: what the train stage runs and what its console line says.

    Attributes:
        steps: optimizer steps in all.
        epochs: passes over the training split they take (the last one may be partial).
        batches_per_epoch: batches in a whole epoch (ceil(num_train / batch_size)).
        source: "train_steps", "epochs" or "default" (``DEFAULT_TRAIN_STEPS``): what set it.
    """

    steps: int
    epochs: int
    batches_per_epoch: int
    source: str

    def batches_in(self, epoch):
        """The batches epoch ``epoch`` (0-based) takes: a whole epoch's, fewer in a partial last one.

        Args:
            epoch: an epoch index in [0, epochs).

        Returns:
            An int in [1, batches_per_epoch].
        """
        return max(0, min(self.batches_per_epoch, self.steps - int(epoch) * self.batches_per_epoch))

    @property
    def whole_epochs(self):
        """The epochs that take all of ``batches_per_epoch`` (all but a partial last one)."""
        return self.steps // self.batches_per_epoch


def training_length(num_train, batch_size, train_steps=None, epochs=None):
    """The training length of a run: its steps and epochs on a dataset of ``num_train`` images.

    With ``train_steps`` the run takes exactly that many optimizer steps and the epochs
    follow, ceil(train_steps / batches per epoch), the last one partial when they do not
    divide; with ``epochs``, epochs × batches per epoch steps (every batch of every
    epoch, the last batch of each partial when ``batch_size`` does not divide
    ``num_train``); with neither, ``DEFAULT_TRAIN_STEPS`` steps.

    Args:
        num_train: images in the training split (>= 1).
        batch_size: the global batch size.
        train_steps: the config's ``train_steps`` (None: not given).
        epochs: the config's ``epochs`` (None: not given).

    Returns:
        A ``TrainingLength``.

    Raises:
        ValueError: both ``train_steps`` and ``epochs`` given, or a value out of range.
    """
    num_train = _checks().positive_int(num_train, "num_train")
    batch_size = _checks().positive_int(batch_size, "batch_size")
    check_training_length(train_steps, epochs)
    batches_per_epoch = math.ceil(num_train / batch_size)
    if epochs is not None:
        epochs = _checks().positive_int(epochs, "epochs")
        return TrainingLength(epochs * batches_per_epoch, epochs, batches_per_epoch, "epochs")
    source = "default" if train_steps is None else "train_steps"
    steps = _checks().positive_int(DEFAULT_TRAIN_STEPS if train_steps is None else train_steps, "train_steps")
    return TrainingLength(steps, math.ceil(steps / batches_per_epoch), batches_per_epoch, source)


def layered(base, overrides):
    """``base`` updated with ``overrides``, where a training length in ``overrides`` replaces
    the other one in ``base``: ``--train_steps`` over a preset's ``epochs`` drops those
    epochs (and ``--epochs`` a file's ``train_steps``) instead of failing as both given.

    Args:
        base: a dict of ``RunConfig`` fields (a preset's, a file's, an experiment run's).
        overrides: the fields laid over it.

    Returns:
        A new dict.
    """
    values = dict(base)
    given = [name for name in TRAINING_LENGTH_FIELDS if overrides.get(name) is not None]
    if len(given) == 1:
        for name in TRAINING_LENGTH_FIELDS:
            if name not in given:
                values.pop(name, None)
    values.update(overrides)
    return values


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
        return "hybrid" if network in LEARNED_VARIANCE_PRESETS else FAMILY_LOSSES[family][0]
    if loss not in FAMILY_LOSSES[family]:
        raise ValueError(
            f"Expected `loss` in {list(FAMILY_LOSSES[family])} for family={family!r}. Received: loss={loss!r}"
        )
    if network in LEARNED_VARIANCE_PRESETS and loss != "hybrid":
        raise ValueError(
            f"Expected loss='hybrid' with network={network!r} (it learns the variance, which "
            f"the hybrid loss trains). Received: loss={loss!r}; use network='unet_small' or "
            "'unet_ddpm_cifar10' for the simple loss."
        )
    return loss


def check_network(family, network):
    """Raises ValueError unless ``network`` is a preset that ``family`` trains.

    Args:
        family: "ddpm", "ncsn" or "sde".
        network: the network preset.
    """
    _network(network, "network")
    if network not in FAMILY_NETWORKS[family]:
        why = " (its learned variance belongs to DDPM)" if network in LEARNED_VARIANCE_PRESETS else ""
        raise ValueError(
            f"Expected `network` for family={family!r} to be one of {list(FAMILY_NETWORKS[family])}. "
            f"Received: network={network!r}{why}"
        )


def check_model(params):
    """The checks across fields: network × family, loss, σ's, a U-Net's base channels.

    Args:
        params: a dict of ``RunConfig`` fields (missing ones take their defaults).

    Raises:
        ValueError: naming the field.
    """
    family = _checks().one_of(params.get("family") or field_default("family"), "family", FAMILIES)
    network = params.get("network") or DEFAULT_NETWORKS[family]
    check_network(family, network)
    resolve_loss(family, network, params.get("loss"))
    sigma_max = float(_value(params, "sigma_max"))
    sigma_min = float(_value(params, "sigma_min"))
    if not 0 < sigma_min < sigma_max:
        raise ValueError(
            "Expected 0 < `sigma_min` < `sigma_max`. "
            f"Received: sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
        )
    check_base_channels(network, params.get("base_channels"))
    if params.get("num_res_blocks") is not None and network not in UNET_PRESETS:
        raise ValueError(
            f"Expected `num_res_blocks` only with a U-Net network ({', '.join(UNET_PRESETS)}). "
            f"Received: num_res_blocks={params['num_res_blocks']!r}, network={network!r}"
        )
    if params.get("class_conditional") and family == "ncsn":
        raise ValueError(
            "Expected class_conditional=true only with family 'ddpm' or 'sde' (an NCSN network's classes are "
            "its noise levels). Received: class_conditional=True, family='ncsn'"
        )
    if params.get("class_conditional") and network in NCSNPP_PRESETS:
        raise ValueError(
            "Expected class_conditional=true only with a U-Net network (NCSN++ has no class embeddings). "
            f"Received: class_conditional=True, network={network!r}"
        )


def check_base_channels(network, base_channels):
    """Raises ValueError unless a U-Net's or NCSN++'s ``base_channels`` is a multiple of its GroupNorm groups.

    Args:
        network: the network preset.
        base_channels: the config's ``base_channels`` (None: the preset's).
    """
    if base_channels is not None and network in GROUPNORM_PRESETS and base_channels % UNET_GROUPS:
        raise ValueError(
            f"Expected `base_channels` divisible by {UNET_GROUPS} for network={network!r} (its GroupNorm groups). "
            f"Received: base_channels={base_channels}"
        )


def _value(params, name):
    value = params.get(name)
    return field_default(name) if value is None else value


class ResolvedParams(dict):
    """Params whose fields were resolved once: filled with their defaults and checked, each
    field and across fields (``RunConfig.resolved``, ``resolve``).

    ``resolve`` and ``pipeline.builders`` take such a dict as it is instead of filling and
    checking it again. Its other keys (``beam_args``, ``data_range``, ``decay_steps``…) are
    free; a field that changes goes through ``replace``, which checks it.
    """

    def replace(self, **changes):
        """A copy with ``changes``, the fields among them checked as ``resolve`` checks them.

        Args:
            **changes: name → value (fields are checked; other keys are kept as given).

        Returns:
            A new ``ResolvedParams``.

        Raises:
            ValueError: a changed field outside its accepted values, or at odds with the others.
        """
        fields = _fields()
        values = ResolvedParams(self, **changes)
        for name in changes.keys() & fields.keys():
            values[name] = _checked(fields[name], changes[name])
        if "family" in values:
            check_model(values)
        return values


def resolve(params, names):
    """A stage's or builder's params with ``names`` resolved: filled and checked, once.

    A ``ResolvedParams`` that holds every name (``RunConfig.resolved``: what the
    orchestrator passes the stages) is returned as it is. Otherwise each name it lacks —
    every name, for a plain dict (a test's, a library caller's) — takes its ``RunConfig``
    default where missing or None, ``network`` the family's preset, and passes its field's
    check; with ``family`` among the names, the checks across fields follow
    (``check_model``). Other keys (``beam_args``, ``data_range``) are kept; a missing
    ``data_range`` is the family's.

    Args:
        params: a dict (a ``RunConfig.section`` plus the run's extras) or ``ResolvedParams``.
        names: the field names the stage or builder reads (e.g. its ``SPEC.parameters``).

    Returns:
        A ``ResolvedParams`` (``params`` itself when nothing was left to resolve).

    Raises:
        ValueError: a value outside its field's accepted values, or fields at odds.
    """
    fields = _fields()
    done = params if isinstance(params, ResolvedParams) else {}
    missing = [name for name in names if name in fields and name not in done]
    if isinstance(params, ResolvedParams) and not missing:
        return params
    resolved = ResolvedParams(params)
    for name in missing:
        resolved[name] = _checked(fields[name], _value(params, name))
    if "network" in names and resolved.get("network") is None:
        resolved["network"] = DEFAULT_NETWORKS[_value(resolved, "family")]
    if resolved.get("data_range") is None and ("family" in names or "family" in params):
        resolved["data_range"] = list(family_data_range(_value(resolved, "family")))
    if "family" in names:
        check_model(resolved)
    return resolved


PRESETS = {
    "default": {},
    # Seconds-long: the tests run the whole pipeline on it once per family.
    "tiny": {
        "limit": 96,
        "image_size": 8,
        "num_shards": 2,
        "base_channels": 32,
        # one residual block per resolution: the U-Net's graph half the size, so half the
        # tracing (docs/benchmarks.md)
        "num_res_blocks": 1,
        "T": 100,
        "num_sigmas": 5,
        "sde_N": 100,
        "epochs": 1,
        # the digits' 86 training images of `limit` 96 in two full batches: a partial last
        # batch would trace the train step a second time (docs/benchmarks.md)
        "batch_size": 43,
        "warmup_steps": 0,
        # no decay over its 2 steps: the default decays over the run's steps, which an
        # `epochs` run learns from the data only in the train stage (the builders, used
        # alone, would need `decay_steps`)
        "lr_decay": False,
        "learning_rate": 1e-3,
        "checkpoint_every_steps": 2,
        "num_samples": 16,
        "sample_shards": 2,
        "sample_batch_size": 8,
        "knn": 3,
    },
}

# The tiny preset's samplers (few steps), per family.
TINY_SAMPLERS = {
    "ddpm": {"ddim_10": {"sampler": "ddim", "steps": 10}, "ddpm_20": {"sampler": "ddpm", "steps": 20}},
    "ncsn": {"annealed_langevin": {"sampler": "annealed_langevin", "steps": 3, "step_lr": 2e-5, "denoise": True}},
    "sde": {
        "predictor_corrector": {"sampler": "predictor_corrector", "steps": 10},
        "probability_flow": {"sampler": "probability_flow", "steps": 10, "method": "rk4"},
    },
}


def preset(name="default", **overrides):
    """A config from a named preset plus overrides, checked like any other config.

    Args:
        name: "default" or "tiny".
        **overrides: ``RunConfig`` fields.

    Returns:
        A ``RunConfig``.

    Raises:
        ValueError: an unknown preset or field, a field outside its accepted values, or
            both ``train_steps`` and ``epochs`` in ``overrides`` (one of them replaces the
            preset's training length: ``layered``).
    """
    _checks().one_of(name, "preset", tuple(PRESETS))
    unknown = sorted(set(overrides) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(
            f"Expected RunConfig fields{_did_you_mean(unknown[0])}. Received unknown: {unknown}"
        )
    values = dict(PRESETS[name])
    if name == "tiny":
        family = overrides.get("family", field_default("family"))
        if overrides.get("samplers") is None and family in TINY_SAMPLERS:
            # any other family fails in RunConfig, naming the field
            values["samplers"] = json.loads(json.dumps(TINY_SAMPLERS[family]))
        if (overrides.get("network") or DEFAULT_NETWORKS.get(family)) not in UNET_PRESETS:
            values.pop("num_res_blocks")  # a U-Net's field
    # the overrides' training length (train_steps or epochs) replaces the preset's
    return RunConfig(**layered(values, overrides))


def read_file(path):
    """The fields of a config JSON file (a subset is fine: the rest come from the preset).

    Args:
        path: a JSON file holding an object of ``RunConfig`` fields.

    Returns:
        A dict field → value.

    Raises:
        ValueError: the file is not a JSON object, or holds keys that are not fields
            (named, with the closest field).
        OSError: the file cannot be read.
    """
    try:
        values = io.read_json(path)
    except json.JSONDecodeError as error:
        raise ValueError(f"Expected a JSON object of RunConfig fields in {path}. Received: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(
            f"Expected a JSON object of RunConfig fields in {path}. Received: a {type(values).__name__}"
        )
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(
            f"Expected RunConfig fields in {path}{_did_you_mean(unknown[0])}. Received unknown: {unknown}"
        )
    return values


def _did_you_mean(name):
    close = difflib.get_close_matches(str(name), FIELD_NAMES, n=1)
    return f" (did you mean {close[0]!r} for {name!r}?)" if close else ""
