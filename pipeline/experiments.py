"""The survey's experiments, one command each: ``python -m pipeline.run --experiment=NAME``.

Each experiment of the survey (Cerizza, Savazzi, Barbera, 2023, section 5) is data here:
the runs it makes (``RunConfig`` overrides at each scale), the rows of its table (a run's
sampler) and the survey's own figures for each row — the one place they are written. An
experiment runs its runs through the pipeline's stages (``pipeline.experiment_runner``,
with ``pipeline.orchestrator.run_stages``: caching and resume, stage by stage) into ``<output_dir>/<scale>/runs/<run>/`` — runs are
shared between experiments, so ``retrieval`` reuses the others', and at the trained
scales ``table2`` samples ``table1``'s linear-schedule DDPM — and writes
``<output_dir>/<scale>/<experiment>/report.md`` (and ``report.html``, ``results.json``,
``pictures/``): kdiff's figures, which of their orderings are resolved, the survey's
claims checked against them (``pipeline.claims``), and the survey's own figures.

The experiments:

- ``table1``: the survey's Table 1. DDPMs trained with the linear and the cosine schedule,
  each sampled with DDPM-1000 and DDIM-50 (the survey trained its DDIM models separately
  with the same recipe; kdiff samples one trained model both ways: DDIM needs no other
  training).
- ``table2``: the survey's Table 2: a DDPM sampled with DDPM and DDIM at 50 and 1,000
  steps (diffusers' pipelines, ``kdiff.samplers.recipes``) — google/ddpm-celebahq-256 at
  ``--scale=seed``, the linear-schedule DDPM of ``table1`` at the trained scales.
- ``ncsn``: the survey's 5.4.3: an NCSN (RefineNet) sampled by annealed Langevin dynamics
  (10 levels × 100 steps, ε = 2e-5; the survey's 5.2.3) — NCSN's CelebA checkpoint at
  ``--scale=seed``, one trained with denoising score matching at the trained scales.
- ``sde``: the survey's 5.4.4: an NCSN++ under the VE SDE with 2,000 predictor–corrector
  steps, plus DPM-Solver++ and Heun at 20 steps (the fewer steps its conclusion asks for)
  — google/ncsnpp-celebahq-256 at ``--scale=seed``, one trained here at the trained scales.
- ``retrieval``: the survey's 5.5 for every model above: each sample's 5 nearest training
  images (Euclidean, scikit-learn's NearestNeighbors) and kdiff's memorization ratio.

The scales:

- ``small``: scikit-learn's 8×8 digits, the tiny preset's network sizes, every model
  trained by the run (minutes on a CPU; what the tests run, with fewer images and steps).
- ``medium``: Fashion-MNIST resized to 32×32, CPU-sized networks (``unet_medium``,
  ``ncsn_small``, ``ncsnpp_small``) trained by the run (hours on 2 CPU cores).
- ``seed``: the survey's setting — its data, its pretrained checkpoints and, for table1,
  a GPU (``requirements`` names what is missing before anything runs).

At the trained scales every row comes from a model the run trained: no random-weight
model is ever put beside the survey's figures (stand-ins serve ``--preset=tiny`` only).
Rows cost their steps: at the trained scales the rows of 1,000 network evaluations or more
per sample (DDPM-1000, DDIM-1000, annealed Langevin, the 2,000-step predictor–corrector)
draw at most ``LONG_ROW_SAMPLES`` samples, the others the run's ``num_samples``.

FID is reported from the survey's 100 samples (the first 100) and from all the samples
drawn (``num_samples``), with FID∞ and the bootstrap interval beside the latter.

This module imports neither TensorFlow nor kdiff at import time.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import types

from pipeline import io

SCALES = ("small", "medium", "seed")
TRAINED_SCALES = ("small", "medium")  # every row from a model the run trains
SURVEY_SAMPLES = 100  # the survey's FIDs and times are for 100 samples
# The samples a row of 1,000 or more network evaluations per sample draws at most at the
# trained scales (``Row.long``): enough for FID's bootstrap interval at a tenth of the cost.
LONG_ROW_SAMPLES = 500
# What each trained scale trains on, for the report's notice.
SCALE_DATA = {
    "small": "scikit-learn's 8×8 handwritten digits",
    "medium": "Fashion-MNIST resized to 32×32",
}
TRAINED_NOTE = (
    "**Trained at --scale={scale}.** kdiff's columns come from models this command trained on {data}, "
    "sampled with the survey's samplers at the survey's step counts. The survey's columns are the survey's own "
    "(CelebA / CelebA-HQ at 128–256 pixels, its models and hardware): FIDs on different data and in different "
    "feature spaces do not compare, so the survey's claims are checked within kdiff's rows (below), not against "
    "the survey's numbers."
)


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of an experiment's table: a sampler of one run, and the survey's figures for it.

    Attributes:
        key: the row's id within its run, and its sampler's name.
        label: what the survey calls it (e.g. "DDPM linear, DDPM 1,000 steps").
        sampler: ``kdiff.sample`` arguments, or a recipe name of ``kdiff.samplers.recipes`` (a string).
        survey: the survey's figures (``fid``, ``train_minutes``, ``minutes_per_100``,
            ``seconds_per_sample``; absent: not in the survey).
        long: 1,000 or more network evaluations per sample: at the trained scales the row
            draws at most ``LONG_ROW_SAMPLES`` samples.
        options: sampler options changed from the recipe's.
    """

    key: str
    label: str
    sampler: object
    survey: types.MappingProxyType = dataclasses.field(default_factory=dict)
    long: bool = False
    options: types.MappingProxyType = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "survey", types.MappingProxyType(dict(self.survey)))
        object.__setattr__(self, "options", types.MappingProxyType(dict(self.options)))


