"""Train stage: Examples → Model (a trained kdiff model, exported for serving and sampling).

Builds the family and network the config names (``pipeline.builders``) inside the chosen
``tf.distribute`` strategy and precision, trains on the Examples' train split with the
eval split as validation, and writes, atomically, under ``outputs["model"]``:

* ``export/`` — the kdiff SavedModel (``model.export``): ``denoise`` / ``generate``
  signatures, what the sample stage and TF Serving load;
* ``model.keras`` — the final Keras model (EMA weights included);
* ``history.json`` — ``loss`` / ``val_loss`` per epoch, ``steps``, ``seconds``,
  ``steps_per_second``, ``precision`` (the dtype policy it trained under) and
  ``export_precision`` (what the export computes in);
* ``logs/`` — TensorBoard summaries (``train/`` and ``validation/``: ``epoch_loss``,
  ``epoch_learning_rate``, ``epoch_steps_per_second``).

Training length. ``train_steps`` optimizer steps exactly, whatever the dataset's size (the
epochs follow: ceil(steps / batches per epoch), the last one partial when they do not
divide), or ``epochs`` whole passes; with neither, ``pipeline.config.DEFAULT_TRAIN_STEPS``
steps, so that a folder of 300 images trains as long as the digits (``pipeline.config.
training_length``). The console says, before training, the steps and epochs, and some
steps later the time left; then an epoch line every tenth of the run.

Crash-resume. Every ``checkpoint_every_steps`` steps (and at the end of training) the model's
weights — network, EMA copy and optimizer state, the step counter included — are
written to ``<stage dir>/checkpoints/`` (beside the atomic output, so they survive a
crash; on an object store, in the run's bucket, so a run killed on one machine resumes on
another), to a temporary name renamed into place, then ``state.json`` records the step,
the epoch, the batches done in it and the history so far. A run killed at any moment
(``kill -9``) and started again restores that state and continues: each epoch's data
order comes from the seed and the epoch (the resumed epoch skips the batches it had
done) and the training noise from the seed and the optimizer's step, so the resumed
run takes the very steps an uninterrupted run takes, losing at most one checkpoint
interval of work. Keras' ``BackupAndRestore`` is not used: with ``save_freq=<steps>``
it restores the epoch but replays it from its first batch, and writes its weights file
in place (a kill during the write leaves it corrupt). The checkpoints are deleted when
the stage completes; they belong to one model (family, network, process, seed, batch
size, precision, data): a checkpoint written for another is discarded with a message.

A rerun resumes a checkpoint only with the recipe it was written with (learning rate,
warm-up, precision: ``RECIPE_FIELDS``); with another, or with ``--force``, it trains
afresh, unless ``--resume`` asks to continue from the checkpoint (``_should_resume``).
The training length (``train_steps`` / ``epochs``) and the strategy may change between a
crash and the rerun (a checkpoint already past the new length is exported as it is).

A NaN (or infinite) loss stops training at once with a ``StageError`` naming the step,
keeping the last good checkpoint: the last one whose weights are finite and whose
running loss had not left ``SPIKE_FACTOR`` × the first batch's. A rerun with a lower
learning rate trains afresh; with ``--resume`` it continues from that checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time

from pipeline import config as config_lib
from pipeline import io
from pipeline.stages.base import (
    EXAMPLES,
    MODEL,
    StageError,
    StageSpec,
)

SPEC = StageSpec(
    name="train",
    inputs={"examples": EXAMPLES},
    outputs={"model": MODEL},
)

# The parameters a checkpoint depends on: a checkpoint written under other values of these
# belongs to another model and is not restored (learning rate, warm-up, the training length
# — train_steps or epochs —, strategy and the checkpoint interval may change between a
# crash and the rerun).
CHECKPOINT_KEY_PARAMETERS = tuple(
    name for name in SPEC.parameters
    if name not in ("train_steps", "epochs", "learning_rate", "warmup_steps", "strategy", "checkpoint_every_steps")
) + ("data_range",)

# The time-left estimate is printed once this many steps have run after the first one
# (which carries the train step's tracing).
ESTIMATE_AFTER_STEPS = 20
# About this many epoch lines in a run (and always the first and the last epoch's).
EPOCH_LINES = 10

STATE_FILE = "state.json"
WEIGHTS_PATTERN = "ckpt-*.weights.h5"


def _log(message):
    print(f"train: {message}", flush=True)


def checkpoint_dir_for(model_dir):
    """Where the train stage keeps its checkpoints: ``<parent of the Model dir>/checkpoints``."""
    return os.path.join(os.path.dirname(io.abspath(model_dir)), "checkpoints")


def shuffle_seed(seed, epoch):
    """The data-order seed of an epoch (same seed and epoch, same order)."""
    return int(seed) * 1_000_003 + int(epoch)


# ----------------------------------------------------------------------------- checkpoints


class Checkpoints:
    """Training state in a directory: ``ckpt-<step>.weights.h5`` plus ``state.json``.

    Each save writes the weights to a temporary name, renames it into place, then
    replaces ``state.json`` (also atomically) and removes older weight files: at every
    moment ``state.json`` names a complete weights file.

    Args:
        directory: the checkpoint directory.
        key: what the checkpoints belong to (a hash of the model-defining parameters).
        writable: False on the non-chief workers of a multi-worker run, which restore
            the chief's checkpoints but neither write nor delete them.
    """

    def __init__(self, directory, key, writable=True):
        self.directory = directory
        self.key = key
        self.writable = writable

    @property
    def state_path(self):
        return os.path.join(self.directory, STATE_FILE)

    def read(self):
        """The saved state, or None (no checkpoint, or one of another model: removed)."""
        if not io.exists(self.state_path):
            return None
        try:
            state = io.read_json(self.state_path)
        except (ConnectionError, TimeoutError):  # the store, not the file: the checkpoints are kept
            raise
        except (OSError, ValueError) as error:
            _log(f"the checkpoint state {self.state_path} is unreadable ({error}); starting afresh")
            self.clear()
            return None
        weights = os.path.join(self.directory, str(state.get("weights", "")))
        if state.get("key") != self.key:
            _log(
                f"the checkpoints in {self.directory} were written for another model or data "
                "(family, network, process, seed, batch size, precision or examples differ); "
                "discarding them and starting afresh"
            )
            self.clear()
            return None
        if not io.isfile(weights):
            _log(f"the checkpoint state names {weights}, which is missing; starting afresh")
            self.clear()
            return None
        return state

    def restore(self, model, state):
        """Loads the weights of ``state`` (network, EMA network and optimizer) into ``model``."""
        if not model.optimizer.built:
            model.optimizer.build(model.network.trainable_variables)
        path = os.path.join(self.directory, state["weights"])
        try:
            with io.local_copy(path) as local:
                model.load_weights(local)
        except Exception as error:
            raise StageError(
                f"train: cannot restore the checkpoint {path} ({type(error).__name__}: {error}). "
                f"Delete {self.directory} to train from scratch."
            ) from error

    def save(self, model, state):
        """Writes the weights and ``state`` (a dict; ``weights`` and ``key`` are added)."""
        if not self.writable:
            return
        io.makedirs(self.directory)
        step = int(state["step"])
        name = f"ckpt-{step:09d}.weights.h5"
        with io.local_output(os.path.join(self.directory, name)) as temporary:
            io.save_weights(model, temporary)  # no space: a clean OSError naming the file
        io.write_json(self.state_path, dict(state, weights=name, key=self.key))
        for old in io.glob(self.directory, WEIGHTS_PATTERN):
            if os.path.basename(old) != name:
                io.remove(old)
        for stale in io.glob(self.directory, ".tmp-*"):  # what a killed save left
            try:
                io.remove(stale)
            except OSError:
                pass

    def mark_diverged(self, record):
        """Records in ``state.json`` that training from this checkpoint diverged (``record``:
        the NaN's step and the recipe it had), so that a rerun with another recipe trains
        afresh. Without a checkpoint there is nothing to mark."""
        if not self.writable or not io.exists(self.state_path):
            return
        io.write_json(self.state_path, dict(io.read_json(self.state_path), diverged=record))

    def clear(self):
        if not self.writable:
            return
        for path in io.glob(self.directory, WEIGHTS_PATTERN) + io.glob(self.directory, ".tmp-*"):
            io.remove(path)
        io.remove(self.state_path, missing_ok=True)


# ----------------------------------------------------------------------------- callbacks


# A checkpoint is not written while the running loss is over this multiple of the run's
# first batch loss: weights that far gone are a divergence in progress, and resuming them
# diverges again.
SPIKE_FACTOR = 100.0

# The settings a rerun may change to get past a divergence; after one, a checkpoint is
# only resumed with the same values (other values train afresh).
RECIPE_FIELDS = ("learning_rate", "warmup_steps", "precision")


def exploding(running_loss, first_loss):
    """Whether a running loss is past ``SPIKE_FACTOR`` × the first batch's (or not finite)."""
    if running_loss is None:
        return False
    if not math.isfinite(running_loss):
        return True
    return first_loss is not None and first_loss > 0 and running_loss > SPIKE_FACTOR * first_loss


def _keras():
    import keras

    return keras


class TrainingState:
    """What the callbacks share: the epoch, batches done in it, the history, the time.

    Args:
        length: the run's ``pipeline.config.TrainingLength`` (its steps and epochs).
        restored: a checkpoint's state (``Checkpoints.read``), or None for a fresh run.
    """

    def __init__(self, length, restored=None):
        restored = restored or {}
        self.length = length
        self.epochs = length.epochs
        self.epoch = int(restored.get("epoch", 0))
        self.batch = int(restored.get("batch", 0))  # batches done in the current epoch
        self.history = {
            "loss": list(restored.get("history", {}).get("loss", [])),
            "val_loss": list(restored.get("history", {}).get("val_loss", [])),
        }
        self.seconds = float(restored.get("seconds", 0.0))
        # The running loss of the current epoch before a restart (combined at its end).
        self.partial_loss = restored.get("partial_loss")
        self.partial_batches = int(restored.get("partial_batches", 0))
        self.nan_step = None
        self.first_loss = restored.get("first_loss")  # the run's first batch loss: the spike reference
        self.last_checkpoint_step = restored.get("step")
        self.epoch_start = None  # perf_counter() at the start of the running epoch

    def as_dict(self, step, running_loss=None, running_batches=0):
        return {
            "step": int(step),
            "epoch": self.epoch,
            "batch": self.batch,
            "history": self.history,
            "seconds": self.seconds + (time.perf_counter() - self.epoch_start if self.epoch_start else 0.0),
            "partial_loss": running_loss,
            "partial_batches": running_batches,
            "first_loss": self.first_loss,
        }


def make_callbacks(state, checkpoints, every_steps, summary_dir, chief=True, recipe=None):
    """The stage's callbacks, in order: NaN guard, checkpoints, progress and summaries.

    A checkpoint falls due every ``every_steps`` steps; one due on an epoch's last batch
    (``state.length.batches_in``: fewer in a partial last epoch) is written at the
    epoch's end instead (with the epoch's history, pointing at the next epoch), as is the
    last epoch's. ``recipe`` (the ``RECIPE_FIELDS`` values) is recorded with each
    checkpoint.

    The console gets one line per ``EPOCH_LINES``-th of the epochs (the first and the
    last always) and, ``ESTIMATE_AFTER_STEPS`` steps after the first, the time left.

    Args:
        state: the ``TrainingState`` the callbacks share.
        checkpoints: the ``Checkpoints`` to save to.
        every_steps: steps between checkpoints (0: at epoch ends only).
        summary_dir: where the TensorBoard summaries go.
        chief: whether this process writes checkpoints and summaries.
        recipe: the ``RECIPE_FIELDS`` values.

    Returns:
        The list of callbacks.
    """
    keras = _keras()
    length = state.length
    line_every = max(1, math.ceil(length.epochs / EPOCH_LINES))

    class NaNGuard(keras.callbacks.Callback):
        """Stops training at the first non-finite loss; the stage then raises StageError."""

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                state.nan_step = _step(self.model)
                self.model.stop_training = True

    class StepCheckpoint(keras.callbacks.Callback):
        """Saves the training state every ``every_steps`` steps (see ``make_callbacks``)."""

        pending = False

        def on_train_batch_end(self, batch, logs=None):
            state.batch += 1
            loss = (logs or {}).get("loss")
            self._running = None if loss is None else float(loss)
            if state.first_loss is None and self._running is not None and math.isfinite(self._running):
                state.first_loss = self._running
            if state.nan_step is not None:
                return
            step = _step(self.model)
            if every_steps and step % every_steps == 0:
                if state.batch >= length.batches_in(state.epoch):
                    self.pending = True  # the epoch's last batch: saved at its end
                else:
                    self.save(step, running_loss=self._combined(self._running), running_batches=state.batch)

        def _combined(self, running):
            """The epoch's mean loss so far, including the batches before a restart."""
            done_now = state.batch - state.partial_batches
            if running is None or state.partial_loss is None or state.partial_batches == 0:
                return running
            total = state.partial_loss * state.partial_batches + running * done_now
            return total / max(state.batch, 1)

        def epoch_loss(self, loss):
            return self._combined(loss)

        def save(self, step, running_loss=None, running_batches=0):
            if not chief:
                return
            weights_finite = all(
                bool(_np().all(_np().isfinite(w))) for w in self.model.network.get_weights()
            )
            if not weights_finite:
                return
            if exploding(running_loss, state.first_loss):
                _log(
                    f"not checkpointing step {step}: the running loss {running_loss:.4g} is over "
                    f"{SPIKE_FACTOR:g}× the first batch's ({state.first_loss:.4g}), the sign of a divergence"
                )
                return
            checkpoints.save(self.model, dict(state.as_dict(step, running_loss, running_batches), recipe=recipe))
            state.last_checkpoint_step = step

    class Progress(keras.callbacks.Callback):
        """Epoch lines (loss, val_loss, steps/s, time left), the first estimate of the time
        left, and TensorBoard epoch summaries."""

        def __init__(self, checkpointer):
            super().__init__()
            self.checkpointer = checkpointer
            self.writers = {}
            # (perf_counter, step) the rate is measured from: the end of this process's first
            # step, then of its first epoch (both carry tracing: the train step's, the validation's)
            self.anchor = None
            self.rate = None  # steps/s since the anchor (validation included), for the time left
            self.epochs_seen = 0
            self.told = False  # whether a time left has been printed

        def _measure(self, step):
            if self.anchor is not None and step > self.anchor[1]:
                self.rate = (step - self.anchor[1]) / max(time.perf_counter() - self.anchor[0], 1e-9)

        def _left(self, step):
            """The time left at ``step`` at the measured rate: text, or None before a measurement."""
            return None if not self.rate else _duration((length.steps - step) / self.rate)

        def on_train_batch_end(self, batch, logs=None):
            step = _step(self.model)
            if self.anchor is None:
                self.anchor = (time.perf_counter(), step)
            elif not self.told and step - self.anchor[1] >= ESTIMATE_AFTER_STEPS and step < length.steps:
                self._measure(step)
                self.told = True
                _log(f"step {step:,}/{length.steps:,} - {self.rate:.1f} steps/s - ≈ {self._left(step)} left")

        def _writer(self, name):
            import tensorflow as tf

            if name not in self.writers:
                self.writers[name] = tf.summary.create_file_writer(os.path.join(summary_dir, name))
            return self.writers[name]

        def on_epoch_begin(self, epoch, logs=None):
            self._start = state.epoch_start = time.perf_counter()
            self._start_step = _step(self.model)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            seconds = time.perf_counter() - self._start
            step = _step(self.model)
            steps = step - self._start_step
            state.seconds += seconds
            state.epoch_start = None
            if state.nan_step is not None:
                return
            loss = logs.get("loss")
            loss = None if loss is None else self.checkpointer.epoch_loss(float(loss))
            val_loss = logs.get("val_loss")
            val_loss = None if val_loss is None else float(val_loss)
            state.history["loss"].append(loss)
            state.history["val_loss"].append(val_loss)
            rate = steps / seconds if seconds > 0 else 0.0
            learning_rate = float(_keras().ops.convert_to_numpy(self.model.optimizer.learning_rate))
            parts = [f"epoch {state.epoch + 1}/{state.epochs}", f"loss {_fmt(loss)}"]
            if val_loss is not None:
                parts.append(f"val_loss {_fmt(val_loss)}")
            parts += [f"{rate:.1f} steps/s", f"step {step}", f"{seconds:.1f} s"]
            self.epochs_seen += 1
            if self.epochs_seen == 1:
                self.anchor = (time.perf_counter(), step)  # past the validation's tracing too
            else:
                self._measure(step)
            left = self._left(step)
            if left is not None and step < length.steps:
                parts.append(f"≈ {left} left")
            if state.epoch == 0 or (state.epoch + 1) % line_every == 0 or step >= length.steps:
                _log(" - ".join(parts))
                self.told = self.told or left is not None
            if chief:
                with self._writer("train").as_default():
                    if loss is not None:
                        write_scalar("epoch_loss", loss, step=state.epoch)
                    write_scalar("epoch_learning_rate", learning_rate, step=state.epoch)
                    write_scalar("epoch_steps_per_second", rate, step=state.epoch)
                if val_loss is not None:
                    with self._writer("validation").as_default():
                        write_scalar("epoch_loss", val_loss, step=state.epoch)
            state.epoch += 1
            state.batch = 0
            state.partial_loss, state.partial_batches = None, 0
            if self.checkpointer.pending or state.epoch >= state.epochs:
                self.checkpointer.save(step)
            self.checkpointer.pending = False

        def close(self):
            for writer in self.writers.values():
                writer.flush()
                writer.close()
            self.writers = {}

    checkpointer = StepCheckpoint()
    progress = Progress(checkpointer)
    return [NaNGuard(), checkpointer, progress]


def _step(model):
    """The optimizer's step count as an int (also for a MirroredVariable)."""
    return int(_keras().ops.convert_to_numpy(model.optimizer.iterations))


def write_scalar(name, value, step):
    """A TensorBoard scalar summary (``tf.summary.scalar``'s record, written with TF core's
    ``tf.summary.write``, so that it works without the tensorboard package installed)."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    return tf.summary.write(name, tf.constant(float(value), tf.float32), step=int(step), metadata=metadata)


def _np():
    import numpy as np

    return np


def _fmt(value):
    return "n/a" if value is None else f"{value:.4f}"


def _duration(seconds):
    """``seconds`` as the console says it: "40 s", "5.5 min", "1.2 h"."""
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def describe_length(length, num_train, batch_size):
    """The console line that says, before training, how long the run trains.

    Args:
        length: the run's ``pipeline.config.TrainingLength``.
        num_train: images in the training split.
        batch_size: the global batch size.

    Returns:
        E.g. "training 4,000 steps: 153.8 epochs of 26 batches (1,617 images, batch 64);
        the default length, 4,000 steps whatever the dataset's size (--train_steps or
        --epochs sets another)".
    """
    epochs = length.steps / length.batches_per_epoch
    shown = f"{length.epochs}" if float(epochs).is_integer() else f"{epochs:.1f}"
    why = {
        "default": f"the default length, {config_lib.DEFAULT_TRAIN_STEPS:,} steps whatever the dataset's size "
                   "(--train_steps or --epochs sets another)",
        "train_steps": "--train_steps",
        "epochs": f"--epochs={length.epochs}",
    }[length.source]
    return (
        f"training {length.steps:,} steps: {shown} epoch{'s' if epochs != 1 else ''} of "
        f"{length.batches_per_epoch:,} batches ({num_train:,} images, batch {batch_size}); {why}"
    )


# ----------------------------------------------------------------------------- executor


def _image_shape(examples_dir):
    stats_path = os.path.join(examples_dir, "stats.json")
    if not io.isfile(stats_path):
        raise StageError(
            f"train: no stats.json in the Examples directory {examples_dir}; run the ingest stage first "
            "(or rerun it with --force if its output is incomplete)."
        )
    try:
        stats = io.read_json(stats_path)
        size, channels = int(stats["image_size"]), int(stats["channels"])
        num_train = int(stats.get("num_train", 1))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StageError(
            f"train: {stats_path} is unreadable or lacks image_size / channels ({error}); rerun ingest with --force."
        ) from error
    if num_train < 1:
        raise StageError(f"train: the Examples in {examples_dir} hold no training images; check --dataset / --limit.")
    return (size, size, channels), stats


def _checkpoint_key(params, stats):
    values = {name: params.get(name) for name in CHECKPOINT_KEY_PARAMETERS}
    values["examples"] = {k: stats.get(k) for k in ("source", "num_train", "num_eval", "image_size", "channels")}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Executor:
    """Runs the train stage: ``Do(inputs, outputs, params)``."""

    def Do(self, inputs, outputs, params):
        import kdiff

        examples_dir = inputs["examples"]
        model_dir = outputs["model"]
        image_shape, stats = _image_shape(examples_dir)
        try:
            params = config_lib.resolve(params, SPEC.parameters)  # as it is when resolved (the orchestrator's)
            strategy = kdiff.distribute.get_strategy(params["strategy"])
        except ValueError as error:
            raise StageError(f"train: {error}") from error
        params["data_range"] = [float(v) for v in params["data_range"]]
        batch_size, seed = params["batch_size"], params["seed"]
        every = params["checkpoint_every_steps"]
        strategy_name, precision = params["strategy"], params["precision"]
        # The checkpoints go where the run keeps its files (the bucket of a run on S3, written
        # at every checkpoint, so a killed run resumes from any machine); TensorBoard's
        # summaries, which TensorFlow writes by name, beside the local model folder.
        local_dir = checkpoint_dir_for(model_dir)
        stage_dir = params.get("stage_dir")
        checkpoint_dir = io.join(stage_dir, "checkpoints") if stage_dir and io.is_remote(stage_dir) else local_dir

        if params["model_source"] is not None:
            _import(params, image_shape, model_dir)
            return
        num_train = stats.get("num_train")
        if num_train is None:
            raise StageError(
                f"train: {examples_dir}/stats.json lacks num_train, which the training length (steps and "
                "epochs) is derived from; rerun the ingest stage with --force."
            )
        try:
            length = config_lib.training_length(num_train, batch_size, params["train_steps"], params["epochs"])
        except ValueError as error:
            raise StageError(f"train: {error}") from error
        if params["lr_decay"]:
            if length.steps <= params["warmup_steps"]:
                raise StageError(
                    f"train: --lr_decay=true decays the learning rate after the warm-up, and the run's "
                    f"{length.steps:,} steps are no more than --warmup_steps={params['warmup_steps']:,}. Expected "
                    "more --train_steps (or --epochs), a shorter --warmup_steps, or --lr_decay=false. Received: "
                    f"train_steps={params['train_steps']}, epochs={params['epochs']}, warmup_steps={params['warmup_steps']}"
                )
            params["decay_steps"] = length.steps  # the decay ends at the last step
        chief = kdiff.distribute.is_chief(strategy)
        if params["class_conditional"] and stats.get("num_classes") is None:
            raise StageError(
                f"train: --class_conditional=true needs a labelled dataset, and {stats.get('source')} has no labels "
                f"(num_classes is null in {examples_dir}/stats.json)."
            )
        params["num_classes"] = stats.get("num_classes")  # the labels' classes (a class-conditional run)
        with strategy.scope():
            try:
                model = _build(params, image_shape)
            except ValueError as error:
                raise StageError(f"train: cannot build the model: {error}") from error
        _log(
            f"{type(model).__name__} with network {params.get('network')} "
            f"({model.network.count_params():,} parameters) on {image_shape[0]}x{image_shape[1]}x"
            f"{image_shape[2]} images, {stats.get('num_train')} training examples, strategy "
            f"{strategy_name} ({strategy.num_replicas_in_sync} replica(s)), precision {precision}"
        )
        checkpoints = Checkpoints(checkpoint_dir, _checkpoint_key(params, stats), writable=chief)
        recipe = {name: params.get(name) for name in RECIPE_FIELDS}
        restored = checkpoints.read()
        if restored is not None and not _should_resume(restored, recipe, params, checkpoint_dir):
            checkpoints.clear()
            restored = None
        if restored is not None:
            with strategy.scope():
                checkpoints.restore(model, restored)
            _log(
                f"resuming from the checkpoint at step {restored['step']} (epoch {restored['epoch'] + 1}, "
                f"batch {restored['batch']}) in {checkpoint_dir}"
            )
        state = TrainingState(length, restored)
        _log(describe_length(length, int(num_train), batch_size))
        if length.steps < params["warmup_steps"]:
            _log(
                f"the warm-up ({params['warmup_steps']:,} steps) is longer than the run: the learning rate "
                f"never reaches --learning_rate={params['learning_rate']}"
            )
        summary_dir = os.path.join(local_dir, "logs")
        callbacks = make_callbacks(state, checkpoints, every, summary_dir, chief=chief, recipe=recipe)
        try:
            self._train(model, strategy, strategy_name, examples_dir, params, state, callbacks, batch_size, seed)
        finally:
            for callback in callbacks:
                if hasattr(callback, "close"):
                    callback.close()
        if state.nan_step is not None:
            if chief:
                checkpoints.mark_diverged({"step": state.nan_step, "recipe": recipe})
            raise StageError(_nan_message(state, checkpoint_dir, params))
        if not chief:
            return
        steps = _step(model)
        history = {
            "loss": state.history["loss"],
            "val_loss": state.history["val_loss"],
            "steps": steps,
            "seconds": round(state.seconds, 3),
            "steps_per_second": round(steps / state.seconds, 3) if state.seconds > 0 else None,
            "epochs": state.epoch,
            "num_parameters": int(model.network.count_params()),
            "precision": precision,
            "export_precision": EXPORT_PRECISION,
        }
        with io.atomic_directory(model_dir) as out:
            _log("exporting the SavedModel")
            _float32_twin(model, params, image_shape, precision).export(
                os.path.join(out, "export"), precision=EXPORT_PRECISION
            )
            model.save(os.path.join(out, "model.keras"))
            io.write_json(os.path.join(out, "history.json"), history)
            if io.isdir(summary_dir):
                io.copy_tree(summary_dir, os.path.join(out, "logs"))
            else:
                io.makedirs(os.path.join(out, "logs"), exist_ok=False)
        io.remove_tree(checkpoint_dir, ignore_errors=True)  # the run is complete
        if checkpoint_dir != local_dir:
            io.remove_tree(local_dir, ignore_errors=True)
        _log(f"wrote {model_dir} ({steps} steps in {state.seconds:.1f} s)")

    def _train(self, model, strategy, strategy_name, examples_dir, params, state, callbacks, batch_size, seed):
        import kdiff
        from pipeline import data as data_lib

        data_range = tuple(params["data_range"])
        validation = None
        if strategy_name != "multi_worker":
            try:
                validation = data_lib.make_dataset(
                    examples_dir, data_range, batch_size, split="eval", shuffle_seed=None,
                    with_labels=params["class_conditional"],
                )
            except Exception as error:  # noqa: BLE001 - validation is optional
                _log(f"no validation data ({error}); training without val_loss")
        length = state.length
        done = _step(model)
        if done >= length.steps:
            _log(f"the checkpoint already holds {done:,} steps, the {length.steps:,} asked for; exporting it")
            return
        while state.epoch < length.epochs:
            epoch = state.epoch
            batches = length.batches_in(epoch)
            # One fit over every remaining whole epoch (one iterator and one set of Keras
            # per-fit costs, about a second an epoch here); a resumed epoch's remaining
            # batches, a partial last epoch (train_steps not a multiple of an epoch's
            # batches) and a multi-worker run go one epoch a fit.
            whole = not state.batch and batches == length.batches_per_epoch and strategy_name != "multi_worker"
            last = length.whole_epochs if whole else epoch + 1
            seeds = [shuffle_seed(seed, e) for e in range(epoch, last)]
            dataset = data_lib.make_dataset(
                examples_dir, data_range, batch_size, split="train", shuffle_seed=seeds,
                with_labels=params["class_conditional"],
            )
            if state.batch:
                dataset = dataset.skip(state.batch)  # the batches this epoch had done before the restart
            if not whole:
                dataset = dataset.take(max(batches - state.batch, 0))  # a partial last epoch stops at the last step
            if strategy_name == "multi_worker":
                kdiff.distribute.fit(model, dataset, epochs=1, strategy=strategy, callbacks=callbacks, verbose=0)
            else:
                model.fit(
                    dataset, validation_data=validation, initial_epoch=epoch, epochs=last,
                    steps_per_epoch=length.batches_per_epoch if whole else None,
                    callbacks=callbacks, shuffle=False, verbose=0,
                )
            if state.nan_step is not None:
                return
            if state.epoch == epoch:  # an empty epoch (no batches): avoid looping forever
                raise StageError(
                    f"train: epoch {epoch + 1} saw no batches; the Examples in {examples_dir} may be empty."
                )


def _import(params, image_shape, model_dir):
    """Writes an imported model (``model_source``) as the Model artifact, without training.

    The export carries the model's provenance (``config.json``'s ``source``) and
    ``history.json`` says the model was imported (no steps, no training time).

    Args:
        params: the stage's resolved params (``model_source``, ``seed``).
        image_shape: the Examples' (height, width, channels), which the model must match.
        model_dir: the Model directory to write.

    Raises:
        StageError: the source cannot be read, or its images differ from the Examples'.
    """
    from kdiff import export as export_lib

    from pipeline import imports

    try:
        model, source = imports.import_model(params["model_source"], image_shape, seed=params["seed"])
    except (ValueError, FileNotFoundError, ImportError, OSError) as error:
        raise StageError(f"train: cannot import --model_source={params['model_source']}: {error}") from error
    shape = tuple(int(d) for d in model.image_shape)
    if shape != tuple(image_shape):
        raise StageError(
            f"train: the imported model makes images of {list(shape)}; expected the Examples' {list(image_shape)}. "
            f"Received: --model_source={params['model_source']}; set --image_size / --channels to match it."
        )
    _log(f"imported {type(model).__name__} from {params['model_source']} ({model.network.count_params():,} parameters)")
    history = {
        "loss": [], "val_loss": [], "steps": 0, "seconds": None, "steps_per_second": None, "epochs": 0,
        "num_parameters": int(model.network.count_params()), "imported": source,
        "precision": None, "export_precision": EXPORT_PRECISION,
    }
    with io.atomic_directory(model_dir) as out:
        _log("exporting the SavedModel")
        export_lib.export(model, os.path.join(out, "export"), source=source, precision=EXPORT_PRECISION)
        io.write_json(os.path.join(out, "history.json"), history)
        io.makedirs(os.path.join(out, "logs"), exist_ok=False)
    _log(f"wrote {model_dir}")


EXPORT_PRECISION = "float32"  # what the export (and so the sample stage) computes in: see _float32_twin


def _float32_twin(model, params, image_shape, precision):
    """The model to export: itself in float32; under mixed precision, a float32 copy.

    Mixed precision keeps float32 weights and computes in 16 bits; the export (and so the
    sample stage) computes in float32, from the same weights — sampling loops of hundreds
    of steps are where 16-bit round-off accumulates.
    """
    if precision == "float32":
        return model
    twin = _build(params.replace(precision="float32"), image_shape)
    twin.network.set_weights(model.network.get_weights())
    twin.ema_network.set_weights(model.ema_network.get_weights())
    return twin


def _build(params, image_shape):
    from pipeline import builders

    return builders.build_model(params, image_shape, num_classes=params.get("num_classes"))


def _should_resume(restored, recipe, params, checkpoint_dir):
    """Whether training continues from the checkpoint ``restored``, saying which and why.

    A checkpoint is resumed when the rerun has the recipe it was written with (a crash's
    rerun). It is discarded — training starts afresh — when ``--force`` reran the stage
    or the recipe (``RECIPE_FIELDS``) changed, unless ``--resume`` asks to continue from it
    with the new recipe.

    Args:
        restored: the checkpoint's state (``Checkpoints.read``).
        recipe: this run's ``RECIPE_FIELDS`` values.
        params: the stage's params (``force`` and ``resume``: the run's flags).
        checkpoint_dir: where the checkpoint is (for the messages).

    Returns:
        True to restore it, False to train afresh.
    """
    where = f"the checkpoint at step {restored['step']} in {checkpoint_dir}"
    diverged = restored.get("diverged")
    # The recipe of the last run on it: the one that diverged, else the one that wrote it.
    saved = (diverged or {}).get("recipe") or restored.get("recipe")
    history = None
    if diverged:
        history = f"preceded a divergence (NaN at step {diverged['step']} with {_recipe_text(diverged['recipe'])})"
    if params.get("resume"):
        note = f"; it {history}" if history else ""
        if saved is not None and saved != recipe:
            note += f"; it was written with {_recipe_text(saved)}, now {_recipe_text(recipe)}"
        _log(f"--resume: continuing from {where}{note}")
        return True
    if params.get("force"):
        _log(f"--force: training afresh, discarding {where} (--resume continues from it)")
        return False
    if saved is None or saved == recipe:
        if history:
            _log(f"resuming {where}, which {history}, with the same settings: expect the same NaN")
        return True
    written = history or f"was written with {_recipe_text(saved)}"
    _log(
        f"{where} {written}; with {_recipe_text(recipe)} training starts afresh "
        "(--resume continues from it with these settings)"
    )
    return False


def _nan_message(state, checkpoint_dir, params):
    if state.last_checkpoint_step is not None:
        kept = f"the last good checkpoint (step {state.last_checkpoint_step}) is kept at {checkpoint_dir}"
    else:
        kept = f"no checkpoint was written before it (checkpoints go to {checkpoint_dir})"
    advice = f"lower --learning_rate (now {params.get('learning_rate')})"
    if not params.get("warmup_steps"):
        advice += " or add a warm-up (--warmup_steps)"
    if params.get("precision") == "mixed_float16":
        advice += ", or use --precision=float32 or mixed_bfloat16"
    if state.last_checkpoint_step is None:
        rerun = "the rerun trains from scratch"
    else:
        rerun = (
            f"with other {'/'.join('--' + name for name in RECIPE_FIELDS)} the rerun trains from scratch, "
            f"and with --resume as well it continues from step {state.last_checkpoint_step} with them"
        )
    return f"train: the loss became NaN at step {state.nan_step}; {kept}; {advice}, then rerun: {rerun}."


def _recipe_text(recipe):
    return ", ".join(f"{name}={value}" for name, value in recipe.items())
