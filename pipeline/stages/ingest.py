"""Ingest: a source of images → sharded TFRecords of tf.train.Example plus stats.json, on Beam.

The Beam pipeline (every transform labelled):

    Enumerate          the source's records, planned in the driver (``data.plan_source``:
                       digits or IDX indices, sorted folder paths or one TFDS split); with a
                       ``limit``, a seeded class-stratified subset or the first ``limit``
                       by file number (``limit_order``, ``data.select``)
    ReadAndPreprocess  a DoFn that opens its reader once in ``setup()`` and yields
                       (key, uint8 [S, S, C], label): mode conversion, center crop, resize
    EvalKeys           a CombineFn choosing the held-out keys: the 10% (at least 1) with
                       the smallest sha256(seed/key) — deterministic, independent of the
                       runner and of the image bytes
    Split              tags each example train or eval (the eval keys as a side input)
    Encode             (shard, (key, tf.train.Example bytes)): image PNG, label, key; the
                       shard from the key alone (``shard_index``): ``num_shards`` train
                       shards, 1 eval shard
    GroupByShard,      each shard's examples, sorted by key, in its TFRecord file (an
    WriteShards        empty shard too): the same files from every run and runner
    Stats              a CombineFn (counts, label counts, pixel mean / std of the train
                       images in [0, 1])
    AwaitShards,       stats.json, written once every shard is (``JoinBranches``: the one
    WriteStats         last step on which every branch ends, which Beam's DaskRunner needs)

The Executor then checks the files against what was read (``check_written``): a runner
that ran part of the pipeline fails the stage instead of leaving it incomplete.

Everything is written inside ``io.shared_directory(outputs["examples"])``: locally a failed
or killed run (a corrupt image fails it, naming the file) leaves nothing at the output path;
on an object store the workers write into it directly, and the run trusts it only once its
``_DONE.json`` is written. The workers write the shards through ``pipeline.io`` rather than
with Beam's ``WriteToTFRecord``, so that they write to any store the pipeline reads, with
its configuration, and need none of Beam's own file systems (its GCS one renames through
GCS's batch API, which fake-gcs-server, the emulator the tests use, lacks).
The orchestrator passes the parameters resolved (``RunConfig.resolved``); in a plain dict,
those it lacks take their ``RunConfig`` defaults, and every one passes its ``RunConfig``
check (``pipeline.config.resolve``). ``channels`` None means the source's own: digits, IDX files and
Fashion-MNIST 1; TFDS 1 when its image feature has one channel, else 3; folders 3 (pass ``channels=1`` for a
grayscale folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import config as config_lib
from pipeline import data, io
from pipeline.branches import CombineAll, JoinBranches
from pipeline.errors import find_error
from pipeline.stages import base
from pipeline.stages.base import (
    EXAMPLES,
    StageError,
    StageSpec,
)

SPEC = StageSpec(
    name="ingest",
    inputs={},
    outputs={"examples": EXAMPLES},
    reads_urls=True,  # its workers read the source and write the shards through pipeline.io
)

PROGRESS_EVERY = 2000  # images per worker between progress lines


def split_hash(seed, key):
    """A stable 64-bit hash of a record key under a seed (the deterministic shuffle)."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}/{key}".encode()).digest()[:8], "big")


def num_eval(count, fraction=data.EVAL_FRACTION):
    """Held-out examples for ``count`` examples: round(fraction × count), at least 1 (0 when count < 2)."""
    if count < 2:
        return 0
    return min(count - 1, max(1, round(fraction * count)))


class ReadAndPreprocessFn(beam.DoFn):
    """record → (key, uint8 [image_size, image_size, channels], label).

    The source's reader (scikit-learn's digits, an IDX file's array, a TFDS split) is opened
    once per worker in ``setup()``; only the small ``Source`` and its options are pickled
    with the DoFn.
    """

    def __init__(self, source, options, image_size, channels, crop_size=None):
        self.source = source
        self.options = dict(options or {})
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.crop_size = None if crop_size is None else int(crop_size)
        self.images = beam.metrics.Metrics.counter("ingest", "images")

    def setup(self):
        self._reader = data.open_reader(self.source, self.options)
        self._count = 0

    def process(self, record):
        for key, image, label in self._reader(record):
            try:
                array = data.preprocess(image, self.image_size, self.channels, crop_size=self.crop_size)
            except (ValueError, OSError) as error:
                where = os.path.join(self.source.name, key) if self.source.kind == "folder" else (
                    f"{key} of {self.options['images']}" if self.source.kind == "idx" else key
                )
                raise StageError(
                    f"Cannot preprocess image {where} of dataset {self.source.spec!r}: {type(error).__name__}: {error}. "
                    "Fix or remove it and run again."
                ) from None
            self._count += 1
            self.images.inc()
            if self._count % PROGRESS_EVERY == 0:
                print(f"ingest: preprocessed {self._count} images (this worker)", flush=True)
            yield key, array, int(label)