@dataclasses.dataclass(frozen=True)
class Run:
    """One pipeline run of an experiment.

    Attributes:
        name: its folder under ``<output_dir>/<scale>/runs/``. Runs of the same name at a
            scale are one run: their configs must agree, and it draws every row any of
            them lists (``shared_rows``).
        label: what it is, for the report.
        configs: scale → ``RunConfig`` overrides (over the tiny preset at ``small``, the
            default preset otherwise); the run exists at these scales only.
        rows: its table rows.
        needs: what ``--scale=seed`` needs: "celeba_hq" (the folder), "ncsn_checkpoint",
            "gpu".
    """

    name: str
    label: str
    configs: types.MappingProxyType
    rows: tuple
    needs: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "configs", types.MappingProxyType(
            {scale: types.MappingProxyType(dict(values)) for scale, values in dict(self.configs).items()}))


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named experiment: its runs, its table's columns, the survey's hardware and notes.

    Attributes:
        name: the ``--experiment`` name.
        title: the report's title.
        section: where it is in the survey.
        runs: its ``Run`` s at every scale (``retrieval``: every other experiment's).
        columns: "fid", "train_time", "time_per_100", "time_per_sample", "retrieval".
        survey_hardware: what the survey says it ran on.
        notes: lines the report adds under the table.
    """

    name: str
    title: str
    section: str
    runs: tuple
    columns: tuple
    survey_hardware: str
    notes: tuple = ()

    def runs_at(self, scale):
        """Its runs at ``scale``, one per name in definition order, each with the rows of
        every definition of that name here (``retrieval`` lists table1's and table2's
        ``ddpm_linear`` at the trained scales)."""
        found = {}
        for run in self.runs:
            if scale not in run.configs:
                continue
            if run.name in found:
                known = found[run.name]
                keys = {row.key for row in known.rows}
                run = dataclasses.replace(known, rows=known.rows + tuple(r for r in run.rows if r.key not in keys))
            found[run.name] = run
        return tuple(found.values())


# --------------------------------------------------------------------------- the experiments

COLAB = "Google Colaboratory (a GPU; the survey does not say which)"

# The settings every seed-scale run shares: pytorch-fid's features for FID, Keras'
# InceptionV3 for the retrieval (as the survey), its 100 samples and k = 5.
_SEED_COMMON = {
    "fid_features": "fid_inception",
    "retrieval_features": "inception",
    "num_samples": SURVEY_SAMPLES,
    "sample_shards": 1,
    "knn": 5,
}
# The settings every trained run shares at a scale: the data, 2,048 samples a row (the
# count FID needs; LONG_ROW_SAMPLES for the costly rows), the classifier's features (no
# download), k = 5, the survey's 1,000 DDPM steps and 10 NCSN levels.
_TRAINED_COMMON = {
    "small": {
        "dataset": "digits", "limit": None, "image_size": 8, "num_samples": 2048, "sample_shards": 1,
        "sample_batch_size": 256, "knn": 5, "T": 1000, "num_sigmas": 10, "batch_size": 64,
        "checkpoint_every_steps": 200,
    },
    "medium": {
        "dataset": "fashion_mnist", "limit": None, "image_size": 32, "num_samples": 2048, "sample_shards": 1,
        "sample_batch_size": 256, "knn": 5, "T": 1000, "num_sigmas": 10, "batch_size": 64,
        "checkpoint_every_steps": 500,
    },
}
# How long each trained scale trains, and the optimizer recipe (Adam warmed up, then
# decayed linearly to 0: the survey's 5.2.1 shape; EMA sampled from).
_TRAINED_RECIPE = {
    "small": {"epochs": 30, "learning_rate": 1e-3, "warmup_steps": 100, "lr_decay": True, "ema_decay": 0.995},
    "medium": {"epochs": 10, "learning_rate": 5e-4, "warmup_steps": 500, "lr_decay": True, "ema_decay": 0.999},
}
# The network each family trains at each trained scale.
_TRAINED_NETWORKS = {
    "small": {"ddpm": {"network": "unet_small"}, "ncsn": {"network": "ncsn_small"},
              "sde": {"network": "ncsnpp_small"}},
    "medium": {"ddpm": {"network": "unet_medium"}, "ncsn": {"network": "ncsn_small", "base_channels": 32},
               "sde": {"network": "ncsnpp_small"}},
}
# The VE SDE's σ_max at each trained scale: about the largest distance between two
# training images (Song & Ermon, 2020, technique 1) in the pipeline's [−1, 1] range. The
# largest pairwise distance is 9.63 among the 1,797 digits at 8×8 and 50.8 among 8,000
# Fashion-MNIST training images (seed 0) at 32×32.
_VE_SIGMA_MAX = {"small": 10.0, "medium": 55.0}
_CELEBA_HQ_3000 = {"limit": 3000, "limit_order": "file_number"}


def _trained(scale, family, **values):
    """The overrides of a run trained at a trained scale: the scale's data, recipe and network."""
    return {**_TRAINED_COMMON[scale], **_TRAINED_RECIPE[scale], "family": family,
            **_TRAINED_NETWORKS[scale][family], **values}


def _trained_ddpm(schedule):
    """A DDPM trained with ``schedule`` at each trained scale (table1's; table2's linear)."""
    return {scale: _trained(scale, "ddpm", schedule=schedule) for scale in TRAINED_SCALES}


def _table1_runs():
    rows = {
        "linear": (99.802, 138, 80, 103.322, 127, 4),
        "cosine": (115.659, 140, 75, 113.433, 125, 4),
    }
    runs = []
    for schedule, (fid, train, sample, ddim_fid, ddim_train, ddim_sample) in rows.items():
        recipe = {
            "family": "ddpm", "schedule": schedule, "network": "unet_ddpm_cifar10", "epochs": 50,
            "batch_size": 16, "learning_rate": 1e-4, "warmup_steps": 500, "warmup_from": 4e-5, "lr_decay": True,
        }
        runs.append(Run(
            name=f"ddpm_{schedule}",
            label=f"DDPM, {schedule} schedule, trained by kdiff",
            configs={
                "seed": {**_SEED_COMMON, **_CELEBA_HQ_3000, **recipe, "image_size": 128, "sample_batch_size": 50},
                **_trained_ddpm(schedule),
            },
            rows=(
                Row("ddpm_1000", f"DDPM {schedule}", "ddpm_1000",
                    {"fid": fid, "train_minutes": train, "minutes_per_100": sample}, long=True),
                Row("ddim_50", f"DDIM {schedule}", "ddim_50",
                    {"fid": ddim_fid, "train_minutes": ddim_train, "minutes_per_100": ddim_sample}),
            ),
            needs=("celeba_hq", "gpu"),
        ))
    return tuple(runs)


def _table2_runs():
    figures = {"ddpm_50": (459.211, 10), "ddpm_1000": (77.659, 213), "ddim_50": (81.006, 10), "ddim_1000": (94.843, 213)}
    rows = tuple(
        Row(key, f"{key.split('_')[0].upper()} {int(key.split('_')[1]):,} steps", key,
            {"fid": fid, "minutes_per_100": minutes}, long=key.endswith("_1000"))
        for key, (fid, minutes) in figures.items()
    ) + (
        # diffusers' DDIM keeps the network's ε after clipping x̂₀ (use_clipped_model_output
        # unset); this row recomputes ε from the clipped x̂₀, to tell the sampler from the model.
        Row("ddim_1000_clipped_eps", "DDIM 1,000 steps, ε from the clipped x̂₀ (not in the survey)", "ddim_1000",
            long=True, options={"clipped_eps": True}),
    )
    pretrained = Run(
        name="ddpm_celebahq_256",
        label="google/ddpm-celebahq-256 (pretrained; kdiff.from_diffusers)",
        configs={"seed": {**_SEED_COMMON, **_CELEBA_HQ_3000, "family": "ddpm", "image_size": 256,
                          "model_source": "diffusers:google/ddpm-celebahq-256", "sample_batch_size": 25}},
        rows=rows,
        needs=("celeba_hq",),
    )
    trained = Run(
        name="ddpm_linear",
        label="DDPM, linear schedule, trained by kdiff (table1's; Ho et al.'s layout scaled down)",
        configs=_trained_ddpm("linear"),
        rows=rows,
    )
    return (pretrained, trained)


def _ncsn_runs():
    row = Row("ncsn_annealed_langevin", "NCSN, annealed Langevin (10 levels × 100 steps)",
              "ncsn_annealed_langevin", {"fid": 110.163, "seconds_per_sample": 100}, long=True)
    return (
        Run(
            name="ncsn_celeba",
            label="NCSN's CelebA 32×32 checkpoint (ermongroup/ncsn; kdiff.from_ncsn_checkpoint)",
            configs={"seed": {**_SEED_COMMON, "dataset": "tfds:celeb_a", "crop_size": 140, "image_size": 32,
                              "limit": 10000, "limit_order": "file_number", "family": "ncsn", "num_sigmas": 10,
                              "sample_batch_size": 100}},
            rows=(row,),
            needs=("ncsn_checkpoint",),
        ),
        Run(
            name="ncsn",
            label="NCSN (RefineNet), trained by kdiff with denoising score matching (σ 1 → 0.01, 10 levels)",
            configs={scale: _trained(scale, "ncsn", sigma_max=1.0, sigma_min=0.01) for scale in TRAINED_SCALES},
            rows=(row,),
        ),
    )


def _sde_runs():
    rows = (
        Row("score_sde_ve_pc", "SBGM-SDE, 2,000 predictor–corrector steps", "score_sde_ve_pc",
            {"fid": 63.514, "seconds_per_sample": 720}, long=True),
        Row("dpm_solver_20", "DPM-Solver++, 20 steps (not in the survey)", {"sampler": "dpm_solver", "steps": 20}),
        Row("heun_20", "Heun, 20 steps = 39 evaluations (not in the survey)", {"sampler": "heun", "steps": 20}),
    )
    return (
        Run(
            name="ncsnpp_celebahq_256",
            label="google/ncsnpp-celebahq-256 (pretrained; kdiff.from_diffusers)",
            configs={"seed": {**_SEED_COMMON, **_CELEBA_HQ_3000, "family": "sde", "sde": "ve", "sde_N": 2000,
                              "image_size": 256, "model_source": "diffusers:google/ncsnpp-celebahq-256",
                              "sample_batch_size": 25}},
            rows=rows,
            needs=("celeba_hq",),
        ),
        Run(
            name="ncsnpp_ve",
            label="NCSN++ under the VE SDE, trained by kdiff (denoising score matching of the SDE)",
            configs={scale: _trained(scale, "sde", sde="ve", sde_N=2000, sigma_min=0.01,
                                     sigma_max=_VE_SIGMA_MAX[scale]) for scale in TRAINED_SCALES},
            rows=rows,
        ),
    )


def experiments():
    """Every experiment, name → ``Experiment`` (built on each call: no module-level state).

    Returns:
        A dict in the survey's order.
    """
    table1 = Experiment(
        "table1", "Training DDPM with the linear and the cosine schedule (the survey's Table 1)",
        "Table 1, section 5.4.1", _table1_runs(), ("fid", "train_time", "time_per_100"), COLAB,
        ("The survey trained separate \"DDIM\" models with the same recipe; kdiff samples each trained DDPM with "
         "both DDPM-1000 and DDIM-50 (DDIM needs no training of its own), so each model's training time "
         "appears on both of its rows.",
         "The network is Ho et al.'s U-Net layout: the CIFAR-10 model (ch 128, multipliers 1, 2, 2, 2, attention "
         "at 16×16) at 128×128 at --scale=seed, scaled down (unet_small, unet_medium) at the trained scales; the "
         "survey does not give its layout beyond Ho et al.'s."),
    )
    table2 = Experiment(
        "table2", "DDPM and DDIM sampling at 50 and 1,000 steps (the survey's Table 2)",
        "Table 2, section 5.4.2", _table2_runs(), ("fid", "time_per_100"), COLAB,
        ("The recipes are diffusers' DDPMPipeline and DDIMPipeline (kdiff.samplers.recipes: ddpm_50, ddpm_1000, "
         "ddim_50, ddim_1000). At --scale=seed the model is google/ddpm-celebahq-256; at the trained scales it is "
         "table1's linear-schedule DDPM (one run serves both).",
         "DDIMPipeline clips the predicted x̂₀ but keeps the network's ε for the step's direction "
         "(use_clipped_model_output unset), so each step where x̂₀ is clipped moves off the sampler's own "
         "trajectory; over 1,000 steps that adds up. The row `ddim_1000_clipped_eps` recomputes ε from the "
         "clipped x̂₀ (kdiff's clipped_eps=True, the default of kdiff.sample): where it scores well and "
         "`ddim_1000` does not, the survey's DDIM-1000 penalty comes from the sampler, not the model.",),
    )
    ncsn = Experiment(
        "ncsn", "NCSN sampled by annealed Langevin dynamics (the survey's 5.4.3)", "section 5.4.3", _ncsn_runs(),
        ("fid", "time_per_sample"), "not stated in the survey",
        ("At --scale=seed: FID against CelebA center-cropped to 140×140 and resized to 32×32 (NCSN's own "
         "preprocessing; --crop_size=140), as the survey did. At the trained scales the NCSN is trained on the "
         "same images as the other families, so its FID compares with theirs.",),
    )
    sde = Experiment(
        "sde", "SBGM-SDE: NCSN++ under the VE SDE (the survey's 5.4.4), and fewer-step solvers",
        "section 5.4.4", _sde_runs(), ("fid", "time_per_sample"), "a GPU (Google Colaboratory)",
        ("The survey's conclusion asks for fewer sampling steps: DPM-Solver++ (Lu et al., 2022) and Heun "
         "(Karras et al., 2022) rows sample the same model with 20 steps.",),
    )
    every = table1.runs + table2.runs + ncsn.runs + sde.runs
    retrieval = Experiment(
        "retrieval", "Similarity retrieval for every model (the survey's 5.5, Figs. 20–23)", "section 5.5",
        every, ("retrieval",), COLAB,
        ("Each sample's 5 nearest training images by Euclidean distance (scikit-learn's NearestNeighbors) in "
         "Keras' InceptionV3 features at --scale=seed (the survey's footnotes 29–30); at the trained scales in "
         "the run's FID features. The survey judged memorization by eye only; the memorization ratio is the "
         "share of samples whose nearest training image is closer than the median train–train nearest-neighbour "
         "distance (about 0.5 for fresh images, 1 for copies).",),
    )
    return {e.name: e for e in (table1, table2, ncsn, sde, retrieval)}


def get(name):
    """The experiment called ``name``; ValueError naming the known ones."""
    table = experiments()
    if name not in table:
        raise ValueError(f"Expected `experiment` to be one of {list(table)}. Received: experiment={name!r}")
    return table[name]


def check_scale(scale):
    """Returns ``scale`` if it is one of ``SCALES``; ValueError naming them otherwise."""
    if scale not in SCALES:
        raise ValueError(f"Expected `scale` in {list(SCALES)}. Received: scale={scale!r}")
    return scale


# --------------------------------------------------------------------------- configs


def shared_rows(run_name, scale):
    """Every row that any experiment lists for the run ``run_name`` at ``scale``.

    A run shared between experiments (table1's linear DDPM serves table2 at the trained
    scales) draws every row once, so that running either experiment first leaves the
    other's rows cached.

    Args:
        run_name: a ``Run.name``.
        scale: one of ``SCALES``.

    Returns:
        A tuple of ``Row`` s, each key once, in the experiments' order.
    """
    found = {}
    for experiment in experiments().values():
        for run in experiment.runs_at(scale):
            if run.name == run_name:
                for row in run.rows:
                    found.setdefault(row.key, row)
    return tuple(found.values())


def sampler_config(row):
    """The sampler name and ``kdiff.sample`` arguments of a row (a recipe's sampler and options).

    Args:
        row: a ``Row``.

    Returns:
        ``(name, kwargs)``.
    """
    from kdiff.samplers import recipes

    if isinstance(row.sampler, str):
        recipe = recipes.get(row.sampler)
        return row.key, {"sampler": recipe.sampler, "steps": recipe.steps, **recipe.options, **row.options}
    return row.key, {**row.sampler, **row.options}


def run_config(run, scale, overrides=None, paths=None):
    """The ``RunConfig`` of one run at a scale.

    Args:
        run: a ``Run``.
        scale: "small" (the tiny preset plus the run's overrides), "medium" or "seed" (the
            default preset plus the run's overrides).
        overrides: ``RunConfig`` fields given on the command line, applied last.
        paths: ``{"celeba_hq": folder, "ncsn_checkpoint": file}`` for the seed scale.

    Returns:
        A ``RunConfig``: its samplers are every row of the run (``shared_rows``); at the
        trained scales a ``long`` row draws at most ``LONG_ROW_SAMPLES`` samples.
    """
    from pipeline import config as config_lib

    paths = paths or {}
    values = dict(run.configs[scale])
    if scale == "seed":
        if "celeba_hq" in run.needs and paths.get("celeba_hq"):
            values["dataset"] = f"folder:{paths['celeba_hq']}"
        if "ncsn_checkpoint" in run.needs:
            values["model_source"] = f"ncsn:{paths.get('ncsn_checkpoint') or 'CHECKPOINT'}"
        values.setdefault("dataset", "folder:CELEBA_HQ")
    values = config_lib.layered(values, overrides or {})  # a --train_steps replaces the run's epochs
    samplers = {}
    for row in shared_rows(run.name, scale):
        name, kwargs = sampler_config(row)
        if scale in TRAINED_SCALES and row.long and values["num_samples"] > LONG_ROW_SAMPLES:
            kwargs["num_samples"] = LONG_ROW_SAMPLES
        samplers[name] = kwargs
    values["samplers"] = samplers
    return config_lib.preset("tiny" if scale == "small" else "default", **values)


def requirements(experiment, scale, paths=None, configs=None, allow_cpu=False):
    """What an experiment lacks before it starts: the trained scales' data; the seed scale's
    data, checkpoints, weights and GPU.

    Args:
        experiment: an ``Experiment``.
        scale: one of ``SCALES``.
        paths: ``{"celeba_hq": …, "ncsn_checkpoint": …}``.
        configs: run name → ``RunConfig`` (for the FID / retrieval weights and model sources).
        allow_cpu: let table1 train without a GPU.

    Returns:
        A list of messages, each naming what is missing and how to get it (empty: ready).
    """
    if scale in TRAINED_SCALES:
        return _data_missing(configs or {})
    from pipeline import imports

    paths, configs = paths or {}, configs or {}
    needs = {need for run in experiment.runs_at(scale) for need in run.needs}
    problems = []
    folder = paths.get("celeba_hq")
    if "celeba_hq" in needs and not (folder and io.isdir(folder)):
        problems.append(
            f"the CelebA-HQ 256×256 folder (--celeba_hq=PATH; Kaggle's 'CelebA-HQ resized 256x256' release): "
            f"{'not given' if not folder else f'no folder {folder!r}'}"
        )
    checkpoint = paths.get("ncsn_checkpoint")
    if "ncsn_checkpoint" in needs and not (checkpoint and io.isfile(checkpoint)):
        problems.append(
            "NCSN's CelebA checkpoint (--ncsn_checkpoint=PATH: run/logs/celeba/checkpoint.pth from the run.zip "
            f"linked in the ermongroup/ncsn README): {'not given' if not checkpoint else f'no file {checkpoint!r}'}"
        )
    for config in configs.values():
        if config.model_source and not config.model_source.startswith("ncsn:"):
            message = imports.missing(config.model_source)
            if message:
                problems.append(message)
        if config.dataset.startswith("tfds:"):
            message = _tfds_missing(config.dataset[len("tfds:") :])
            if message:
                problems.append(message)
    problems += _weights_missing(configs)
    if "gpu" in needs and not allow_cpu and not gpus():
        problems.append(
            "a GPU: table1 trains two 128×128 DDPMs for 50 epochs (about 2 hours each on the survey's Colab GPU, "
            "days on a CPU); none is visible to TensorFlow (pass --allow_cpu to train on the CPU anyway)"
        )
    return list(dict.fromkeys(problems))


def _data_missing(configs):
    """Messages for the trained scales' datasets that are not there (``pipeline.data.check_source``)."""
    from pipeline import data
    from pipeline.stages.base import StageError

    problems = []
    for dataset in dict.fromkeys(config.dataset for config in configs.values()):
        try:
            data.check_source(dataset)
        except StageError as error:
            problems.append(str(error))
    return problems


def _tfds_missing(name):
    """A message when a TFDS dataset is neither prepared nor downloadable, else None."""
    from pipeline import imports

    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return f"tfds:{name} needs tensorflow-datasets (pip install tensorflow-datasets)"
    try:
        builder = tfds.builder(name)
        if io.isdir(builder.data_dir) and io.listdir(builder.data_dir):
            return None
    except Exception as error:  # noqa: BLE001 - an unknown name, a broken install
        return f"tfds:{name}: {type(error).__name__}: {error}"
    if not imports.reachable("drive.google.com"):
        return (
            f"tfds:{name} is not prepared in tensorflow-datasets' data dir ({builder.data_dir}) and its download "
            "host (drive.google.com) cannot be reached; prepare it where there is internet "
            f"(python -c \"import tensorflow_datasets as t; t.load('{name}')\") and copy ~/tensorflow_datasets"
        )
    return None


def _weights_missing(configs):
    """Messages for FID / retrieval weights that are neither local nor downloadable."""
    from pipeline import imports

    problems = []
    for config in configs.values():
        if config.fid_features == "fid_inception" and not config.fid_weights:
            from kdiff.fid import weights

            path = weights.default_weights_path()
            if not io.isfile(path) and not imports.reachable("github.com"):
                problems.append(
                    f"pytorch-fid's weights for FID: not at {path} and github.com cannot be reached; download "
                    f"{weights.FID_WEIGHTS_URL} and pass --fid_weights=PATH"
                )
        if config.retrieval_features == "inception" and config.inception_weights == "imagenet":
            cached = os.path.expanduser("~/.keras/models/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
            if not io.isfile(cached) and not imports.reachable("storage.googleapis.com"):
                problems.append(
                    "Keras' ImageNet InceptionV3 weights for the retrieval: not in ~/.keras/models and "
                    "storage.googleapis.com cannot be reached; pass --inception_weights=PATH"
                )
    return problems


# --------------------------------------------------------------------------- hardware


def gpus():
    """The GPUs TensorFlow sees, by name (an empty list on a CPU-only machine)."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        found.append(details.get("device_name") or device.name)
    return found


def hardware():
    """This machine, described from the running system: CPU model, cores, memory, GPUs.

    Returns:
        A one-line string.
    """
    model = platform.processor() or platform.machine()
    try:
        lines = io.read_text("/proc/cpuinfo").splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    memory = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * size / 2**30:.0f} GiB memory"
    except (ValueError, OSError, AttributeError):
        pass
    found = gpus()
    gpu = ", GPU: " + ", ".join(found) if found else ", no GPU"
    return f"{model}, {os.cpu_count()} cores{memory}{gpu}"


# --------------------------------------------------------------------------- results


def _read(path):
    return io.read_json(path) if io.exists(path) else {}


def fid_at(features_path, name, count, bootstrap_rounds=0, seed=0):
    """FID of a sampler's first ``count`` samples against the run's training images.

    Args:
        features_path: the evaluate stage's ``features.npz``.
        name: the sampler.
        count: how many of its samples (fewer when it has fewer).
        bootstrap_rounds: rounds of FID's 95 % bootstrap interval (0: none).
        seed: the bootstrap's seed.

    Returns:
        A dict: ``fid``, ``low``, ``high`` (None without an interval, or all None with
        fewer than 2 samples) and ``count``, the samples used.
    """
    from kdiff import metrics

    arrays = io.read_npz(features_path, ["train", f"samples/{name}"])
    train, samples = arrays["train"], arrays[f"samples/{name}"][:count]
    if len(samples) < 2:
        return {"fid": None, "low": None, "high": None, "count": len(samples)}
    fid = float(metrics.fid_from_features(train, samples))
    low = high = None
    if bootstrap_rounds:
        interval = metrics.fid_bootstrap(samples, train, num_rounds=bootstrap_rounds, seed=seed)
        low, high = float(interval["low"]), float(interval["high"])
    return {"fid": fid, "low": low, "high": high, "count": len(samples)}


def stage_seconds(run_dir):
    """Each stage's wall time in a run's last execution (``_DONE.json``), stage → seconds or None."""
    from pipeline.stages import STAGE_ORDER

    return {stage: _read(os.path.join(run_dir, stage, "_DONE.json")).get("seconds") for stage in STAGE_ORDER}


def run_results(run, scale, run_dir):
    """The measured figures of one run's rows (``results.json``'s entries).

    Args:
        run: a ``Run``.
        scale: one of ``SCALES``.
        run_dir: the run's output folder.

    Returns:
        A list of dicts: ``run``, ``row``, ``sampler``, ``label``, ``steps``, ``nfe``,
        ``num_samples``, ``fid_survey_count`` / ``survey_count`` (FID of the first 100),
        ``fid`` / ``fid_infinity`` / ``fid_low`` / ``fid_high`` (all samples),
        ``train_seconds``, ``sampling_seconds``, ``seconds_per_sample``, ``memorization_ratio``,
        ``mean_nn_distance``, ``retrieval_panel``, ``survey`` (the survey's figures).
    """
    from pipeline.stages import evaluate

    history = _read(os.path.join(run_dir, "train", "model", "history.json"))
    timings = _read(os.path.join(run_dir, "sample", "samples", "timings.json"))
    evaluated = _read(os.path.join(run_dir, "evaluate", "metrics", "metrics.json"))
    metrics, baseline = evaluated.get("samplers", {}), evaluated.get("baseline_gaussian")
    kid_scale = evaluate.kid_display_scale(evaluated.get("fid_features", "classifier"))
    retrieval = _read(os.path.join(run_dir, "retrieve", "retrieval", "retrieval.json"))
    features = os.path.join(run_dir, "evaluate", "metrics", "features.npz")
    results = []
    for row in run.rows:
        name, kwargs = sampler_config(row)
        timing, scores, found = timings.get(name, {}), metrics.get(name, {}), retrieval.get(name, {})
        n = timing.get("num_samples") or 0
        seconds = timing.get("sampling_seconds") if timing.get("sampling_seconds") is not None else timing.get("seconds")
        fid_100, used = None, 0
        if io.exists(features):
            first = fid_at(features, name, SURVEY_SAMPLES)
            fid_100, used = first["fid"], first["count"]
        panel = found.get("panel", {}).get("path")
        results.append({
            "run": run.name, "row": row.key, "sampler": name, "label": row.label, "steps": kwargs.get("steps"),
            "nfe": timing.get("nfe"), "num_samples": n, "fid_survey_count": fid_100, "survey_count": used,
            "fid": scores.get("fid"), "fid_infinity": scores.get("fid_infinity"),
            "fid_low": scores.get("fid_low"), "fid_high": scores.get("fid_high"),
            "fid_infinity_supported": scores.get("fid_infinity_supported"),
            "kid": None if scores.get("kid_mean") is None else scores["kid_mean"] * kid_scale,
            "kid_label": evaluate.kid_label(kid_scale),
            "flags": [list(flag) for flag in evaluate.row_flags(scores, baseline)] if scores and baseline else [],
            "train_seconds": history.get("seconds"), "imported": history.get("imported", {}).get("path"),
            "sampling_seconds": seconds, "seconds_per_sample": seconds / n if seconds is not None and n else None,
            "memorization_ratio": found.get("memorization_ratio"), "mean_nn_distance": found.get("mean_nn_distance"),
            "retrieval_features": found.get("feature_space"),
            "retrieval_panel": os.path.join(run_dir, "retrieve", "retrieval", panel) if panel else None,
            "features": features if io.exists(features) else None,
            "survey": dict(row.survey),
        })
    return results


def add_equal_count_fids(results, bootstrap_rounds=None, seed=0):
    """Adds to each row its FID at the sample count every row has, with a bootstrap interval.

    FID falls as the sample count grows, so rows drawn from different counts (the long
    rows draw ``LONG_ROW_SAMPLES``) are compared at the smallest count among them: the
    ``fid_equal``, ``fid_equal_low``, ``fid_equal_high`` and ``equal_count`` entries
    (None where a row has no samples or features). ``pipeline.claims`` orders rows by them.

    Args:
        results: ``run_results`` rows (changed in place).
        bootstrap_rounds: rounds of the bootstrap interval (None: the evaluate stage's).
        seed: its seed.

    Returns:
        ``results``.
    """
    from pipeline.stages import evaluate

    bootstrap_rounds = evaluate.BOOTSTRAP_ROUNDS if bootstrap_rounds is None else bootstrap_rounds
    counts = [r["num_samples"] for r in results if r.get("features") and r["num_samples"] >= 2]
    count = min(counts) if counts else 0
    for result in results:
        entry = {"fid": None, "low": None, "high": None, "count": 0}
        if count and result.get("features") and result["num_samples"] >= 2:
            entry = fid_at(result["features"], result["sampler"], count, bootstrap_rounds, seed)
        result.update({"fid_equal": entry["fid"], "fid_equal_low": entry["low"], "fid_equal_high": entry["high"],
                       "equal_count": entry["count"]})
    return results


# --------------------------------------------------------------------------- report


def _num(value, digits=3):
    from pipeline.stages.report import format_value

    return format_value(None if value is None else float(value), digits)


def _duration(seconds):
    """Seconds as the tables show them: s below 2 minutes, then min, then h."""
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _survey_minutes(value):
    return "–" if value is None else f"{value:g} min"


def _cells(experiment, result):
    """(kdiff's cells, the survey's cells) of one result row, by the experiment's columns."""
    survey = result["survey"]
    ours, theirs = [], []
    if "fid" in experiment.columns:
        interval = (
            f"[{_num(result['fid_low'])}, {_num(result['fid_high'])}]"
            if result["fid_low"] is not None and result["fid_high"] is not None else "–"
        )
        supported = result.get("fid_infinity_supported") is not False  # seed-scale rows predating the flag: shown
        flagged = " ⚠ " + ", ".join(code for code, _ in result.get("flags", ())) if result.get("flags") else ""
        ours += [
            f"{_num(result['fid_survey_count'])} ({result['survey_count']:,})",
            f"{_num(result['fid'])} ({result['num_samples']:,}){flagged}", interval,
            _num(result["fid_infinity"]) if supported else "–",
        ]
        theirs.append("–" if survey.get("fid") is None else f"{survey['fid']:g}")  # as the survey prints it
    if "train_time" in experiment.columns:
        ours.append(_duration(result["train_seconds"]) if result["train_seconds"] is not None else "– (pretrained)")
        theirs.append(_survey_minutes(survey.get("train_minutes")))
    if "time_per_100" in experiment.columns:
        per = result["seconds_per_sample"]
        ours.append(_duration(None if per is None else per * SURVEY_SAMPLES))
        theirs.append(_survey_minutes(survey.get("minutes_per_100")))
    if "time_per_sample" in experiment.columns:
        ours.append(_duration(result["seconds_per_sample"]))
        theirs.append(_duration(survey.get("seconds_per_sample")))
    if "retrieval" in experiment.columns:
        ours += [_num(result["memorization_ratio"]), _num(result["mean_nn_distance"])]
        theirs.append("judged by eye: not copies (Figs. 20–23)" if survey.get("fid") is not None else "–")
    return ours, theirs


def _headers(experiment):
    ours, theirs = [], []
    if "fid" in experiment.columns:
        ours += [f"FID ({SURVEY_SAMPLES} samples)", "FID (all samples)", "FID 95 % interval", "FID∞"]
        theirs.append(f"FID ({SURVEY_SAMPLES} samples)")
    if "train_time" in experiment.columns:
        ours.append("training time")
        theirs.append("training time")
    if "time_per_100" in experiment.columns:
        ours.append(f"time for {SURVEY_SAMPLES} samples")
        theirs.append(f"time for {SURVEY_SAMPLES} samples")
    if "time_per_sample" in experiment.columns:
        ours.append("time per sample")
        theirs.append("time per sample")
    if "retrieval" in experiment.columns:
        ours += ["memorization ratio", "mean nearest-neighbour distance"]
        theirs.append("memorization")
    return ours, theirs


def render_table(experiment, results, scale, measured_on):
    """The side-by-side table: kdiff's figures | the survey's, and a "measured on" row.

    Args:
        experiment: the ``Experiment``.
        results: ``run_results`` rows.
        scale: one of ``SCALES`` (the header of kdiff's columns says which).
        measured_on: kdiff's hardware (``hardware()``).

    Returns:
        Markdown lines.
    """
    ours, theirs = _headers(experiment)
    side = f"kdiff ({scale}, trained)" if scale in TRAINED_SCALES else "kdiff"
    header = ["model", "sampler", "steps", "samples"] + [f"{side}: {h}" for h in ours] + [f"survey: {h}" for h in theirs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        mine, survey = _cells(experiment, result)
        cells = [result["label"], f"`{result['sampler']}`", _num(result["steps"]), f"{result['num_samples']:,}"]
        lines.append("| " + " | ".join(cells + mine + survey) + " |")
    blank = [""] * (len(ours) - 1)
    lines.append("| measured on | | | | " + " | ".join([measured_on] + blank + [experiment.survey_hardware]
                                                    + [""] * (len(theirs) - 1)) + " |")
    return lines


def _flag_notes(results):
    """Lines under the table: what FID∞'s dash means, and every flagged row with its reason."""
    from pipeline.stages import evaluate

    lines = []
    if any(r.get("fid_infinity_supported") is False for r in results):
        lines.append(
            "- FID∞ shows a dash where the row's sample count is too small for its fit "
            "(`kdiff.metrics.fid_infinity_min_samples`: 10 per feature dimension)."
        )
    meanings = dict(evaluate.FLAGS)
    for result in results:
        for code, detail in result.get("flags", ()):
            lines.append(f"- ⚠ {code} `{result['run']}/{result['sampler']}`: {meanings.get(code, code)} — {detail}.")
    return lines


def render_report(experiment, results, scale, measured_on, pictures=(), verdicts=(), stage_times=None):
    """The experiment's report as Markdown.

    Args:
        experiment: the ``Experiment``.
        results: ``run_results`` rows of its runs (with ``add_equal_count_fids``' entries
            for the orderings).
        scale: one of ``SCALES``.
        measured_on: kdiff's hardware.
        pictures: ``(title, relative path, caption)`` triples (retrieval panels).
        verdicts: ``pipeline.claims.Verdict`` s of the survey's claims.
        stage_times: run name → stage → seconds (``stage_seconds``), for the time table.

    Returns:
        The Markdown text.
    """
    from pipeline import claims
    from pipeline.stages.report import references

    lines = [f"# {experiment.title}", ""]
    if scale in TRAINED_SCALES:
        lines += [TRAINED_NOTE.format(scale=scale, data=SCALE_DATA[scale]), ""]
    lines += [
        f"kdiff's reproduction of the survey's {experiment.section} (Cerizza et al., 2023): "
        f"`python -m pipeline.run --experiment={experiment.name} --scale={scale}`. kdiff's FIDs are "
        f"pytorch-fid-compatible at --scale=seed (its FID Inception network) and at the trained scales in the "
        f"features of a classifier trained on the run's labelled images. FID is shown for the first {SURVEY_SAMPLES} samples, as the survey "
        "computed it, and for all the samples drawn with its 95 % bootstrap interval and FID∞ (Chong & "
        "Forsyth, 2020), the value extrapolated to infinitely many samples: the gap shows how far a "
        f"{SURVEY_SAMPLES}-sample FID sits from the reliable one. Times are sampling wall times without the "
        f"one-off graph tracing where it was measured, scaled to {SURVEY_SAMPLES} samples.",
        "",
    ]
    lines += render_table(experiment, results, scale, measured_on) + [""]
    lines += [f"- {note}" for note in experiment.notes]
    lines += _flag_notes(results) + [""]
    ordered = claims.orderings(results, next((r["kid_label"] for r in results if r.get("kid_label")), "KID"))
    if ordered:
        count = next(r["equal_count"] for r in results if r.get("fid_equal") is not None)
        lines += ["## Which orderings are resolved", "",
                  f"FID of every row at the {count:,} samples each has (its first {count:,}), with 95 % bootstrap "
                  "intervals: two rows are ordered only when their intervals are apart.", ""] + ordered + [""]
    if verdicts:
        lines += ["## The survey's claims, checked", "",
                  "Each claim of the survey this experiment bears on, and whether kdiff's rows support it, "
                  "contradict it, or cannot resolve it (intervals that overlap)"
                  + (", on the trained scale's data, not the survey's" if scale in TRAINED_SCALES else "") + ".",
                  ""] + claims.render(verdicts) + [""]
    if stage_times:
        lines += render_stage_times(stage_times) + [""]
    runs = {result["run"]: result for result in results}
    lines += ["## Runs", ""]
    for run in experiment.runs_at(scale):
        if run.name in runs:
            lines.append(f"- `{run.name}`: {run.label} (`runs/{run.name}/`, its own report in `report/report.md`)")
    lines.append("")
    for title, path, caption in pictures:
        lines += [f"### {title}", "", f"![{title}]({path})", "", f"*{caption}*", ""]
    lines += references()
    return "\n".join(lines)


def render_stage_times(stage_times):
    """A table of each run's stage times (its last execution; "–": not run, or cached before).

    Args:
        stage_times: run name → stage → seconds or None.

    Returns:
        Markdown lines.
    """
    from pipeline.stages import STAGE_ORDER

    lines = ["## Time per stage", "",
             "Each run's stages as they last ran (a cached stage keeps the time it took); a run interrupted at "
             "any point resumes from its last complete stage (and training from its last checkpoint).", "",
             "| run | " + " | ".join(STAGE_ORDER) + " | total |", "|---|" + "---|" * (len(STAGE_ORDER) + 1)]
    for run, times in stage_times.items():
        known = [t for t in times.values() if t is not None]
        cells = [_duration(times.get(stage)) for stage in STAGE_ORDER] + [_duration(sum(known) if known else None)]
        lines.append(f"| `{run}` | " + " | ".join(cells) + " |")
    return lines


def every_result(scale, root):
    """The result rows of every run measured at ``scale`` under ``root`` (for cross-family claims).

    Args:
        scale: one of ``SCALES``.
        root: ``<output_dir>/<scale>``.

    Returns:
        ``run_results`` rows of every run with an evaluate stage, each run once.
    """
    rows, seen = [], set()
    for experiment in experiments().values():
        for run in experiment.runs_at(scale):
            run_dir = os.path.join(root, "runs", run.name)
            if run.name in seen or not io.exists(os.path.join(run_dir, "evaluate", "_DONE.json")):
                continue
            seen.add(run.name)
            rows += run_results(dataclasses.replace(run, rows=shared_rows(run.name, scale)), scale, run_dir)
    return rows


def write_report(experiment, scale, root, measured_on):
    """Writes ``<root>/<experiment>/report.md``, ``report.html``, ``results.json``, ``pictures/``.

    Args:
        experiment: the ``Experiment``.
        scale: one of ``SCALES``.
        root: ``<output_dir>/<scale>``.
        measured_on: kdiff's hardware.

    Returns:
        The report's path.
    """
    from pipeline import claims
    from pipeline.stages.report import write_markdown_and_html

    runs = experiment.runs_at(scale)
    results = add_equal_count_fids(
        [r for run in runs for r in run_results(run, scale, os.path.join(root, "runs", run.name))])
    others = add_equal_count_fids(every_result(scale, root))
    verdicts = claims.check(experiment.name, results, others)
    times = {run.name: stage_seconds(os.path.join(root, "runs", run.name)) for run in runs}
    with io.atomic_directory(os.path.join(root, experiment.name)) as out:
        pictures = []
        if "retrieval" in experiment.columns:
            io.makedirs(os.path.join(out, "pictures"), exist_ok=False)
            for result in results:
                if result["retrieval_panel"] and io.exists(result["retrieval_panel"]):
                    relative = f"pictures/{result['run']}_{result['sampler']}_retrieval.png"
                    io.copy(result["retrieval_panel"], os.path.join(out, relative))
                    pictures.append((
                        f"{result['label']} (`{result['sampler']}`): nearest training images", relative,
                        "Each line: a sample (left), then its nearest training images, nearest first, in the "
                        "retrieval's feature space.",
                    ))
        text = render_report(experiment, results, scale, measured_on, pictures, verdicts, times)
        write_markdown_and_html(out, text)
        io.write_json(os.path.join(out, "results.json"), {
            "experiment": experiment.name, "scale": scale, "measured_on": measured_on,
            "survey_hardware": experiment.survey_hardware, "rows": results,
            "claims": [dataclasses.asdict(verdict) for verdict in verdicts], "stage_seconds": times,
        })
    return os.path.join(root, experiment.name, "report.md")


# --------------------------------------------------------------------------- running


def configs_for(experiment, scale, overrides=None, paths=None):
    """Run name → ``RunConfig`` of every run of an experiment."""
    return {run.name: run_config(run, scale, overrides, paths) for run in experiment.runs_at(scale)}


def plan(name, scale, overrides=None, paths=None, allow_cpu=False):
    """An experiment and its runs' configs, checked before anything runs.

    Args:
        name: the experiment (a key of ``experiments()``).
        scale: one of ``SCALES``.
        overrides: ``RunConfig`` fields applied over every run's (the command line's).
        paths: ``{"celeba_hq": …, "ncsn_checkpoint": …}`` for the seed scale.
        allow_cpu: let table1 train without a GPU at the seed scale.

    Returns:
        ``(experiment, {run name: RunConfig})``.

    Raises:
        ValueError: an unknown experiment or scale, a bad override, or (seed scale) what
            is missing, all named.
    """
    experiment = get(name)
    check_scale(scale)
    configs = configs_for(experiment, scale, overrides, paths)
    problems = requirements(experiment, scale, paths, configs, allow_cpu)
    if problems:
        raise ValueError(
            f"--experiment={name} --scale={scale} needs what is missing here:\n  - " + "\n  - ".join(problems)
            + "\n(see the README's 'The survey's experiments'; --scale=small trains every model on the digits)"
        )
    return experiment, configs
