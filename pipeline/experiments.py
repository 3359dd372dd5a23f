"""The survey's experiments, one command each: ``python -m pipeline.run --experiment=NAME``.

Each experiment of the survey (Cerizza, Savazzi, Barbera, 2023, section 5) is data here:
the runs it makes (``RunConfig`` overrides at each scale), the rows of its table (a run's
sampler) and the survey's own figures for each row — the one place they are written. An
experiment runs its runs through the pipeline's stages (``pipeline.run.run_stages``:
caching and resume included) into ``<output_dir>/<scale>/runs/<run>/`` — runs are shared
between experiments, so ``retrieval`` reuses the others' — and writes
``<output_dir>/<scale>/<experiment>/report.md`` (and ``report.html``, ``results.json``,
``pictures/``): kdiff's figures beside the survey's, with the hardware of each.

The experiments:

- ``table1``: the survey's Table 1. DDPMs trained on the first 3,000 CelebA-HQ images by
  file number at 128×128 with the linear and the cosine schedule, 50 epochs, batch 16,
  Adam warmed up over 500 steps from 4e-5 to 1e-4 then decayed linearly (5.2.1); each
  sampled with DDPM-1000 and DDIM-50. The survey trained its DDIM models separately with
  the same recipe; kdiff samples one trained model both ways (DDIM needs no other
  training).
- ``table2``: the survey's Table 2: google/ddpm-celebahq-256 sampled with DDPM and DDIM at
  50 and 1,000 steps.
- ``ncsn``: the survey's 5.4.3: NCSN's CelebA checkpoint, FID against CelebA center-cropped
  to 140 and resized to 32.
- ``sde``: the survey's 5.4.4: google/ncsnpp-celebahq-256 with 2,000 predictor–corrector
  steps, plus DPM-Solver++ and Heun at 20 steps (the fewer steps its conclusion asks for).
- ``retrieval``: the survey's 5.5 for every model above: each sample's 5 nearest training
  images (Euclidean, scikit-learn's NearestNeighbors) in Keras' InceptionV3 features, and
  kdiff's memorization ratio.

``--scale=seed`` is the survey's setting (its data, checkpoints and, for table1, a GPU;
``requirements`` names what is missing before anything runs). ``--scale=small`` runs the
same code path on the bundled 8×8 digits with tiny models — table1's trained, the
pretrained checkpoints replaced by random-weight stand-ins of the same classes
(``pipeline.imports``) — in minutes on a CPU; its report says it is a stand-in.

FID is reported from the survey's 100 samples (the first 100) and from all the samples
drawn (``num_samples``), with FID∞ and the bootstrap interval beside the latter.

This module imports neither TensorFlow nor kdiff at import time.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import types

SCALES = ("small", "seed")
SURVEY_SAMPLES = 100  # the survey's FIDs and times are for 100 samples
STANDIN_NOTE = (
    "**Stand-in run (--scale=small).** kdiff's columns come from tiny models on the bundled 8×8 "
    "digits{standins}, with the step counts shown: they test the code path and are not comparable with "
    "the survey's figures, which are the survey's own (CelebA / CelebA-HQ, its models and hardware)."
)


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of an experiment's table: a sampler of one run, and the survey's figures for it.

    Attributes:
        key: the row's id within its run (also its sampler's name at ``--scale=seed``).
        label: what the survey calls it (e.g. "DDPM linear, DDPM 1,000 steps").
        sampler: ``kdiff.sample`` arguments at ``--scale=seed``, or a recipe name of
            ``kdiff.recipes`` (a string).
        small_steps: the steps at ``--scale=small``.
        survey: the survey's figures (``fid``, ``train_minutes``, ``minutes_per_100``,
            ``seconds_per_sample``; absent: not in the survey).
    """

    key: str
    label: str
    sampler: object
    small_steps: int
    survey: types.MappingProxyType = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "survey", types.MappingProxyType(dict(self.survey)))


