"""Distribution strategies by name, mixed precision, and a training loop for multi-worker runs.

* ``get_strategy("default" | "mirrored" | "multi_worker" | "tpu")``;
* ``precision_policy("float32" | "mixed_float16" | "mixed_bfloat16")``: the Keras dtype
  policy to build a network and its diffusion model with (``dtype=``), and
  ``set_precision(...)``, which makes it Keras' global policy instead;
* ``is_chief(strategy)``: whether this worker writes checkpoints, exports and logs;
* ``fit(model, dataset, epochs=…, strategy=…)``: ``strategy.run`` over the model's own
  ``train_step``. Keras 3's ``Model.fit`` works with the default and Mirrored
  strategies, but under ``MultiWorkerMirroredStrategy`` it fails in its metric reduction
  (keras-team/keras#20585, tensorflow/tensorflow#72388; on this machine's TF 2.21 /
  Keras 3.15: "Invalid reduction dimension 0 for input with 0 dimensions"), so
  multi-worker training runs this loop instead — the same train step, the same
  gradients, Keras callbacks included.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kdiff import _cpu, _moved, checks

__all__ = [
    "STRATEGIES", "POLICIES", "get_strategy", "precision_policy", "native_bfloat16", "default_precision",
    "set_precision", "is_chief", "is_chief_task", "fit",
]

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# The Keras dtype policies a network can train in (``precision_policy``); what it samples in
# is ``kdiff.samplers.draw.SAMPLING_PRECISIONS``.
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")

# The old name, for one release.
__getattr__ = _moved.renamed(
    __name__, {"PRECISIONS": "kdiff.distribute.POLICIES"},
    " (what a network samples in is kdiff.samplers.draw.SAMPLING_PRECISIONS)",
)


def get_strategy(name="default", *, devices=None, tpu=None):
    """Returns a ``tf.distribute.Strategy`` by name.

    Args:
        name: "default" (one device), "mirrored" (all local GPUs, or ``devices``),
            "multi_worker" (``MultiWorkerMirroredStrategy``; the cluster comes from the
            ``TF_CONFIG`` environment variable) or "tpu" (``TPUStrategy``).
        devices: device names for "mirrored" (e.g. ["/cpu:0", "/cpu:1"]).
        tpu: the TPU address or name for "tpu" ("" / None: the local TPU or Colab's).

    Returns:
        The strategy. Build and compile models inside ``strategy.scope()``.
    """
    checks.one_of(name, "strategy", STRATEGIES)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def precision_policy(precision="float32"):
    """The Keras dtype policy of a precision, to pass to layers and models as ``dtype=``.

    Mixed precision computes in 16 bits and keeps float32 weights. The kdiff networks
    hand their policy to every sublayer (their output heads stay float32); give the
    diffusion model the same policy, so that ``compile`` wraps the optimizer in Keras'
    ``LossScaleOptimizer`` for ``mixed_float16`` (the train step applies it through
    ``optimizer.scale_loss``)::

        policy = kdiff.distribute.precision_policy("mixed_bfloat16")
        model = kdiff.DDPM(UNet.small(dtype=policy), schedule, dtype=policy)

    Args:
        precision: "float32", "mixed_float16" or "mixed_bfloat16".

    Returns:
        A ``keras.DTypePolicy``.
    """
    return keras.DTypePolicy(checks.one_of(precision, "precision", POLICIES))


NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instruction sets that compute bfloat16


def native_bfloat16(cpuinfo=_cpu.CPUINFO):
    """Whether this machine's CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX),
    where ``mixed_bfloat16`` trains faster than float32 rather than emulating it.

    Args:
        cpuinfo: the file listing the CPU's flags (Linux's; elsewhere it is missing and the
            answer is False).

    Returns:
        True when one of ``NATIVE_BFLOAT16_FLAGS`` is among the CPU's flags.
    """
    flags = _cpu.cpu_flags(cpuinfo)
    return any(flag in flags for flag in NATIVE_BFLOAT16_FLAGS)


def default_precision():
    """The precision to train in when none is asked for: ``mixed_bfloat16`` on a machine
    whose only devices are CPUs with native bfloat16 (``native_bfloat16``), else float32.

    Returns:
        A name in ``POLICIES``.
    """
    # Physical devices: listing logical ones would start TensorFlow's runtime, after which a
    # multi-worker strategy can no longer configure its collectives.
    if tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"):
        return "float32"
    return "mixed_bfloat16" if native_bfloat16() else "float32"


def set_precision(policy="float32"):
    """Sets Keras' global dtype policy instead (``precision_policy`` for one model).

    Every layer made afterwards without a ``dtype`` takes this policy. Call it before
    building models.

    Args:
        policy: "float32", "mixed_float16" or "mixed_bfloat16".

    Returns:
        The policy name.
    """
    keras.mixed_precision.set_global_policy(precision_policy(policy))
    return policy


def fit(model, dataset, *, epochs=1, strategy=None, steps_per_epoch=None, callbacks=None, verbose=1):
    """Trains ``model`` with ``strategy.run(model.train_step)`` — the loop for multi-worker runs.

    Args:
        model: a compiled ``kdiff.DDPM`` / ``NCSN`` / ``ScoreSDE`` built in ``strategy.scope()``.
        dataset: a ``tf.data.Dataset`` of global batches (images, or (images, labels)).
        epochs: passes over the dataset.
        strategy: the strategy the model was built under (default: the current one).
        steps_per_epoch: stop each epoch after this many steps (None: the whole dataset).
        callbacks: Keras callbacks (``on_epoch_*`` / ``on_train_batch_end`` are called).
        verbose: print one line per epoch (chief worker only).

    Returns:
        A ``keras.callbacks.History``.
    """
    strategy = strategy or tf.distribute.get_strategy()
    epochs = checks.positive_int(epochs, "epochs")
    if getattr(model, "optimizer", None) is None:
        raise ValueError("Expected a compiled model (call model.compile(optimizer=...) first).")
    with strategy.scope():
        model.optimizer.build(model.network.trainable_variables)
    distributed = strategy.experimental_distribute_dataset(dataset)

    @tf.function
    def train_step(batch):
        strategy.run(model.train_step, args=(batch,))

    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        list(callbacks or []) + [history], model=model, epochs=epochs, steps=steps_per_epoch
    )
    chief = is_chief(strategy)
    callback_list.on_train_begin()
    for epoch in range(epochs):
        model.loss_tracker.reset_state()
        callback_list.on_epoch_begin(epoch)
        for step, batch in enumerate(distributed):
            if steps_per_epoch is not None and step >= steps_per_epoch:
                break
            train_step(batch)
            callback_list.on_train_batch_end(step, {"loss": float(model.loss_tracker.result())})
        logs = {"loss": float(model.loss_tracker.result())}
        callback_list.on_epoch_end(epoch, logs)
        if verbose and chief:
            print(f"Epoch {epoch + 1}/{epochs} - loss: {logs['loss']:.4f}", flush=True)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return history


def is_chief(strategy):
    """Whether this process is the chief: the one that writes checkpoints, exports and logs.

    Args:
        strategy: a ``tf.distribute.Strategy``.

    Returns:
        True without a cluster (one process), for the "chief" task and for worker 0 (the
        chief of a ``MultiWorkerMirroredStrategy`` cluster of workers only); False for
        the other workers.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    return is_chief_task(resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id)


def is_chief_task(cluster, task_type, task_id):
    """Whether a task of a ``TF_CONFIG`` cluster is its chief (see :func:`is_chief`); needs
    no strategy, so a launcher can tell before TensorFlow builds one.

    Args:
        cluster: ``TF_CONFIG``'s ``cluster``: task type → addresses (empty: one process).
        task_type: ``TF_CONFIG``'s ``task.type`` ("chief", "worker", …; None: one process).
        task_id: ``TF_CONFIG``'s ``task.index``.

    Returns:
        True without a cluster, for the "chief" task and for worker 0 of a cluster of
        workers only.
    """
    if not cluster:
        return True
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