class EvalKeysFn(beam.CombineFn):
    """All keys → the frozenset of held-out keys (smallest ``split_hash``; ``num_eval`` of them)."""

    def __init__(self, seed, fraction=data.EVAL_FRACTION):
        self.seed = int(seed)
        self.fraction = float(fraction)

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, key):
        accumulator.append((split_hash(self.seed, key), key))
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = []
        for accumulator in accumulators:
            merged.extend(accumulator)
        return merged

    def extract_output(self, accumulator):
        chosen = sorted(accumulator)[: num_eval(len(accumulator), self.fraction)]
        return frozenset(key for _, key in chosen)


def tag_split(example, eval_keys):
    """(key, image, label) → (split, key, image, label)."""
    key, image, label = example
    return ("eval" if key in eval_keys else "train", key, image, label)


def shard_files(num_shards):
    """The Examples' shard files, train then eval: ``train-00000-of-000NN.tfrecord`` … and
    ``eval-00000-of-00001.tfrecord`` (the names Beam's ``WriteToTFRecord`` gives).

    Args:
        num_shards: the train shards.

    Returns:
        A list of file names; a shard's index in it is its key in the pipeline.
    """
    names = [f"train-{i:05d}-of-{int(num_shards):05d}.tfrecord" for i in range(int(num_shards))]
    return names + ["eval-00000-of-00001.tfrecord"]


def shard_index(tagged, seed, num_shards):
    """The shard of a tagged example (an index into ``shard_files``): the eval shard for a
    held-out example, else the train shard ``split_hash(seed, "shard/" + key) mod num_shards``
    — decided by the key alone, so every run and every runner writes the same files."""
    split, key = tagged[0], tagged[1]
    if split == "eval":
        return int(num_shards)
    return split_hash(seed, f"shard/{key}") % int(num_shards)


def encode_tagged(tagged):
    """(split, key, image, label) → tf.train.Example bytes (``data.encode_example``)."""
    _, key, image, label = tagged
    return data.encode_example(key, image, label)


def keyed_record(tagged, seed, num_shards):
    """(split, key, image, label) → (shard index, (key, tf.train.Example bytes))."""
    return shard_index(tagged, seed, num_shards), (tagged[1], encode_tagged(tagged))


def write_shard(element, directory, names):
    """Writes one shard file, its examples sorted by key; ``(index, [(key, bytes) | None, …])`` →
    ``(file name, examples written)``. ``None`` is the marker that makes every shard's file
    exist, an empty one included."""
    index, records = element
    records = sorted(record for record in records if record is not None)
    count = data.write_tfrecord(io.join(directory, names[index]), (serialized for _, serialized in records))
    return names[index], count


class StatsFn(beam.CombineFn):
    """(split, key, image, label) → counts per split, label counts, train pixel mean / std in [0, 1]."""

    def create_accumulator(self):
        return {"train": 0, "eval": 0, "labels": {}, "sum": 0, "sumsq": 0, "pixels": 0}

    def add_input(self, accumulator, tagged):
        split, _, image, label = tagged
        accumulator[split] += 1
        accumulator["labels"][int(label)] = accumulator["labels"].get(int(label), 0) + 1
        if split == "train":
            values = np.asarray(image, np.int64)
            accumulator["sum"] += int(values.sum())
            accumulator["sumsq"] += int((values * values).sum())
            accumulator["pixels"] += int(values.size)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for name in ("train", "eval", "sum", "sumsq", "pixels"):
                merged[name] += accumulator[name]
            for label, count in accumulator["labels"].items():
                merged["labels"][label] = merged["labels"].get(label, 0) + count
        return merged

    def extract_output(self, accumulator):
        pixels = accumulator["pixels"]
        mean = accumulator["sum"] / pixels if pixels else 0.0
        variance = max(accumulator["sumsq"] / pixels - mean * mean, 0.0) if pixels else 0.0
        return {
            "num_train": accumulator["train"],
            "num_eval": accumulator["eval"],
            "label_counts": {str(k): v for k, v in sorted(accumulator["labels"].items())},
            "pixel_mean": mean / 255.0,
            "pixel_std": math.sqrt(variance) / 255.0,
        }