@dataclasses.dataclass(frozen=True)
class Run:
    """One pipeline run of an experiment.

    Attributes:
        name: its folder under ``<output_dir>/<scale>/runs/``.
        label: what it is, for the report.
        seed: ``RunConfig`` overrides at ``--scale=seed`` (over the default preset).
        small: ``RunConfig`` overrides at ``--scale=small`` (over the tiny preset).
        rows: its table rows.
        needs: what ``--scale=seed`` needs: "celeba_hq" (the folder), "ncsn_checkpoint",
            "gpu".
    """

    name: str
    label: str
    seed: types.MappingProxyType
    small: types.MappingProxyType
    rows: tuple
    needs: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "seed", types.MappingProxyType(dict(self.seed)))
        object.__setattr__(self, "small", types.MappingProxyType(dict(self.small)))


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named experiment: its runs, its table's columns, the survey's hardware and notes.

    Attributes:
        name: the ``--experiment`` name.
        title: the report's title.
        section: where it is in the survey.
        runs: its ``Run`` s (``retrieval``: every other experiment's).
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
# The settings every small run shares: the digits at 8×8, 2,048 samples (the count FID
# needs), the classifier's features (no download).
_SMALL_COMMON = {
    "dataset": "digits",
    "limit": None,
    "image_size": 8,
    "num_samples": 2048,
    "sample_shards": 1,
    "sample_batch_size": 256,
    "knn": 5,
}
_CELEBA_HQ_3000 = {"limit": 3000, "limit_order": "file_number"}


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
            seed={**_SEED_COMMON, **_CELEBA_HQ_3000, **recipe, "image_size": 128, "sample_batch_size": 50},
            small={**_SMALL_COMMON, "family": "ddpm", "schedule": schedule, "epochs": 5, "batch_size": 64,
                   "learning_rate": 1e-3, "warmup_steps": 20, "warmup_from": 4e-4, "lr_decay": True},
            rows=(
                Row("ddpm_1000", f"DDPM {schedule}", "ddpm_1000", 20,
                    {"fid": fid, "train_minutes": train, "minutes_per_100": sample}),
                Row("ddim_50", f"DDIM {schedule}", "ddim_50", 5,
                    {"fid": ddim_fid, "train_minutes": ddim_train, "minutes_per_100": ddim_sample}),
            ),
            needs=("celeba_hq", "gpu"),
        ))
    return tuple(runs)


def _table2_runs():
    figures = {"ddpm_50": (459.211, 10), "ddpm_1000": (77.659, 213), "ddim_50": (81.006, 10), "ddim_1000": (94.843, 213)}
    small_steps = {"ddpm_50": 5, "ddpm_1000": 20, "ddim_50": 5, "ddim_1000": 20}
    rows = tuple(
        Row(key, f"{key.split('_')[0].upper()} {int(key.split('_')[1]):,} steps", key, small_steps[key],
            {"fid": fid, "minutes_per_100": minutes})
        for key, (fid, minutes) in figures.items()
    )
    return (Run(
        name="ddpm_celebahq_256",
        label="google/ddpm-celebahq-256 (pretrained; kdiff.from_diffusers)",
        seed={**_SEED_COMMON, **_CELEBA_HQ_3000, "family": "ddpm", "image_size": 256,
              "model_source": "diffusers:google/ddpm-celebahq-256", "sample_batch_size": 25},
        small={**_SMALL_COMMON, "family": "ddpm", "model_source": "standin:ddpm"},
        rows=rows,
        needs=("celeba_hq",),
    ),)


def _ncsn_runs():
    return (Run(
        name="ncsn_celeba",
        label="NCSN's CelebA 32×32 checkpoint (ermongroup/ncsn; kdiff.from_ncsn_checkpoint)",
        seed={**_SEED_COMMON, "dataset": "tfds:celeb_a", "crop_size": 140, "image_size": 32, "limit": 10000,
              "limit_order": "file_number", "family": "ncsn", "num_sigmas": 10, "sample_batch_size": 100},
        small={**_SMALL_COMMON, "family": "ncsn", "num_sigmas": 10, "model_source": "standin:ncsn"},
        rows=(Row("ncsn_annealed_langevin", "NCSN, annealed Langevin (10 levels × 100 steps)",
                  "ncsn_annealed_langevin", 2, {"fid": 110.163, "seconds_per_sample": 100}),),
        needs=("ncsn_checkpoint",),
    ),)


