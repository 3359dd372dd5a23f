"""A tiny serializable network for tests of the diffusion models: (x, level[, y]) → x-shaped."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kdiff_tests")
class TinyNet(keras.Model):
    """Two convolutions conditioned on the noise level (and a class), a few hundred weights.

    Args:
        image_size: height and width.
        in_channels: image channels.
        out_channels: output channels (2× in_channels for a learned variance).
        num_classes: classes for class conditioning, or None.
    """

    def __init__(self, image_size=8, in_channels=1, out_channels=None, num_classes=None, **kwargs):
        super().__init__(**kwargs)
        self.image_size, self.in_channels = image_size, in_channels
        self.out_channels = out_channels or in_channels
        self.num_classes = num_classes
        self.inner = keras.layers.Conv2D(16, 3, padding="same")
        self.embed = keras.layers.Dense(16)
        self.classes = keras.layers.Embedding(num_classes, 16) if num_classes else None
        self.outer = keras.layers.Conv2D(self.out_channels, 3, padding="same")

    def call(self, x, level, y=None, training=False):
        level = tf.cast(tf.reshape(level, [-1, 1]), x.dtype) / 100.0
        h = self.embed(level)
        if self.classes is not None:
            h = h + tf.cast(self.classes(y), h.dtype)
        return self.outer(keras.activations.silu(self.inner(x) + h[:, None, None, :]))

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "num_classes": self.num_classes,
        }
