"""Sample stage: Model → Samples, fanned out with Beam over samplers × seed shards.

For each sampler of the config (``samplers``: name → ``kdiff.sample`` arguments) the
``num_samples`` images are split into ``sample_shards`` work items, plus one small
trajectory item; a Beam pipeline

    Create work items → SampleShards (DoFn: loads the export once in setup(), samples,
    writes each shard's .npz) → GroupByKey(sampler) → AssembleSampler (concatenates the
    shards in order, writes samples.npz, grid.png, trajectory.png and the timing)

writes, atomically, under ``outputs["samples"]``:

* ``<name>/samples.npz`` — ``images``: uint8 [num_samples, H, W, C]; for a
  class-conditional model also ``labels``: the int32 class each sample was drawn for
  (``sample_labels``: the classes in turn, or the sampler config's ``class_labels``);
* ``<name>/grid.png`` — the first (up to) 100 samples, scaled up when small;
* ``<name>/trajectory.png`` — a few samples' states from noise to image (rows: samples,
  columns: ~10 evenly spaced states), as in the survey's Figures 15, 16 and 19 (Cerizza et al. 2023);
* ``timings.json`` — per sampler (see :func:`sampling_timing`): ``seconds`` (sampling
  wall time summed over shards, graph tracing included), ``trace_seconds`` (the one-off
  tracing of the warm-up batch), ``sampling_seconds`` (without it), ``images_per_second``
  (with tracing), ``sampling_images_per_second`` (without), ``warmup_seconds``,
  ``warmup_images``, ``num_samples``, ``sampler``, ``steps``, ``guidance_scale``,
  ``precision`` (what the network computed in; None: the export's), ``nfe``
  (network evaluations per sample, ``kdiff.samplers.registry.Sampler.nfe``), ``shards``,
  ``trajectory_seconds``.

Every shard's seed is derived from (``seed``, sampler name, shard index), so the same
config gives the same images, whatever the runner or the order in which shards run.
The workers read and write the local file system: with a distributed runner the output
directory must be shared by the workers.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time

import apache_beam as beam
import numpy as np

from pipeline import io
from pipeline.stages.base import (
    MODEL,
    SAMPLES,
    StageError,
    StageSpec,
)

SPEC = StageSpec(
    name="sample",
    inputs={"model": MODEL},
    outputs={"samples": SAMPLES},
    reads_urls=True,  # its workers load the export and write their shards through pipeline.io
)

WORK_DIR = "_work"
TRAJECTORY_FRAMES = 10
GRID_MAX = 100
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# kdiff.sample arguments that a sampler config may not set (the stage sets them).
_RESERVED = ("seed", "batch_size", "return_trajectory", "progress", "model")
# What a sampler config may set for the stage itself, not passed to kdiff.sample.
_STAGE_ARGUMENTS = ("num_samples",)


def _log(message):
    print(f"sample: {message}", flush=True)


def derive_seed(seed, name, index):
    """A seed for one work item: a stable hash of (seed, sampler name, index), < 2**62."""
    digest = hashlib.sha256(f"{int(seed)}/{name}/{index}".encode()).hexdigest()
    return int(digest[:15], 16)


def shard_counts(num_samples, shards):
    """``num_samples`` split into ``shards`` near-equal counts (empty shards dropped)."""
    base, extra = divmod(int(num_samples), int(shards))
    return [c for c in (base + (1 if i < extra else 0) for i in range(int(shards))) if c > 0]


def sampler_count(kwargs, num_samples):
    """The images one sampler draws: its config's ``num_samples``, else the run's.

    Args:
        kwargs: the sampler's config.
        num_samples: the run's ``num_samples``.

    Returns:
        An int.
    """
    return int(kwargs.get("num_samples", num_samples))


def sample_arguments(kwargs):
    """A sampler config without the stage's own keys (``_STAGE_ARGUMENTS``): ``kdiff.sample``'s."""
    return {key: value for key, value in kwargs.items() if key not in _STAGE_ARGUMENTS}


def work_items(samplers, num_samples, shards, seed, trajectory_samples=None):
    """The Beam work items: one per (sampler, shard), plus one trajectory item per sampler.

    Args:
        samplers: name → ``kdiff.sample`` arguments.
        num_samples: images per sampler (a sampler config's own ``num_samples`` first).
        shards: work items per sampler.
        seed: the run's seed.
        trajectory_samples: samples in each trajectory picture (0: no trajectory item; None:
            ``RunConfig``'s ``trajectory_samples``).

    Returns:
        A list of dicts (picklable, JSON-serializable).
    """
    from pipeline import config as config_lib

    if trajectory_samples is None:
        trajectory_samples = config_lib.field_default("trajectory_samples")
    items = []
    for name, kwargs in samplers.items():
        count_here = sampler_count(kwargs, num_samples)
        counts = shard_counts(count_here, shards)
        for shard, count in enumerate(counts):
            items.append({
                "kind": "shard", "name": name, "shard": shard, "num_shards": len(counts),
                "count": count, "offset": sum(counts[:shard]),
                "seed": derive_seed(seed, name, shard), "kwargs": sample_arguments(kwargs),
            })
        if trajectory_samples:
            items.append({
                "kind": "trajectory", "name": name, "shard": -1, "num_shards": len(counts),
                "count": min(trajectory_samples, count_here),
                "seed": derive_seed(seed, name, "trajectory"), "kwargs": sample_arguments(kwargs),
            })
    return items


def sample_labels(num_classes, kwargs, offset, count):
    """The class labels of a shard's samples: the sampler config's ``class_labels`` (one class
    for all), else the classes in turn over the sampler's whole run (sample i has class
    i mod K). None for an unconditional model.

    Args:
        num_classes: the model's classes (None: unconditional).
        kwargs: the sampler's ``kdiff.sample`` arguments.
        offset: the index of the shard's first sample.
        count: the shard's samples.

    Returns:
        int32 labels [count], or None.
    """
    if num_classes is None:
        return None
    fixed = kwargs.get("class_labels")
    if fixed is not None:
        return np.broadcast_to(np.asarray(fixed, np.int32), (count,)).copy()
    return ((int(offset) + np.arange(count)) % int(num_classes)).astype(np.int32)


def _network_evaluations(kwargs):
    """The network evaluations per sample of a sampler config (doubled batches of guidance
    count once), or None where the registry cannot tell (no steps given, or a cost per step
    that depends on the options)."""
    from kdiff.samplers import registry

    steps = kwargs.get("steps")
    if steps is None or kwargs.get("sampler") not in registry.names():
        return None
    return registry.get(kwargs["sampler"]).nfe(steps)


def _grid_scale(height):
    return max(1, 64 // max(int(height), 1))


# ----------------------------------------------------------------------------- Beam


class SamplerFailed(RuntimeError):
    """Names the work item whose sampling failed (the cause is the sampler's own error)."""


class SampleShards(beam.DoFn):
    """Samples one work item with the exported model, loaded once per worker in ``setup``.

    A sampler config whose ``precision`` differs from the export's (``"bfloat16"``: the
    export computes in float32) samples the trained Keras model instead (``model.keras``
    beside the export, loaded once, on first use): kdiff runs its network in that
    precision with the same EMA weights.

    Writes ``<work_dir>/<name>/shard-<i>.npz`` (or ``trajectory.npz``) and yields
    ``(name, record)`` with the file, the count and the sampling time.

    Args:
        export_path: the kdiff SavedModel directory (a path: the model is never pickled).
        work_dir: where the shard files go.
        batch_size: images per sampling batch.
    """

    def __init__(self, export_path, work_dir, batch_size):
        super().__init__()
        self.export_path = export_path
        self.work_dir = work_dir
        self.batch_size = int(batch_size)
        self.model = None
        self.keras_model = None

    def setup(self):
        import kdiff

        with io.local_copy(self.export_path) as local:
            self.model = kdiff.export.load(local)
        self.warmed_up = set()  # samplers whose first (tracing) batch this worker has run

    def _model_for(self, kwargs):
        """The export, or for another ``precision`` the trained Keras model."""
        precision = kwargs.get("precision")
        if precision is None or precision == self.model.precision:
            return self.model
        if self.keras_model is None:
            self.keras_model = load_keras_model(self.export_path)
        return self.keras_model

    def process(self, item):
        try:
            yield from self._process(item)
        except Exception as error:
            where = "trajectory" if item["kind"] == "trajectory" else f"shard {item['shard'] + 1}/{item['num_shards']}"
            raise SamplerFailed(f"sampler {item['name']!r} ({where})") from error

    def _process(self, item):
        import kdiff

        name, kwargs = item["name"], dict(item["kwargs"])
        directory = os.path.join(self.work_dir, name)
        io.makedirs(directory)
        if item["kind"] == "trajectory":
            start = time.perf_counter()
            images, trajectory = kdiff.sample(
                self._model_for(kwargs), item["count"], seed=item["seed"], batch_size=item["count"],
                return_trajectory=True, **kwargs,
            )
            seconds = time.perf_counter() - start
            path = os.path.join(directory, "trajectory.npz")
            io.write_npz(path, compressed=True, images=images, trajectory=trajectory)
            _log(f"{name}: trajectory of {item['count']} samples ({trajectory.shape[0]} states) in {seconds:.1f} s")
            yield name, {"kind": "trajectory", "path": path, "count": int(item["count"]), "seconds": seconds}
            return
        count, batch_size = int(item["count"]), self.batch_size
        num_batches = math.ceil(count / batch_size)
        labels = sample_labels(getattr(self.model, "num_classes", None), kwargs, item.get("offset", 0), count)
        batches, times = [], []
        for index in range(num_batches):
            n = min(batch_size, count - index * batch_size)
            if labels is not None:
                kwargs["class_labels"] = labels[index * batch_size : index * batch_size + n]
            start = time.perf_counter()
            batches.append(kdiff.sample(
                self._model_for(kwargs), n, seed=derive_seed(item["seed"], name, index), batch_size=n, **kwargs,
            ))
            elapsed = time.perf_counter() - start
            warmup = name not in self.warmed_up  # this worker's first batch of the sampler traces its graph
            self.warmed_up.add(name)
            times.append({"images": n, "seconds": elapsed, "warmup": warmup})
            _log(
                f"{name}: shard {item['shard'] + 1}/{item['num_shards']}, batch {index + 1}/{num_batches}: "
                f"{n} images in {elapsed:.1f} s" + (" (warm-up: includes graph tracing)" if warmup else "")
            )
        path = os.path.join(directory, f"shard-{item['shard']:05d}.npz")
        io.write_npz(path, compressed=True, images=np.concatenate(batches), **({} if labels is None else {"labels": labels}))
        yield name, {
            "kind": "shard", "shard": int(item["shard"]), "path": path, "count": count,
            "seconds": sum(t["seconds"] for t in times), "batches": times,
        }


class AssembleSampler(beam.DoFn):
    """Concatenates one sampler's shards in order and writes its files and timing.

    Args:
        out_dir: the Samples directory being written (the atomic temporary directory).
        samplers: name → ``kdiff.sample`` arguments (for the timing record).
        num_samples: the run's images per sampler (a sampler config's own ``num_samples`` first).
    """

    def __init__(self, out_dir, samplers, num_samples):
        super().__init__()
        self.out_dir = out_dir
        self.samplers = samplers
        self.num_samples = int(num_samples)

    def process(self, element):
        import kdiff

        name, records = element
        records = list(records)
        shards = sorted((r for r in records if r["kind"] == "shard"), key=lambda r: r["shard"])
        trajectories = [r for r in records if r["kind"] == "trajectory"]
        arrays = [io.read_npz(r["path"]) for r in shards]
        images = np.concatenate([a["images"] for a in arrays])
        expected = sampler_count(self.samplers.get(name, {}), self.num_samples)
        if len(images) != expected:
            raise RuntimeError(f"{name}: expected {expected} samples, assembled {len(images)}")
        directory = os.path.join(self.out_dir, name)
        io.makedirs(directory)
        labelled = {"labels": np.concatenate([a["labels"] for a in arrays])} if "labels" in arrays[0] else {}
        io.write_npz(os.path.join(directory, "samples.npz"), compressed=True, images=images, **labelled)
        scale = _grid_scale(images.shape[1])
        with io.local_output(os.path.join(directory, "grid.png")) as local:  # PIL writes by name
            kdiff.images.save_grid(images[:GRID_MAX], local, scale=scale)
        if trajectories:
            trajectory = io.read_npz(trajectories[0]["path"])["trajectory"]
            with io.local_output(os.path.join(directory, "trajectory.png")) as local:
                kdiff.images.save_trajectory(trajectory, local, num_frames=TRAJECTORY_FRAMES, scale=scale)
        kwargs = self.samplers.get(name, {})
        timing = sampling_timing([batch for r in shards for batch in r["batches"]])
        timing.update({
            "num_samples": len(images),
            "sampler": kwargs.get("sampler"),
            "steps": kwargs.get("steps"),
            "guidance_scale": kwargs.get("guidance_scale"),
            "precision": kwargs.get("precision"),  # None: the export's
            "nfe": _network_evaluations(kwargs),
            "shards": len(shards),
            "trajectory_seconds": round(float(sum(r["seconds"] for r in trajectories)), 4),
        })
        io.write_json(os.path.join(os.path.dirname(shards[0]["path"]), "timing.json"), timing)
        steady = (
            f"; without the {timing['trace_seconds']:.1f} s of graph tracing {timing['sampling_seconds']:.1f} s, "
            f"{timing['sampling_images_per_second']:.2f} images/s"
            if timing["sampling_seconds"] is not None
            else ""
        )
        _log(f"{name}: {len(images)} samples in {timing['seconds']:.1f} s{steady}")
        yield name


def sampling_timing(batches):
    """One sampler's sampling time, with and without the one-off graph tracing.

    The first batch a worker samples with a sampler is its warm-up: it traces the
    sampling graph. Its tracing time is estimated as what it took beyond the steady
    per-image rate of the other (non-warm-up) batches.

    Args:
        batches: one dict per batch, from every shard: ``images`` (count), ``seconds``
            (wall time), ``warmup`` (True for a worker's first batch of the sampler).

    Returns:
        A dict: ``seconds`` (total wall time), ``warmup_seconds`` and ``warmup_images``
        (of the warm-up batches), ``trace_seconds``, ``sampling_seconds`` (``seconds``
        minus ``trace_seconds``), ``images_per_second`` (over ``seconds``) and
        ``sampling_images_per_second`` (over ``sampling_seconds``), rounded to 4
        decimals; the last three are None when no batch but warm-ups ran (e.g. one
        batch per worker), as the steady rate is then unknown.
    """
    if not batches:
        raise ValueError(f"Expected at least one timed batch. Received: batches={batches!r}")
    total = float(sum(b["seconds"] for b in batches))
    images = int(sum(b["images"] for b in batches))
    warmups = [b for b in batches if b["warmup"]]
    steady_images = sum(b["images"] for b in batches if not b["warmup"])
    steady_seconds = float(sum(b["seconds"] for b in batches if not b["warmup"]))
    trace = sampling = None
    if steady_images > 0 and steady_seconds > 0:
        per_image = steady_seconds / steady_images
        trace = float(sum(max(0.0, b["seconds"] - b["images"] * per_image) for b in warmups))
        sampling = total - trace

    def rounded(value):
        return None if value is None else round(value, 4)

    return {
        "seconds": round(total, 4),
        "warmup_seconds": round(float(sum(b["seconds"] for b in warmups)), 4),
        "warmup_images": int(sum(b["images"] for b in warmups)),
        "trace_seconds": rounded(trace),
        "sampling_seconds": rounded(sampling),
        "images_per_second": round(images / total, 4) if total > 0 else None,
        "sampling_images_per_second": rounded(images / sampling) if sampling else None,
    }


def load_keras_model(export_path):
    """The trained ``kdiff`` model saved beside an export (``<model>/model.keras``).

    Args:
        export_path: the train stage's ``<model>/export`` directory.

    Returns:
        The ``kdiff.DDPM`` / ``NCSN`` / ``ScoreSDE``.

    Raises:
        StageError: no ``model.keras`` beside the export.
    """
    import keras

    import kdiff.diffusion  # noqa: F401  (registers kdiff's models with Keras; loading them, the networks)

    path = os.path.join(os.path.dirname(os.path.normpath(export_path)), "model.keras")
    if not io.exists(path):
        raise StageError(
            f"sample: a sampler asks for another precision than the export's, which needs the trained "
            f"Keras model; expected it at {path}. Received: no such file (rerun the train stage)."
        )
    with io.local_copy(path) as local:
        return keras.saving.load_model(local, compile=False)


def build_pipeline(root, items, export_path, work_dir, out_dir, samplers, num_samples, batch_size):
    """Adds the sampling transforms to a Beam pipeline ``root``; returns the sampler names written."""
    return (
        root
        | "CreateWorkItems" >> beam.Create(items, reshuffle=False)
        | "SampleShards" >> beam.ParDo(SampleShards(export_path, work_dir, batch_size))
        | "GroupBySampler" >> beam.GroupByKey()
        | "AssembleSampler" >> beam.ParDo(AssembleSampler(out_dir, samplers, num_samples))
    )


# ----------------------------------------------------------------------------- executor

# kdiff.sample's own arguments that a sampler config may set, besides the sampler's options.
_SAMPLE_ARGUMENTS = ("sampler", "steps", "class_labels", "guidance_scale", "jit_compile", "precision")


def _check_recipe_name(name, sampler, steps, options):
    """Raises unless a row named like a recipe runs that recipe (its sampler, steps and
    options, nothing else), so that a recipe name means the same sampler in every report.

    Args:
        name: the row's name.
        sampler, steps, options: the row's sampler, steps and sampler options.

    Raises:
        StageError: naming the row, the recipe and what differs.
    """
    from kdiff.samplers import recipes

    table = recipes.recipes()
    if name not in table:
        return
    recipe = table[name]
    differs = [f"sampler={sampler!r}"] if sampler != recipe.sampler else []
    differs += [f"steps={steps!r}"] if steps is not None and steps != recipe.steps else []
    differs += [
        f"{key}={options.get(key, '<unset>')!r}" for key, value in recipe.options.items() if options.get(key) != value
    ]
    differs += [f"{key}={value!r}" for key, value in options.items() if key not in recipe.options]
    if differs:
        wanted = {"sampler": recipe.sampler, "steps": recipe.steps, **recipe.options}
        raise StageError(
            f"sample: sampler {name!r} is named like the recipe {name!r} ({wanted}) but sets {', '.join(differs)}; "
            "a row named like a recipe must run it: set what the recipe sets, or give the row another name."
        )


def check_samplers(samplers, process):
    """Checks the sampler configs before any work starts; StageError naming the bad one.

    Args:
        samplers: name → ``kdiff.sample`` arguments.
        process: the model's ``kdiff.process.Process`` (the samplers must walk it).
    """
    from kdiff.samplers import registry, request
    from kdiff.samplers.draw import SAMPLING_PRECISIONS

    if not isinstance(samplers, dict) or not samplers:
        raise StageError(f"sample: expected `samplers` as a non-empty dict name → kdiff.sample arguments. Received: {samplers!r}")
    for name, kwargs in samplers.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise StageError(
                f"sample: sampler name {name!r} is not usable as a directory name; use letters, digits, '_', '-' or '.'."
            )
        if not isinstance(kwargs, dict):
            raise StageError(f"sample: the arguments of sampler {name!r} must be a dict. Received: {kwargs!r}")
        sampler = kwargs.get("sampler")
        if sampler is None:
            raise StageError(f"sample: sampler {name!r} names no sampler; expected one of {sorted(registry.names())}.")
        options = {k: v for k, v in kwargs.items() if k not in _SAMPLE_ARGUMENTS + _STAGE_ARGUMENTS + _RESERVED}
        try:  # the request check kdiff.sample makes: sampler, steps, options, fit to the process
            request.resolve(process, sampler, kwargs.get("steps"), options)
        except request.RequestError as error:
            raise StageError(f"sample: sampler {name!r} ({sampler}): {error}") from None
        _check_recipe_name(name, sampler, kwargs.get("steps"), options)
        precision = kwargs.get("precision")
        if precision is not None and precision not in SAMPLING_PRECISIONS:
            raise StageError(
                f"sample: sampler {name!r} has precision={precision!r}; expected one of {list(SAMPLING_PRECISIONS)} "
                "(what its network computes in)."
            )
        count = kwargs.get("num_samples", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise StageError(
                f"sample: sampler {name!r} has num_samples={count!r}; expected a positive int (its image count, "
                "in place of --num_samples)."
            )
        reserved = [key for key in _RESERVED if key in kwargs]
        if reserved:
            raise StageError(
                f"sample: sampler {name!r} sets {reserved}, which the stage sets itself "
                "(use --seed, --sample_batch_size)."
            )


def _failure(error):
    """What a failed sampling pipeline says: (is it NaN / Inf, the message, naming the work item)."""
    from kdiff.samplers import NonFiniteSampleError

    from pipeline import errors

    failed = errors.find_error(error, SamplerFailed)
    where = f"{failed}: " if failed is not None else ""
    nonfinite = errors.find_error(error, NonFiniteSampleError) or errors.find_error(error, FloatingPointError)
    detail = str(nonfinite) if nonfinite is not None else errors.beam_error_message(error)
    return nonfinite is not None, where + detail


def check_written(out, samplers, num_samples, trajectory_samples):
    """The end-of-stage check: every sampler's files are there, its ``samples.npz`` with the
    samples asked for (and one label each, for a class-conditional model).

    Args:
        out: the Samples directory written.
        samplers: name → sampler config.
        num_samples: the run's images per sampler (a sampler config's own ``num_samples`` first).
        trajectory_samples: samples in each trajectory picture (0: none drawn).

    Raises:
        StageError: naming the sampler and the file missing or short.
    """
    from pipeline.stages.base import record_count

    for name, kwargs in samplers.items():
        directory = os.path.join(out, name)
        files = ["samples.npz", "grid.png"] + (["trajectory.png"] if trajectory_samples else [])
        missing = [file for file in files if not io.isfile(os.path.join(directory, file))]
        if missing:
            raise StageError(
                f"sample: sampler {name!r} wrote no {', '.join(missing)} in {directory}; the runner did not run "
                "all of the pipeline. Rerun the stage."
            )
        expected = sampler_count(kwargs, num_samples)
        rows = record_count(os.path.join(directory, "samples.npz"))  # None: its arrays disagree
        if rows != expected:
            held = "arrays of different lengths" if rows is None else f"{rows} samples"
            raise StageError(
                f"sample: {os.path.join(directory, 'samples.npz')} holds {held}; sampler {name!r} was asked for "
                f"{expected}. Rerun the stage."
            )


class Executor:
    """Runs the sample stage: ``Do(inputs, outputs, params)``."""

    def Do(self, inputs, outputs, params):
        from apache_beam.options.pipeline_options import PipelineOptions

        from kdiff import export as export_lib
        from kdiff.process import from_model_config

        from pipeline import config as config_lib
        from pipeline import errors as errors_lib

        export_path = io.abspath(os.path.join(inputs["model"], "export"))
        try:
            with io.local_copy(export_path) as local:
                config = export_lib.read_config(local)
        except ValueError as error:
            raise StageError(
                f"sample: no usable kdiff export at {export_path} ({error}); run the train stage first "
                "(or rerun it with --force)."
            ) from error
        try:
            params = config_lib.resolve(params, SPEC.parameters)  # as it is when resolved (the orchestrator's)
        except ValueError as error:
            raise StageError(f"sample: {error}") from error
        samplers = params["samplers"]
        check_samplers(samplers, from_model_config(config, f"export config at {export_path}"))
        num_samples, shards = params["num_samples"], params["sample_shards"]
        batch_size, seed = params["sample_batch_size"], params["seed"]
        items = work_items(samplers, num_samples, shards, seed, params["trajectory_samples"])
        beam_args = list(params.get("beam_args") or ["--runner=DirectRunner"])
        counts = ", ".join(f"{name} {sampler_count(kwargs, num_samples)}" for name, kwargs in samplers.items())
        _log(
            f"{len(samplers)} sampler(s) ({counts} images) in up to {shards} shard(s) each, batches of "
            f"{batch_size}, from {export_path}"
        )
        # The workers write the shards and each sampler's files through pipeline.io into the
        # run's own store (a bucket for a run on S3): none relies on the launcher's disk.
        with io.shared_directory(outputs["samples"]) as out:
            work_dir = os.path.join(out, WORK_DIR)
            io.makedirs(work_dir, exist_ok=False)
            # Beam logs a failing DoFn's traceback at ERROR before raising; the StageError
            # below says what failed, so that log is held back while the pipeline runs.
            beam_logger = logging.getLogger("apache_beam.runners.common")
            level = beam_logger.level
            beam_logger.setLevel(logging.CRITICAL)
            try:
                with beam.Pipeline(options=PipelineOptions(beam_args)) as root:
                    build_pipeline(root, items, export_path, work_dir, out, samplers, num_samples, batch_size)
            except Exception as error:  # report the DoFn's own error, not Beam's wrapper
                nonfinite, detail = _failure(error)
                if nonfinite:
                    raise StageError(
                        f"sample: sampling produced NaN or Inf ({detail}). The model may be undertrained or "
                        "diverged (check the train stage's loss), or a sampler's step size is too large."
                    ) from error
                cause = errors_lib.root_cause(error)
                raise StageError(f"sample: sampling failed: {type(cause).__name__}: {detail}") from error
            finally:
                beam_logger.setLevel(level)
            timings = {}
            for name in samplers:
                path = os.path.join(work_dir, name, "timing.json")
                if not io.exists(path):
                    raise StageError(f"sample: sampler {name!r} wrote no samples; see the messages above.")
                timings[name] = io.read_json(path)
            check_written(out, samplers, num_samples, params["trajectory_samples"])
            io.remove_tree(work_dir)
            io.write_json(os.path.join(out, "timings.json"), timings)
        _log(f"wrote {outputs['samples']}: " + ", ".join(
            f"{name} {t['seconds']:.1f} s" for name, t in timings.items()
        ))


__all__ = [
    "SPEC",
    "AssembleSampler",
    "Executor",
    "SampleShards",
    "build_pipeline",
    "check_samplers",
    "check_written",
    "derive_seed",
    "sampling_timing",
    "shard_counts",
    "work_items",
]