def _sde_runs():
    return (Run(
        name="ncsnpp_celebahq_256",
        label="google/ncsnpp-celebahq-256 (pretrained; kdiff.from_diffusers)",
        seed={**_SEED_COMMON, **_CELEBA_HQ_3000, "family": "sde", "sde": "ve", "sde_N": 2000, "image_size": 256,
              "model_source": "diffusers:google/ncsnpp-celebahq-256", "sample_batch_size": 25},
        small={**_SMALL_COMMON, "family": "sde", "sde": "ve", "sde_N": 2000, "model_source": "standin:ncsnpp"},
        rows=(
            Row("score_sde_ve_pc", "SBGM-SDE, 2,000 predictor–corrector steps", "score_sde_ve_pc", 10,
                {"fid": 63.514, "seconds_per_sample": 720}),
            Row("dpm_solver_20", "DPM-Solver++, 20 steps (not in the survey)",
                {"sampler": "dpm_solver", "steps": 20}, 5),
            Row("heun_20", "Heun, 20 steps = 39 evaluations (not in the survey)", {"sampler": "heun", "steps": 20}, 3),
        ),
        needs=("celeba_hq",),
    ),)


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
         "The network is Ho et al.'s U-Net layout (ch 128, multipliers 1, 2, 2, 2, attention at 16×16) at "
         "128×128; the survey does not give its layout beyond Ho et al.'s."),
    )
    table2 = Experiment(
        "table2", "DDPM and DDIM sampling of google/ddpm-celebahq-256 (the survey's Table 2)",
        "Table 2, section 5.4.2", _table2_runs(), ("fid", "time_per_100"), COLAB,
        ("The recipes are diffusers' DDPMPipeline and DDIMPipeline (kdiff.recipes: ddpm_50, ddpm_1000, "
         "ddim_50, ddim_1000).",),
    )
    ncsn = Experiment(
        "ncsn", "NCSN's pretrained CelebA model (the survey's 5.4.3)", "section 5.4.3", _ncsn_runs(),
        ("fid", "time_per_sample"), "not stated in the survey",
        ("FID against CelebA center-cropped to 140×140 and resized to 32×32 (NCSN's own preprocessing; "
         "--crop_size=140), as the survey did.",),
    )
    sde = Experiment(
        "sde", "SBGM-SDE: google/ncsnpp-celebahq-256 (the survey's 5.4.4), and fewer-step solvers",
        "section 5.4.4", _sde_runs(), ("fid", "time_per_sample"), "a GPU (Google Colaboratory)",
        ("The survey's conclusion asks for fewer sampling steps: DPM-Solver++ (Lu et al., 2022) and Heun "
         "(Karras et al., 2022) rows sample the same model with 20 steps.",),
    )
    every = table1.runs + table2.runs + ncsn.runs + sde.runs
    retrieval = Experiment(
        "retrieval", "Similarity retrieval for every model (the survey's 5.5, Figs. 20–23)", "section 5.5",
        every, ("retrieval",), COLAB,
        ("Each sample's 5 nearest training images by Euclidean distance (scikit-learn's NearestNeighbors) in "
         "Keras' InceptionV3 features at --scale=seed (the survey's footnotes 29–30); at --scale=small in the "
         "run's FID features. The survey judged memorization by eye only; the memorization ratio is the share "
         "of samples whose nearest training image is closer than the median train–train nearest-neighbour "
         "distance (about 0.5 for fresh images, 1 for copies).",),
    )
    return {e.name: e for e in (table1, table2, ncsn, sde, retrieval)}


def get(name):
    """The experiment called ``name``; ValueError naming the known ones."""
    table = experiments()
    if name not in table:
        raise ValueError(f"Expected `experiment` to be one of {list(table)}. Received: experiment={name!r}")
    return table[name]


# --------------------------------------------------------------------------- configs


def sampler_config(row, scale):
    """The sampler name and ``kdiff.sample`` arguments of a row at a scale.

    A recipe row takes its recipe's sampler and options; at ``--scale=small`` its steps
    are ``small_steps`` and the name says them (``ddpm_20``).

    Args:
        row: a ``Row``.
        scale: "small" or "seed".

    Returns:
        ``(name, kwargs)``.
    """
    from kdiff import recipes

    if isinstance(row.sampler, str):
        recipe = recipes.get(row.sampler)
        kwargs = {"sampler": recipe.sampler, "steps": recipe.steps, **recipe.options}
    else:
        kwargs = dict(row.sampler)
    if scale == "seed":
        return row.key, kwargs
    kwargs["steps"] = row.small_steps
    return f"{kwargs['sampler']}_{row.small_steps}", kwargs


