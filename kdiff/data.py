"""Input pipelines for training: ``tf.data`` datasets that end without a wait.

``without_autotuning(dataset)`` turns off ``tf.data``'s autotuning model for a dataset.
With it on (TensorFlow's default), deleting an iterator — at the end of every ``fit()``,
``evaluate()``, validation pass and ``predict()`` — waits for the autotuning thread's
next wake-up, up to a minute (measured in docs/benchmarks.md). Without the model, a
parallel ``map`` with ``tf.data.AUTOTUNE`` runs one call a core and ``prefetch`` keeps
its own buffer sizing; the batches are the same.
"""

from __future__ import annotations

__all__ = ["without_autotuning"]


def without_autotuning(dataset):
    """``dataset`` with ``tf.data``'s autotuning model off (see the module's docstring).

    Args:
        dataset: a ``tf.data.Dataset``.

    Returns:
        The same dataset, its iterators deleted without waiting for the autotuner.

    Raises:
        TypeError: ``dataset`` is not a ``tf.data.Dataset``.
    """
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            "Expected `dataset` to be a tf.data.Dataset (NumPy arrays: wrap them with "
            f"tf.data.Dataset.from_tensor_slices). Received: dataset of type {type(dataset).__name__}"
        )
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
