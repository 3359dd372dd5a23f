"""One dataclass describes a run: defaults plus small overrides (score_sde's configs/ pattern).

``RunConfig()`` is the default run (a DDPM on scikit-learn's digits, sampled with DDIM
and DDPM); ``preset("tiny", family=...)`` is the seconds-long run the tests use. The
effective config is written next to every run's outputs (``<output_dir>/config.json``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

FAMILIES = ("ddpm", "ncsn", "sde")

# The samplers each family runs by default: name → kdiff.sample arguments.
DEFAULT_SAMPLERS = {
    "ddpm": {
        "ddim_50": {"sampler": "ddim", "steps": 50, "clip_x0": 1.0},
        "ddpm_1000": {"sampler": "ddpm", "steps": 1000, "clip_x0": 1.0},
    },
    "ncsn": {
        "annealed_langevin": {"sampler": "annealed_langevin", "steps": 100, "step_lr": 2e-5, "denoise": True},
    },
    "sde": {
        "predictor_corrector": {"sampler": "predictor_corrector", "steps": 1000},
        "probability_flow": {"sampler": "probability_flow", "steps": 100, "method": "rk4"},
    },
}

DEFAULT_NETWORKS = {"ddpm": "unet_small", "ncsn": "ncsn_small", "sde": "unet_small"}


@dataclasses.dataclass
class RunConfig:
    """Everything a run depends on. Field groups follow the stages that read them.

    Attributes:
        dataset: "digits", "tfds:NAME[/config]" or "folder:PATH".
        limit: use at most this many source images (None: all).
        image_size: images are center-cropped and resized to this square size (the
            default 8 is the digits' own size: the default run then fits in minutes).
        channels: 1 (grayscale) or 3 (RGB); None: the source's own (digits: 1).
        num_shards: TFRecord shards written by ingest.
        family: "ddpm", "ncsn" or "sde".
        network: a network preset: "unet_small", "unet_ddpm_cifar10", "unet_improved",
            "ncsn_small", "ncsn_cifar10".
        base_channels: overrides the preset's base channels (None: the preset's).
        schedule: "linear" or "cosine" (DDPM); T: its steps.
        loss: the family's loss ("simple" / "hybrid", "dsm" / "ssm"; ignored for "sde").
        sigma_max, sigma_min, num_sigmas: NCSN's noise levels.
        sde: "vp", "subvp" or "ve"; sde_N: its discretization.
        epochs, batch_size, learning_rate, warmup_steps, ema_decay: training.
        strategy: "default", "mirrored", "multi_worker" or "tpu"; precision: "float32",
            "mixed_float16" or "mixed_bfloat16".
        checkpoint_every_steps: steps between checkpoints (a killed run loses at most this).
        samplers: name → kdiff.sample arguments (None: the family's defaults).
        num_samples: images per sampler; sample_shards: Beam work items per sampler.
        sample_batch_size: images per sampling batch.
        fid_features: "classifier" (a classifier trained on the dataset's labels),
            "inception" (Keras' InceptionV3) or "inception_graph" (the classic 2015
            frozen graph behind published FIDs).
        inception_weights: "imagenet" (Keras downloads and caches) or a local file.
        inception_graph: path of classify_image_graph_def.pb for "inception_graph".
        knn: neighbours shown per sample in retrieval.
        seed: the seed of everything random.
    """

    dataset: str = "digits"
    limit: Optional[int] = None
    image_size: int = 8
    channels: Optional[int] = None
    num_shards: int = 4
    family: str = "ddpm"
    network: Optional[str] = None
    base_channels: Optional[int] = None
    schedule: str = "linear"
    T: int = 1000
    loss: Optional[str] = None
    sigma_max: float = 1.0
    sigma_min: float = 0.01
    num_sigmas: int = 10
    sde: str = "vp"
    sde_N: int = 1000
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.995
    strategy: str = "default"
    precision: str = "float32"
    checkpoint_every_steps: int = 200
    samplers: Optional[dict] = None
    num_samples: int = 500
    sample_shards: int = 2
    sample_batch_size: int = 250
    fid_features: str = "classifier"
    inception_weights: str = "imagenet"
    inception_graph: Optional[str] = None
    knn: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"Expected `family` in {list(FAMILIES)}. Received: family={self.family!r}")
        if self.network is None:
            self.network = DEFAULT_NETWORKS[self.family]
        if self.samplers is None:
            self.samplers = json.loads(json.dumps(DEFAULT_SAMPLERS[self.family]))
        for name in ("image_size", "num_shards", "epochs", "batch_size", "num_samples", "sample_shards", "knn"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Expected `{name}` to be an integer >= 1. Received: {name}={value!r}")

    @property
    def data_range(self):
        """NCSN's data lives in [0, 1] (seed 5.2.3); DDPM's and SDE models' in [−1, 1]."""
        return (0.0, 1.0) if self.family == "ncsn" else (-1.0, 1.0)

    def to_dict(self):
        return dataclasses.asdict(self)

    def section(self, names):
        """The values of ``names``: a stage's parameters, for its fingerprint."""
        return {name: getattr(self, name) for name in names}


PRESETS = {
    "default": {},
    # Seconds-long: the tests run the whole pipeline on it once per family.
    "tiny": {
        "limit": 96,
        "image_size": 8,
        "num_shards": 2,
        "base_channels": 32,
        "T": 100,
        "num_sigmas": 5,
        "sde_N": 100,
        "epochs": 1,
        "batch_size": 32,
        "warmup_steps": 0,
        "learning_rate": 1e-3,
        "checkpoint_every_steps": 2,
        "num_samples": 16,
        "sample_shards": 2,
        "sample_batch_size": 8,
        "knn": 3,
    },
}

TINY_SAMPLERS = {
    "ddpm": {"ddim_10": {"sampler": "ddim", "steps": 10}, "ddpm_20": {"sampler": "ddpm", "steps": 20}},
    "ncsn": {"annealed_langevin": {"sampler": "annealed_langevin", "steps": 3, "step_lr": 2e-5, "denoise": True}},
    "sde": {
        "predictor_corrector": {"sampler": "predictor_corrector", "steps": 10},
        "probability_flow": {"sampler": "probability_flow", "steps": 10, "method": "rk4"},
    },
}


def preset(name="default", **overrides):
    """A config from a named preset plus overrides.

    Args:
        name: "default" or "tiny".
        **overrides: ``RunConfig`` fields.

    Returns:
        A ``RunConfig``.
    """
    if name not in PRESETS:
        raise ValueError(f"Expected `preset` in {list(PRESETS)}. Received: preset={name!r}")
    values = dict(PRESETS[name])
    if name == "tiny":
        family = overrides.get("family", "ddpm")
        values["samplers"] = json.loads(json.dumps(TINY_SAMPLERS[family]))
    values.update(overrides)
    return RunConfig(**values)


def load(path):
    """Reads a config JSON file (a subset of fields is fine: the rest are defaults)."""
    with open(path, encoding="utf-8") as f:
        values = json.load(f)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(RunConfig)})
    if unknown:
        raise ValueError(f"Expected RunConfig fields in {path}. Received unknown: {unknown}")
    return RunConfig(**values)