def run_config(run, scale, overrides=None, paths=None):
    """The ``RunConfig`` of one run at a scale.

    Args:
        run: a ``Run``.
        scale: "small" (the tiny preset plus ``run.small``) or "seed" (the default preset
            plus ``run.seed``).
        overrides: ``RunConfig`` fields given on the command line, applied last.
        paths: ``{"celeba_hq": folder, "ncsn_checkpoint": file}`` for the seed scale.

    Returns:
        A ``RunConfig``.
    """
    from pipeline import config as config_lib

    paths = paths or {}
    values = dict(run.seed if scale == "seed" else run.small)
    if scale == "seed":
        if "celeba_hq" in run.needs and paths.get("celeba_hq"):
            values["dataset"] = f"folder:{paths['celeba_hq']}"
        if "ncsn_checkpoint" in run.needs:
            values["model_source"] = f"ncsn:{paths.get('ncsn_checkpoint') or 'CHECKPOINT'}"
        values.setdefault("dataset", "folder:CELEBA_HQ")
    values["samplers"] = dict(sampler_config(row, scale) for row in run.rows)
    values = config_lib.layered(values, overrides or {})  # a --train_steps replaces the run's epochs
    return config_lib.preset("tiny" if scale == "small" else "default", **values)


def requirements(experiment, scale, paths=None, configs=None, allow_cpu=False):
    """What a seed-scale experiment lacks before it starts (nothing for the small scale).

    Args:
        experiment: an ``Experiment``.
        scale: "small" or "seed".
        paths: ``{"celeba_hq": …, "ncsn_checkpoint": …}``.
        configs: run name → ``RunConfig`` (for the FID / retrieval weights and model sources).
        allow_cpu: let table1 train without a GPU.

    Returns:
        A list of messages, each naming what is missing and how to get it (empty: ready).
    """
    if scale == "small":
        return []
    from pipeline import imports

    paths, configs = paths or {}, configs or {}
    needs = {need for run in experiment.runs for need in run.needs}
    problems = []
    folder = paths.get("celeba_hq")
    if "celeba_hq" in needs and not (folder and os.path.isdir(folder)):
        problems.append(
            f"the CelebA-HQ 256×256 folder (--celeba_hq=PATH; Kaggle's 'CelebA-HQ resized 256x256' release): "
            f"{'not given' if not folder else f'no folder {folder!r}'}"
        )
    checkpoint = paths.get("ncsn_checkpoint")
    if "ncsn_checkpoint" in needs and not (checkpoint and os.path.isfile(checkpoint)):
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