def write_stats(joined, path, extra):
    """Writes stats.json — the combined statistics plus what the driver knows about the source —
    once every shard is written: ``joined`` is ``JoinBranches``' ``{"stats": [stats], "shards": …}``."""
    fn = StatsFn()
    stats = dict(joined["stats"][0] if joined["stats"] else fn.extract_output(fn.create_accumulator()))
    stats.update(extra)
    if extra.get("num_classes") is None:
        stats["label_counts"] = {}
    io.write_json(path, stats)
    return path


def build_pipeline(pipeline, plan, directory, *, image_size, channels, num_shards, seed, crop_size=None):
    """Adds the ingest transforms to ``pipeline``, writing into ``directory`` (no I/O: the
    graph alone, as a runner's translation, e.g. Dataflow's, needs it).

    The pipeline ends in one step that depends on every branch (``JoinBranches``), combines
    with int keys (``CombineAll``), writes each shard after a ``GroupByKey`` and has no
    multi-output transform: the patterns that every runner, Beam's DaskRunner included, runs
    in full.

    Args:
        pipeline: a ``beam.Pipeline``.
        plan: a ``data.SourcePlan``.
        directory: the (temporary) Examples directory.
        image_size, channels, num_shards, seed, crop_size: as in ``RunConfig``.
    """
    examples = (
        pipeline
        | "Enumerate" >> beam.Create(plan.records)
        | "ReadAndPreprocess" >> beam.ParDo(
            ReadAndPreprocessFn(plan.source, plan.options, image_size, channels, crop_size)
        )
    )
    eval_keys = (
        examples
        | "Keys" >> beam.Map(lambda example: example[0])
        | "EvalKeys" >> CombineAll(EvalKeysFn(seed))
    )
    no_keys = frozenset()  # no examples: no eval keys (ingest then fails: it needs at least 2)
    tagged = examples | "Split" >> beam.Map(
        tag_split, eval_keys=beam.pvalue.AsSingleton(eval_keys, default_value=no_keys)
    )
    names = shard_files(num_shards)
    every_shard = (
        pipeline
        | "ShardIndices" >> beam.Create(list(range(len(names))))
        | "EmptyShards" >> beam.Map(lambda index: (index, None))
    )
    records = tagged | "Encode" >> beam.Map(keyed_record, seed, num_shards)
    shards = (
        (every_shard, records)
        | "AllShards" >> beam.Flatten()
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.Map(write_shard, directory, names)
    )
    stats = tagged | "Stats" >> CombineAll(StatsFn())
    extra = {
        "source": plan.source.spec,
        "image_size": int(image_size),
        "crop_size": None if crop_size is None else int(crop_size),
        "channels": int(channels),
        "num_classes": plan.num_classes,
        "class_names": plan.class_names,
        "num_shards": int(num_shards),
        "seed": int(seed),
    }
    _ = (
        {"stats": stats, "shards": shards}
        | "AwaitShards" >> JoinBranches()
        | "WriteStats" >> beam.Map(write_stats, io.join(directory, data.STATS_FILE), extra)
    )


def check_written(directory, stats, num_shards, expected=None):
    """The end-of-stage check: the shard files hold every example read, in the splits stats.json
    counts, the held-out split its ``num_eval`` share (a runner that skipped, lost or split
    part of the pipeline fails here, not downstream).

    Args:
        directory: the Examples directory written.
        stats: its stats.json (what the pipeline read: the examples per split).
        num_shards: the train shards asked for.
        expected: the images the source plan holds (None when the driver cannot know: TFDS).

    Raises:
        StageError: naming the missing or extra shard, or the split whose count is wrong.
    """
    names = shard_files(num_shards)
    present = {os.path.basename(path) for path in io.glob(directory, "*.tfrecord")}
    missing = [name for name in names if name not in present]
    extra = sorted(present - set(names))
    if missing or extra:
        raise StageError(
            f"ingest: the Examples at {directory} are incomplete: expected the shard files {names}; "
            + (f"missing {missing}" if missing else "") + ("; " if missing and extra else "")
            + (f"unexpected {extra}" if extra else "") + ". The runner did not write the shards planned; rerun the stage."
        )
    for split in ("train", "eval"):
        written = sum(base.record_count(io.join(directory, name)) for name in names if name.startswith(split))
        if written != stats[f"num_{split}"]:
            raise StageError(
                f"ingest: the {split} shards in {directory} hold {written} examples; the pipeline read "
                f"{stats[f'num_{split}']} (stats.json). The runner lost or duplicated records; rerun the stage."
            )
    total = stats["num_train"] + stats["num_eval"]
    if stats["num_eval"] != num_eval(total):
        raise StageError(
            f"ingest: the held-out split in {directory} has {stats['num_eval']} of the {total} examples; the split "
            f"holds out {num_eval(total)} (the smallest hashes of all the keys). The runner combined the keys in "
            "parts; rerun the stage."
        )
    if expected is not None and total != expected:
        raise StageError(
            f"ingest: the pipeline read {total} images; the source's plan holds {expected}. "
            "The runner did not read every record; rerun the stage."
        )


