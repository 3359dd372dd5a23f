"""The stage loop: runs ingest → train → sample → evaluate → retrieve → report for one
run's folder, skipping the stages whose output is cached.

Each stage writes ``<output_dir>/<stage>/`` and, once its output is committed, a
``_DONE.json`` record: the stage's fingerprint (a hash of its parameters and its inputs'
fingerprints, TFX-style), a manifest of the files it wrote and a digest of each input's
manifest. A rerun skips a stage whose record matches the config, whose files are unchanged
and whose inputs are the ones it read; ``force`` reruns it. A stage's record is written
only once every file of its manifest is in the run's store with its size. The run holds
``<output_dir>/.lock`` throughout (``pipeline.lock``). The checks here fail before any stage runs, in seconds: an
output folder that cannot be written, a bad sampler, a missing dataset, labels the
evaluation needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import time

from pipeline import errors, io
from pipeline.stages import STAGE_ORDER

# pipeline.stages' modules (and with them kdiff and TensorFlow) are imported inside the
# functions that run stages: the command line's --help and flag errors never load them.

# Where each artifact lives under output_dir.
ARTIFACT_PATHS = {
    "examples": ("ingest", "examples"),
    "model": ("train", "model"),
    "samples": ("sample", "samples"),
    "metrics": ("evaluate", "metrics"),
    "retrieval": ("retrieve", "retrieval"),
    "report": ("report", "report"),
}


def artifact_dir(output_dir, artifact):
    """Where a run's artifact lives.

    Args:
        output_dir: the run's folder.
        artifact: a key of ``ARTIFACT_PATHS`` ("examples", "model", …).

    Returns:
        ``<output_dir>/<stage>/<artifact>``.
    """
    stage, name = ARTIFACT_PATHS[artifact]
    return io.join(output_dir, stage, name)


def check_output_dir(output_dir):
    """Fails before any stage runs, and before the run's lock is taken, when ``output_dir``
    cannot be listed, written and deleted from: on an object store, an endpoint that does
    not answer, refused credentials or a missing bucket fail in seconds (the store's client
    has bounded timeouts and retries) instead of in the first stage.

    Args:
        output_dir: the run's ``--output_dir``.

    Raises:
        ValueError: naming ``--output_dir``, the path or endpoint, what failed and what to do.
    """
    try:
        io.check_writable(output_dir)
    except OSError as error:
        raise ValueError(f"--output_dir={output_dir}: {errors.os_error_text(error)}.") from None


def check_samplers(config):
    """The config's samplers checked against the registry and the family's process, before
    any stage runs (a bad sampler name or option fails in seconds, not after training).

    Args:
        config: the ``RunConfig``.

    Raises:
        ValueError: naming the sampler config and what is wrong with it.
    """
    from kdiff.process import as_process

    from pipeline import builders
    from pipeline.stages import sample
    from pipeline.stages.base import StageError

    try:
        process = as_process(builders.build_process(config.resolved()))  # NCSN's: a σ array
        sample.check_samplers(config.samplers, process)
    except StageError as error:
        raise ValueError(str(error).removeprefix("sample: ")) from None


def check_feature_labels(config, examples_dir):
    """Fails before training when the evaluate stage will need labels the data lacks.

    Args:
        config: the ``RunConfig`` (its ``fid_features``).
        examples_dir: the ingested Examples (their ``stats.json``).

    Raises:
        StageError: ``--fid_features=classifier`` on an unlabelled dataset.
    """
    from pipeline.stages.base import StageError

    stats_path = io.join(examples_dir, "stats.json")
    if config.fid_features != "classifier" or not io.exists(stats_path):
        return
    if io.read_json(stats_path).get("num_classes") is None:
        raise StageError(
            f"evaluate: --fid_features=classifier trains a classifier on the labels, and the dataset "
            f"{config.dataset} has none ({stats_path}: num_classes is null); pass --fid_features=inception "
            "(or inception_graph), or a dataset with labels (class subfolders for folder:PATH)."
        )


def check_dataset(config):
    """Fails before the ingest stage runs when its source is plainly not there: an unknown
    form, a missing folder, an IDX folder without an images file, Fashion-MNIST found
    nowhere (``pipeline.data.check_source``; Fashion-MNIST is downloaded with TFDS here
    only when no copy is present).

    Args:
        config: the ``RunConfig`` (its ``dataset``).

    Raises:
        StageError: naming the dataset, what is missing and how to get it.
    """
    from pipeline import data

    data.check_source(config.dataset)


def _stage_module(name):
    return importlib.import_module(f"pipeline.stages.{name}")


def run_stages(config, output_dir, beam_args, *, force=False, resume=False, stages=STAGE_ORDER, lease_seconds=None):
    """Runs the stages in order, skipping cached ones.

    Args:
        config: the ``RunConfig``.
        output_dir: the run's directory.
        beam_args: Beam pipeline flags for the Beam stages.
        force: rerun cached stages (and train afresh, unless ``resume``).
        resume: let the train stage continue from a checkpoint that ``force`` or a
            changed recipe would discard.
        stages: the stages to run (upstream artifacts must exist for the others).
        lease_seconds: on an object store, the length of the run's lock lease (None:
            ``pipeline.io.locks.LEASE_SECONDS``); unused on a local disk.

    Returns:
        A dict stage → {"cached": bool, "seconds": float, "fingerprint": str}.

    Raises:
        pipeline.lock.RunLockedError: another run holds ``output_dir``.
        StageError: a stage failed on bad input, or a stage not selected in ``stages``
            has no output that matches this config for the stages after it to read.
    """
    from pipeline.lock import RunLock

    options = {"seconds": lease_seconds} if io.is_remote(output_dir) and lease_seconds is not None else {}
    with RunLock(output_dir, **options) as lock:
        return _run_locked(config, output_dir, beam_args, force, resume, stages, lock)


def _run_locked(config, output_dir, beam_args, force, resume, stages, lock):
    from pipeline.stages.base import DONE_FILE, StageError, changed_file, fingerprint, read_done, unwritten_file

    io.write_json(io.join(output_dir, "config.json"), config.to_dict())
    fingerprints, summary = {}, {}
    for name in STAGE_ORDER:
        module = _stage_module(name)
        spec = module.SPEC
        inputs = {artifact: artifact_dir(output_dir, artifact) for artifact in spec.inputs}
        outputs = {artifact: artifact_dir(output_dir, artifact) for artifact in spec.outputs}
        upstream = {artifact: fingerprints.get(ARTIFACT_PATHS[artifact][0]) for artifact in spec.inputs}
        for artifact, value in list(upstream.items()):
            if value is None:
                done = read_done(os.path.dirname(inputs[artifact]))
                upstream[artifact] = done and done.get("fingerprint")
        if name == "train" and "evaluate" in stages:
            check_feature_labels(config, inputs["examples"])
        stamp = fingerprint(spec, config.section(spec.parameters), upstream)
        stage_dir = io.join(output_dir, name)
        done = read_done(stage_dir)
        read = input_digests(output_dir, spec)
        changed_input = _changed_input(done.get("inputs"), read) if done else None
        problem = None
        if done is None:
            problem = "it has no completed output (no _DONE.json)"
        elif done.get("fingerprint") != stamp:
            problem = "its output was written with other settings or inputs"
        elif changed_input is not None:  # an upstream stage's rerun changed it
            problem = f"its input {changed_input} has changed since it ran"
            print(f"[{name}] {problem}", flush=True)
        elif not all(io.isdir(path) for path in outputs.values()):
            problem = "its output folder is missing"
        else:
            changed = changed_file(done.get("files"), outputs)
            if changed is not None:
                problem = f"its output no longer matches what it wrote: {changed}"
                print(f"[{name}] {problem}", flush=True)
        cached = problem is None
        if name not in stages or (cached and not force):
            if not cached:
                if any(n in stages for n in STAGE_ORDER[STAGE_ORDER.index(name) + 1 :]):
                    raise StageError(
                        f"{name}: not selected in --stages, and {problem} ({stage_dir}); the stages "
                        f"after it would read it. Add {name} to --stages to rerun it."
                    )
            else:
                print(f"[{name}] cached ({stamp}); --force reruns it", flush=True)
            fingerprints[name] = stamp if cached else (done or {}).get("fingerprint")
            summary[name] = {"cached": True, "seconds": 0.0, "fingerprint": fingerprints[name]}
            continue
        if name == "ingest":  # the first stage: a missing source fails before anything runs
            check_dataset(config)
        for artifact, path in inputs.items():
            if not io.isdir(path):
                raise StageError(f"{name}: its input {artifact} is missing at {path}; run the stages before it.")
        for path in outputs.values():  # what a killed earlier attempt left behind
            io.remove_leftovers(path)
        lock.check()
        print(f"[{name}] running", flush=True)
        start = time.perf_counter()
        done_path = io.join(stage_dir, DONE_FILE)
        io.remove(done_path, missing_ok=True)  # the old outputs no longer match what is being written
        params = config.resolved(spec.parameters)  # resolved once: the stage takes them as they are
        # stage_dir: where the stage's own durable files go (the train stage's checkpoints),
        # in the run's store even when the stage runs on local folders
        params.update(beam_args=list(beam_args), force=force, resume=resume, stage_dir=stage_dir)
        try:
            files = _run_stage(module, stage_dir, inputs, outputs, params)
            lost = unwritten_file(files, outputs)  # a runner or an upload that lost a file
        except StageError:
            raise
        except Exception as error:  # an I/O failure becomes a message naming the path
            failure = errors.io_error(error)
            if failure is None:
                raise
            raise StageError(errors.io_error_message(name, failure, where=stage_dir)) from error
        if lost is not None:
            raise StageError(
                f"{name}: {lost}: its output is incomplete after the stage ran, so it is not recorded as "
                f"done ({done_path} is not written); rerun to redo the stage."
            )
        seconds = time.perf_counter() - start
        lock.check()
        io.write_json(done_path, {
            "fingerprint": stamp, "seconds": seconds, "outputs": outputs, "files": files, "inputs": read,
        })
        fingerprints[name] = stamp
        summary[name] = {"cached": False, "seconds": seconds, "fingerprint": stamp}
        print(f"[{name}] done in {seconds:.1f} s", flush=True)
    return summary


def input_digests(output_dir, spec):
    """What a stage reads, by content: each input artifact's digest of the manifest its stage
    recorded. A stage's ``_DONE.json`` keeps them, so that a rerun upstream stage whose output
    changed (a retrained model is never byte-identical) makes its readers rerun, and one
    whose output came out the same (ingest's deterministic shards) leaves them cached.

    Args:
        output_dir: the run's folder.
        spec: the reading stage's ``StageSpec``.

    Returns:
        A dict input artifact → SHA-256 of its recorded manifest (None: no record).
    """
    from pipeline.stages.base import read_done

    digests = {}
    for artifact in spec.inputs:
        stage = ARTIFACT_PATHS[artifact][0]
        files = ((read_done(io.join(output_dir, stage)) or {}).get("files") or {}).get(artifact)
        digests[artifact] = None if files is None else hashlib.sha256(
            json.dumps(files, sort_keys=True).encode("utf-8")).hexdigest()
    return digests


def _changed_input(recorded, current):
    """The first input whose digest differs from the one recorded (None: all the same, or a
    record from before inputs were recorded)."""
    if recorded is None:
        return None
    return next((artifact for artifact, digest in current.items() if recorded.get(artifact) != digest), None)


def _run_stage(module, stage_dir, inputs, outputs, params):
    """Runs a stage's executor on local folders and returns the manifest of what it wrote.

    A run on a local disk passes its own folders, and so does a run on an object store to a
    stage that reads URLs (``StageSpec.reads_urls``: its Beam workers then rely on no local
    disk). The other stages of a run on an object store run on local folders, since
    TensorFlow, Keras and Beam's sinks write by name: the inputs are downloaded, the
    stage's folder (its checkpoints, an earlier attempt's files) mirrored, and written back
    once the stage has succeeded.

    Args:
        module: the stage's module (its ``Executor``).
        stage_dir: ``<output_dir>/<stage>``.
        inputs, outputs: artifact name → folder under the run's ``output_dir``.
        params: the stage's parameters.

    Returns:
        ``manifest`` of the outputs.
    """
    from pipeline.stages.base import manifest

    if not io.is_remote(stage_dir) or module.SPEC.reads_urls:
        module.Executor().Do(inputs, outputs, params)
        return manifest(outputs)
    with contextlib.ExitStack() as stack:
        local_inputs = {artifact: stack.enter_context(io.local_copy(path)) for artifact, path in inputs.items()}
        local_stage = stack.enter_context(io.local_mirror(stage_dir))
        local_outputs = {
            artifact: os.path.join(local_stage, *_relative(stage_dir, path)) for artifact, path in outputs.items()
        }
        print(f"[{module.SPEC.name}] staged in {local_stage}; written back to {stage_dir} when it succeeds", flush=True)
        module.Executor().Do(local_inputs, local_outputs, params)
        return manifest(local_outputs)


def _relative(stage_dir, path):
    """The parts of ``path`` below ``stage_dir`` (a URL's, split at ``/``)."""
    return path[len(stage_dir):].strip("/").split("/")
