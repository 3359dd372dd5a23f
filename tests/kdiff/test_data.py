"""``kdiff.data``: datasets whose iterators end without waiting for tf.data's autotuner."""

import numpy as np
import pytest
import tensorflow as tf

import kdiff


def test_without_autotuning_turns_the_model_off_and_keeps_the_elements():
    dataset = tf.data.Dataset.range(50).map(lambda i: i * i, num_parallel_calls=tf.data.AUTOTUNE).batch(8)
    assert dataset.options().autotune.enabled is not False  # TensorFlow's default: on
    quiet = kdiff.data.without_autotuning(dataset.prefetch(tf.data.AUTOTUNE))
    assert quiet.options().autotune.enabled is False
    np.testing.assert_array_equal(
        np.concatenate([b.numpy() for b in quiet]), np.arange(50, dtype=np.int64) ** 2
    )


def test_the_digits_training_set_has_it_off(monkeypatch):
    """``kdiff.digits.train`` feeds fit() a dataset without the autotuner."""
    seen = {}

    class Stop(Exception):
        pass

    def fit(self, dataset, **kwargs):
        seen["enabled"] = dataset.options().autotune.enabled
        raise Stop

    monkeypatch.setattr(kdiff.DDPM, "fit", fit)
    with pytest.raises(Stop):
        kdiff.digits.train("/nonexistent-export", epochs=1)
    assert seen == {"enabled": False}


def test_something_else_than_a_dataset_is_refused_naming_the_argument():
    with pytest.raises(TypeError, match=r"Expected `dataset` to be a tf.data.Dataset.*Received: dataset of type ndarray"):
        kdiff.data.without_autotuning(np.zeros((4, 8, 8, 1)))