class _DropStageErrors(logging.Filter):
    """Drops Beam's ERROR log of a worker's StageError: the stage re-raises it with a clear message."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, StageError):
            return False
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (a malformed record: keep it)
            return True
        return "pipeline.stages.base.StageError" not in message


_BEAM_ERROR_LOGGERS = ("apache_beam.runners.common", "apache_beam.runners.portability.local_job_service")


@contextlib.contextmanager
def quiet_stage_errors():
    """While running a pipeline, Beam does not log the StageErrors the stage re-raises."""
    drop = _DropStageErrors()
    loggers = [logging.getLogger(name) for name in _BEAM_ERROR_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


class Executor:
    """Runs the ingest Beam pipeline into ``outputs["examples"]``."""

    def Do(self, inputs, outputs, params):
        del inputs  # ingest reads a source, not an artifact
        params = config_lib.resolve(params, SPEC.parameters)  # as it is when resolved (the orchestrator's)
        dataset, limit, limit_order = params["dataset"], params["limit"], params["limit_order"]
        image_size, num_shards, seed = params["image_size"], params["num_shards"], params["seed"]
        channels = params["channels"]
        beam_args = list(params.get("beam_args") or [])

        start = time.perf_counter()
        source = data.parse_source(dataset)
        print(f"ingest: enumerating {dataset}{data.describe_limit(limit, limit_order, seed)}", flush=True)
        plan = data.plan_source(source, limit, limit_order, seed)
        channels = channels or plan.default_channels
        kind = plan.source.kind  # fashion_mnist's plan reads an "idx" or a "tfds" source
        what = f"{len(plan.records)} files" if kind == "folder" else (
            f"split {plan.options.get('split')!r}" if kind == "tfds" else f"{len(plan.records)} images"
        )
        origin = f" ({plan.origin})" if plan.origin else ""
        print(f"ingest: reading {what}{origin} → {image_size}×{image_size}×{channels} with Beam", flush=True)

        # The workers write the shards and stats.json straight into the run's store (a bucket
        # for a run on an object store, through pipeline.io): none relies on the launcher's disk.
        with io.shared_directory(outputs["examples"]) as directory:
            try:
                with quiet_stage_errors(), beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
                    build_pipeline(
                        pipeline, plan, directory, image_size=image_size, channels=channels, num_shards=num_shards,
                        seed=seed, crop_size=params["crop_size"],
                    )
            except Exception as error:
                stage_error = find_error(error, StageError)  # a worker's StageError, unwrapped
                if stage_error is not None:
                    raise stage_error from None
                raise
            stats_path = io.join(directory, data.STATS_FILE)
            if not io.exists(stats_path):
                raise StageError(
                    f"ingest: the pipeline wrote no {data.STATS_FILE} in {directory}; the runner did not run "
                    "its last step. Rerun the stage."
                )
            stats = io.read_json(stats_path)
            if stats["num_train"] < 1 or stats["num_eval"] < 1:
                total = stats["num_train"] + stats["num_eval"]
                raise StageError(
                    f"Dataset {dataset!r} gave {total} image(s); ingest needs at least 2 (training and held-out). "
                    "Use a larger source or limit."
                )
            check_written(directory, stats, num_shards, None if kind == "tfds" else len(plan.records))
        total = stats["num_train"] + stats["num_eval"]
        print(
            f"ingest: read {total} images from {dataset} → {stats['num_train']} train / {stats['num_eval']} eval "
            f"in {num_shards} shards ({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