def _tfds_missing(name):
    """A message when a TFDS dataset is neither prepared nor downloadable, else None."""
    from pipeline import imports

    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return f"tfds:{name} needs tensorflow-datasets (pip install tensorflow-datasets)"
    try:
        builder = tfds.builder(name)
        if os.path.isdir(builder.data_dir) and os.listdir(builder.data_dir):
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
            if not os.path.isfile(path) and not imports.reachable("github.com"):
                problems.append(
                    f"pytorch-fid's weights for FID: not at {path} and github.com cannot be reached; download "
                    f"{weights.FID_WEIGHTS_URL} and pass --fid_weights=PATH"
                )
        if config.retrieval_features == "inception" and config.inception_weights == "imagenet":
            cached = os.path.expanduser("~/.keras/models/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
            if not os.path.isfile(cached) and not imports.reachable("storage.googleapis.com"):
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
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
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
    from pipeline.stages.base import read_json

    return read_json(path) if os.path.exists(path) else {}


def fid_at(features_path, name, count):
    """FID of a sampler's first ``count`` samples against the run's training images.

    Args:
        features_path: the evaluate stage's ``features.npz``.
        name: the sampler.
        count: how many of its samples (fewer when it has fewer).

    Returns:
        ``(fid, samples used)``; ``(None, n)`` with fewer than 2 samples.
    """
    import numpy as np

    from kdiff import metrics

    with np.load(features_path) as data:
        train, samples = data["train"], data[f"samples/{name}"][:count]
    if len(samples) < 2:
        return None, len(samples)
    return float(metrics.fid_from_features(train, samples)), len(samples)


def run_results(run, scale, run_dir):
    """The measured figures of one run's rows (``results.json``'s entries).

    Args:
        run: a ``Run``.
        scale: "small" or "seed".
        run_dir: the run's output folder.

    Returns:
        A list of dicts: ``run``, ``row``, ``sampler``, ``label``, ``steps``, ``nfe``,
        ``num_samples``, ``fid_survey_count`` / ``survey_count`` (FID of the first 100),
        ``fid`` / ``fid_infinity`` / ``fid_low`` / ``fid_high`` (all samples),
        ``train_seconds``, ``sampling_seconds``, ``seconds_per_sample``, ``memorization_ratio``,
        ``mean_nn_distance``, ``retrieval_panel``, ``survey`` (the survey's figures).
    """
    history = _read(os.path.join(run_dir, "train", "model", "history.json"))
    timings = _read(os.path.join(run_dir, "sample", "samples", "timings.json"))
    metrics = _read(os.path.join(run_dir, "evaluate", "metrics", "metrics.json")).get("samplers", {})
    retrieval = _read(os.path.join(run_dir, "retrieve", "retrieval", "retrieval.json"))
    features = os.path.join(run_dir, "evaluate", "metrics", "features.npz")
    results = []
    for row in run.rows:
        name, kwargs = sampler_config(row, scale)
        timing, scores, found = timings.get(name, {}), metrics.get(name, {}), retrieval.get(name, {})
        n = timing.get("num_samples") or 0
        seconds = timing.get("sampling_seconds") if timing.get("sampling_seconds") is not None else timing.get("seconds")
        fid_100, used = fid_at(features, name, SURVEY_SAMPLES) if os.path.exists(features) else (None, 0)
        panel = found.get("panel", {}).get("path")
        results.append({
            "run": run.name, "row": row.key, "sampler": name, "label": row.label, "steps": kwargs.get("steps"),
            "nfe": timing.get("nfe"), "num_samples": n, "fid_survey_count": fid_100, "survey_count": used,
            "fid": scores.get("fid"), "fid_infinity": scores.get("fid_infinity"),
            "fid_low": scores.get("fid_low"), "fid_high": scores.get("fid_high"),
            "train_seconds": history.get("seconds"), "imported": history.get("imported", {}).get("path"),
            "sampling_seconds": seconds, "seconds_per_sample": seconds / n if seconds is not None and n else None,
            "memorization_ratio": found.get("memorization_ratio"), "mean_nn_distance": found.get("mean_nn_distance"),
            "retrieval_features": found.get("feature_space"),
            "retrieval_panel": os.path.join(run_dir, "retrieve", "retrieval", panel) if panel else None,
            "survey": dict(row.survey),
        })
    return results


# --------------------------------------------------------------------------- report


def _num(value, digits=3):
    from pipeline.stages.report import _fmt

    return _fmt(None if value is None else float(value), digits)


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
        ours += [
            f"{_num(result['fid_survey_count'])} ({result['survey_count']:,})",
            f"{_num(result['fid'])} ({result['num_samples']:,})", interval, _num(result["fid_infinity"]),
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
        scale: "small" or "seed" (the header of kdiff's columns says which).
        measured_on: kdiff's hardware (``hardware()``).

    Returns:
        Markdown lines.
    """
    ours, theirs = _headers(experiment)
    side = "kdiff stand-in" if scale == "small" else "kdiff"
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


def render_report(experiment, results, scale, measured_on, pictures=()):
    """The experiment's report as Markdown.

    Args:
        experiment: the ``Experiment``.
        results: ``run_results`` rows of its runs.
        scale: "small" or "seed".
        measured_on: kdiff's hardware.
        pictures: ``(title, relative path)`` pairs (retrieval panels).

    Returns:
        The Markdown text.
    """
    from pipeline.stages.report import _references

    lines = [f"# {experiment.title}", ""]
    if scale == "small":
        standins = sorted({r["imported"] for r in results if r["imported"]})
        extra = f"; random-weight stand-ins of the pretrained models' classes ({', '.join(standins)})" if standins else ""
        lines += [STANDIN_NOTE.format(standins=extra), ""]
    lines += [
        f"kdiff's reproduction of the survey's {experiment.section} (Cerizza et al., 2023): "
        f"`python -m pipeline.run --experiment={experiment.name} --scale={scale}`. kdiff's FIDs are "
        f"pytorch-fid-compatible at --scale=seed (its FID Inception network) and in the digits classifier's "
        f"features at --scale=small. FID is shown for the first {SURVEY_SAMPLES} samples, as the survey "
        "computed it, and for all the samples drawn with its 95 % bootstrap interval and FID∞ (Chong & "
        "Forsyth, 2020), the value extrapolated to infinitely many samples: the gap shows how far a "
        f"{SURVEY_SAMPLES}-sample FID sits from the reliable one. Times are sampling wall times without the "
        f"one-off graph tracing where it was measured, scaled to {SURVEY_SAMPLES} samples.",
        "",
    ]
    lines += render_table(experiment, results, scale, measured_on) + [""]
    lines += [f"- {note}" for note in experiment.notes] + [""]
    runs = {result["run"]: result for result in results}
    lines += ["## Runs", ""]
    for run in experiment.runs:
        if run.name in runs:
            lines.append(f"- `{run.name}`: {run.label} (`runs/{run.name}/`, its own report in `report/report.md`)")
    lines.append("")
    for title, path in pictures:
        lines += [f"### {title}", "", f"![{title}]({path})", ""]
    lines += _references()
    return "\n".join(lines)


def write_report(experiment, scale, root, measured_on):
    """Writes ``<root>/<experiment>/report.md``, ``report.html``, ``results.json``, ``pictures/``.

    Args:
        experiment: the ``Experiment``.
        scale: "small" or "seed".
        root: ``<output_dir>/<scale>``.
        measured_on: kdiff's hardware.

    Returns:
        The report's path.
    """
    from pipeline.stages.base import atomic_directory, write_json
    from pipeline.stages.report import render_html

    results = [r for run in experiment.runs for r in run_results(run, scale, os.path.join(root, "runs", run.name))]
    with atomic_directory(os.path.join(root, experiment.name)) as out:
        pictures = []
        if "retrieval" in experiment.columns:
            os.makedirs(os.path.join(out, "pictures"))
            for result in results:
                if result["retrieval_panel"] and os.path.exists(result["retrieval_panel"]):
                    relative = f"pictures/{result['run']}_{result['sampler']}_retrieval.png"
                    shutil.copy(result["retrieval_panel"], os.path.join(out, relative))
                    pictures.append((f"{result['label']} (`{result['sampler']}`): nearest training images", relative))
        text = render_report(experiment, results, scale, measured_on, pictures)
        with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        with open(os.path.join(out, "report.html"), "w", encoding="utf-8") as f:
            f.write(render_html(text))
        write_json(os.path.join(out, "results.json"), {
            "experiment": experiment.name, "scale": scale, "measured_on": measured_on,
            "survey_hardware": experiment.survey_hardware, "rows": results,
        })
    return os.path.join(root, experiment.name, "report.md")


# --------------------------------------------------------------------------- running


def configs_for(experiment, scale, overrides=None, paths=None):
    """Run name → ``RunConfig`` of every run of an experiment."""
    return {run.name: run_config(run, scale, overrides, paths) for run in experiment.runs}


def plan(name, scale, overrides=None, paths=None, allow_cpu=False):
    """An experiment and its runs' configs, checked before anything runs.

    Args:
        name: the experiment (a key of ``experiments()``).
        scale: "small" or "seed".
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
    if scale not in SCALES:
        raise ValueError(f"Expected `scale` in {list(SCALES)}. Received: scale={scale!r}")
    configs = configs_for(experiment, scale, overrides, paths)
    problems = requirements(experiment, scale, paths, configs, allow_cpu)
    if problems:
        raise ValueError(
            f"--experiment={name} --scale=seed needs what is missing here:\n  - " + "\n  - ".join(problems)
            + "\n(see the README's 'The survey's experiments'; --scale=small runs the same code on the digits)"
        )
    return experiment, configs
