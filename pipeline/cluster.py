"""Multi-worker training (``--strategy=multi_worker``): every machine of the cluster runs the
same command with its own ``TF_CONFIG``, and this module tells them apart.

The chief (the ``chief`` task, or worker 0 of a cluster of workers only: TensorFlow's
convention, ``kdiff.distribute.is_chief_task``) is an ordinary run: it holds the run's lock,
runs every stage, writes the checkpoints, the Model artifact and ``_DONE.json``. Every other
worker *follows* it: it takes no lock and writes nothing, waits until the Examples the train
stage reads are committed, and runs the train stage's loop beside the chief —
``MultiWorkerMirroredStrategy`` keeps their steps in lockstep. It reads the chief's
checkpoints from the run's store (``<output_dir>/train/checkpoints``, a bucket for a run on
S3), and decides whether to resume from the same flags and the same checkpoint the chief
decides from, so the two restore the same state.
"""

from __future__ import annotations

import json
import os
import time

from pipeline import io, orchestrator

WAIT_SECONDS = 600  # how long a follower waits for the chief's Examples
POLL_SECONDS = 2.0


def task(environ=os.environ):
    """This process's task in ``TF_CONFIG``.

    Args:
        environ: the environment (``TF_CONFIG``: TensorFlow's JSON cluster description).

    Returns:
        ``(cluster, task_type, task_index)``; ``({}, None, None)`` without ``TF_CONFIG``.

    Raises:
        ValueError: ``TF_CONFIG`` is not the JSON TensorFlow reads.
    """
    text = environ.get("TF_CONFIG")
    if not text:
        return {}, None, None
    try:
        value = json.loads(text)
        cluster, this = value.get("cluster") or {}, value.get("task") or {}
        return cluster, this.get("type"), int(this.get("index", 0))
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(
            'Expected TF_CONFIG as JSON {"cluster": {"worker": ["host:port", …]}, "task": {"type": "worker", '
            f'"index": 0}}. Received: TF_CONFIG={text!r} ({error})'
        ) from None


def is_follower(config, environ=os.environ):
    """Whether this process is a non-chief worker of a multi-worker run.

    Args:
        config: the ``RunConfig`` (its ``strategy``).
        environ: the environment (``TF_CONFIG``).

    Returns:
        True for ``--strategy=multi_worker`` on a task that is not the cluster's chief.
    """
    if config.strategy != "multi_worker":
        return False
    from kdiff.distribute import is_chief_task

    return not is_chief_task(*task(environ))


def follow(config, output_dir, *, force=False, resume=False, wait_seconds=WAIT_SECONDS):
    """Runs the train stage's loop as a non-chief worker of the chief's run at ``output_dir``.

    Args:
        config: the ``RunConfig`` (the chief's flags).
        output_dir: the run's folder or URL (the chief's).
        force, resume: the chief's ``--force`` / ``--resume`` (they decide whether the
            chief's checkpoint is resumed, and the follower must decide alike).
        wait_seconds: how long to wait for the chief to commit the Examples.

    Raises:
        StageError: the Examples did not appear in time, or the train stage failed.
    """
    from pipeline.stages import ingest, train
    from pipeline.stages.base import fingerprint, read_done

    cluster, task_type, index = task()
    who = f"{task_type} {index} of a cluster of {sum(len(v) for v in cluster.values())} tasks"
    examples = orchestrator.artifact_dir(output_dir, "examples")
    stamp = fingerprint(ingest.SPEC, config.section(ingest.SPEC.parameters), {})
    print(f"[train] {who}: following the chief's run at {output_dir}", flush=True)
    _wait_for(lambda: (read_done(io.join(output_dir, "ingest")) or {}).get("fingerprint") == stamp,
              f"the chief's Examples ({examples}, fingerprint {stamp})", wait_seconds)
    stage_dir = io.join(output_dir, "train")
    trained = fingerprint(train.SPEC, config.section(train.SPEC.parameters), {"examples": stamp})
    if not force and (read_done(stage_dir) or {}).get("fingerprint") == trained:
        print(f"[train] {who}: the chief's model is cached ({trained}); nothing to train", flush=True)
        return
    params = config.resolved(train.SPEC.parameters)
    params.update(beam_args=[], force=force, resume=resume, stage_dir=stage_dir)
    with io.local_copy(examples) as local_examples, io.scratch_directory("kdiff-follower-") as scratch:
        # locally the chief's folders (the checkpoints beside the Model), which a follower
        # only reads; on an object store a scratch folder (the checkpoints are in the store)
        model_dir = os.path.join(scratch, "model") if io.is_remote(output_dir) else orchestrator.artifact_dir(
            output_dir, "model"
        )
        train.Executor().Do({"examples": local_examples}, {"model": model_dir}, params)
    print(f"[train] {who}: done; the chief writes the model", flush=True)


def _wait_for(ready, what, seconds):
    """Polls ``ready()`` every ``POLL_SECONDS`` until it is true, for at most ``seconds``.

    Raises:
        StageError: naming ``what`` was awaited, after ``seconds``.
    """
    from pipeline.stages.base import StageError

    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise StageError(
                f"train: waited {seconds} s for {what}; run the chief (TF_CONFIG's chief, or worker 0) with the "
                "same flags, or run its ingest stage first."
            )
        time.sleep(POLL_SECONDS)
