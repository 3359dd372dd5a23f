"""pytorch-fid's FID Inception network as a Keras 3 model, and a batched feature extractor.

:func:`FIDInceptionV3` rebuilds ``pytorch_fid.inception.InceptionV3([3],
resize_input=True, normalize_input=True, use_fid_inception=True)`` — the network behind
pytorch-fid's FIDs — layer for layer:

* the input, images scaled to [0, 1] of any size, is resized to 299×299 as
  ``F.interpolate(x, (299, 299), mode="bilinear", align_corners=False)`` resizes it
  (:class:`TorchBilinearResize`: half-pixel bilinear without antialiasing, the source
  coordinates rounded as torch's CPU kernel rounds them), then mapped to [−1, 1] by
  ``2x − 1``;
* torchvision's ``BasicConv2d`` is a convolution without bias, BatchNorm (ε = 0.001) and
  ReLU; torch's paddings become "same" (odd kernels, stride 1) or "valid" (stride 2);
* pytorch-fid's FID blocks: ``FIDInceptionA`` / ``FIDInceptionC`` / ``FIDInceptionE_1``
  average-pool 3×3 (stride 1, padding 1) *without* counting the padding (TensorFlow's
  "same" average pooling), ``FIDInceptionE_2`` max-pools there instead; torchvision's
  ``InceptionB`` / ``InceptionD`` max-pool 3×3 with stride 2 and no padding;
* the final adaptive average pool to 1×1 gives the 2048-d ``pool3`` features.

Layers are named after the torch modules (``Mixed_5b.branch1x1.conv``, ``….bn``) so that
:func:`kdiff.fid.weights.load_pytorch_fid_weights` maps pytorch-fid's state dict onto
them by name.

:class:`FIDInceptionFeatures` maps uint8 (or float 0..255) images ``[N, H, W, C]`` to
``{"features": float32 [N, 2048]}``, like the extractors of ``pipeline/features.py``,
with pytorch-fid's resize (in the graph) or clean-fid's (PIL bicubic, on the host).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kdiff.checks import one_of, positive_int

__all__ = [
    "FID_DIM",
    "FID_SIZE",
    "FIDInceptionV3",
    "TorchBilinearResize",
    "clean_resize",
    "prepare_images",
    "torch_bilinear_resize",
]

FID_SIZE = 299
FID_DIM = 2048
RESIZES = ("pytorch_fid", "clean")


# --------------------------------------------------------------------------- resize


def _torch_source_indices(in_size, out_size):
    """Source rows (or columns) and weights of torch's ``align_corners=False`` bilinear resize.

    torch computes the source coordinate ``scale · (i + 0.5) − 0.5`` in float32 with a
    fused multiply-add (one rounding); it is emulated here by computing the product and the
    difference in float64 (exact for these magnitudes) and rounding once to float32.
    Negative coordinates are clamped to 0, as torch clamps them.

    Args:
        in_size: the input length, a scalar int32 tensor.
        out_size: the output length, a Python int.

    Returns:
        ``(i0, i1, w0, w1)``: int32 indices and float32 weights, each ``[out_size]``.
    """
    scale = tf.cast(in_size, tf.float32) / tf.constant(float(out_size), tf.float32)
    centers = tf.range(out_size, dtype=tf.float32) + 0.5
    src = tf.cast(tf.cast(scale, tf.float64) * tf.cast(centers, tf.float64) - 0.5, tf.float32)
    src = tf.maximum(src, 0.0)
    i0 = tf.minimum(tf.cast(tf.floor(src), tf.int32), in_size - 1)
    w1 = tf.clip_by_value(src - tf.cast(i0, tf.float32), 0.0, 1.0)
    i1 = tf.minimum(i0 + 1, in_size - 1)
    return i0, i1, 1.0 - w1, w1


def torch_bilinear_resize(images, size=FID_SIZE):
    """Resizes NHWC images as ``F.interpolate(mode="bilinear", align_corners=False)`` does.

    Half-pixel-centred bilinear interpolation without antialiasing, for up- and
    downsampling alike; ``tf.image.resize(method="bilinear", antialias=False)`` computes
    the same interpolation, but with source coordinates rounded differently from torch
    (up to 1.5e-5 apart on [0, 1] noise images shrunk from 320×450, 2e-6 on 32×32 ones
    enlarged; 1.2e-7, one float32 rounding, here).

    Args:
        images: a float32 tensor ``[N, H, W, C]``.
        size: the output height and width (an int).

    Returns:
        A float32 tensor ``[N, size, size, C]``.
    """
    shape = tf.shape(images)
    h0, h1, a0, a1 = _torch_source_indices(shape[1], size)
    w0, w1, b0, b1 = _torch_source_indices(shape[2], size)
    b0, b1 = b0[None, None, :, None], b1[None, None, :, None]

    def along_width(rows):
        return tf.gather(rows, w0, axis=2) * b0 + tf.gather(rows, w1, axis=2) * b1

    top = along_width(tf.gather(images, h0, axis=1))
    bottom = along_width(tf.gather(images, h1, axis=1))
    return top * a0[None, :, None, None] + bottom * a1[None, :, None, None]


@keras.saving.register_keras_serializable(package="kdiff.fid")
class TorchBilinearResize(keras.layers.Layer):
    """A layer resizing NHWC images to ``size × size`` as torch's bilinear ``F.interpolate``.

    See :func:`torch_bilinear_resize`.

    Args:
        size: output height and width, an integer ≥ 1.
        **kwargs: Keras layer arguments (``name``, ...).

    Raises:
        ValueError: ``size`` is not an integer ≥ 1.
    """

    def __init__(self, size=FID_SIZE, **kwargs):
        super().__init__(**kwargs)
        self.size = positive_int(size, "size")

    def call(self, images):
        return torch_bilinear_resize(images, self.size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def clean_resize(images, size=FID_SIZE):
    """clean-fid's resize: each channel, as float32, PIL-bicubic-resized and clipped to 0..255.

    What ``cleanfid.resize.make_resizer("PIL", False, "bicubic", (size, size))`` does (the
    "clean" mode of clean-fid), on the host with Pillow.

    Args:
        images: ``[N, H, W, C]`` pixels 0..255 (uint8 or float).
        size: output height and width.

    Returns:
        A float32 numpy array ``[N, size, size, C]`` of pixels in 0..255.
    """
    from PIL import Image

    images = np.asarray(images)
    out = np.empty((images.shape[0], size, size, images.shape[3]), np.float32)
    for n in range(images.shape[0]):
        for c in range(images.shape[3]):
            channel = Image.fromarray(np.ascontiguousarray(images[n, :, :, c], dtype=np.float32))
            resized = channel.resize((size, size), resample=Image.BICUBIC)
            out[n, :, :, c] = np.asarray(resized).clip(0, 255)
    return out


# --------------------------------------------------------------------------- network


class _Layers:
    """Makes the network's layers, all with one Keras dtype policy (None: the global one)."""

    def __init__(self, dtype):
        self.dtype = dtype

    def conv(self, x, name, filters, kernel, strides=1, padding="valid"):
        """torchvision's BasicConv2d: convolution without bias, BatchNorm(ε = 0.001), ReLU."""
        layers, dtype = keras.layers, self.dtype
        x = layers.Conv2D(
            filters, kernel, strides=strides, padding=padding, use_bias=False, name=f"{name}.conv", dtype=dtype
        )(x)
        x = layers.BatchNormalization(epsilon=1e-3, name=f"{name}.bn", dtype=dtype)(x)
        return layers.ReLU(name=f"{name}.relu", dtype=dtype)(x)

    def avg_pool(self, x, name):
        """3×3 average pool, stride 1, padding 1 that does not count the padding (count_include_pad=False)."""
        return keras.layers.AveragePooling2D(3, strides=1, padding="same", name=name, dtype=self.dtype)(x)

    def max_pool(self, x, name, strides=2, padding="valid"):
        """3×3 max pool (torch's ``MaxPool2d(3, stride)``; padding 1 at stride 1 is "same")."""
        return keras.layers.MaxPooling2D(3, strides=strides, padding=padding, name=name, dtype=self.dtype)(x)

    def concat(self, tensors, name):
        return keras.layers.Concatenate(axis=-1, name=name, dtype=self.dtype)(tensors)

    def inception_a(self, x, name, pool_features):
        """pytorch-fid's FIDInceptionA (Mixed_5b/5c/5d)."""
        conv = self.conv
        branch1x1 = conv(x, f"{name}.branch1x1", 64, 1)
        branch5x5 = conv(x, f"{name}.branch5x5_1", 48, 1)
        branch5x5 = conv(branch5x5, f"{name}.branch5x5_2", 64, 5, padding="same")
        dbl = conv(x, f"{name}.branch3x3dbl_1", 64, 1)
        dbl = conv(dbl, f"{name}.branch3x3dbl_2", 96, 3, padding="same")
        dbl = conv(dbl, f"{name}.branch3x3dbl_3", 96, 3, padding="same")
        pool = conv(self.avg_pool(x, f"{name}.avg_pool"), f"{name}.branch_pool", pool_features, 1)
        return self.concat([branch1x1, branch5x5, dbl, pool], name)

    def inception_b(self, x, name):
        """torchvision's InceptionB (Mixed_6a): the 35 → 17 reduction."""
        conv = self.conv
        branch3x3 = conv(x, f"{name}.branch3x3", 384, 3, strides=2)
        dbl = conv(x, f"{name}.branch3x3dbl_1", 64, 1)
        dbl = conv(dbl, f"{name}.branch3x3dbl_2", 96, 3, padding="same")
        dbl = conv(dbl, f"{name}.branch3x3dbl_3", 96, 3, strides=2)
        pool = self.max_pool(x, f"{name}.max_pool")
        return self.concat([branch3x3, dbl, pool], name)

    def inception_c(self, x, name, c7):
        """pytorch-fid's FIDInceptionC (Mixed_6b–6e), ``c7`` channels in the factorized 7×7s."""
        conv = self.conv
        branch1x1 = conv(x, f"{name}.branch1x1", 192, 1)
        b7 = conv(x, f"{name}.branch7x7_1", c7, 1)
        b7 = conv(b7, f"{name}.branch7x7_2", c7, (1, 7), padding="same")
        b7 = conv(b7, f"{name}.branch7x7_3", 192, (7, 1), padding="same")
        dbl = conv(x, f"{name}.branch7x7dbl_1", c7, 1)
        dbl = conv(dbl, f"{name}.branch7x7dbl_2", c7, (7, 1), padding="same")
        dbl = conv(dbl, f"{name}.branch7x7dbl_3", c7, (1, 7), padding="same")
        dbl = conv(dbl, f"{name}.branch7x7dbl_4", c7, (7, 1), padding="same")
        dbl = conv(dbl, f"{name}.branch7x7dbl_5", 192, (1, 7), padding="same")
        pool = conv(self.avg_pool(x, f"{name}.avg_pool"), f"{name}.branch_pool", 192, 1)
        return self.concat([branch1x1, b7, dbl, pool], name)

    def inception_d(self, x, name):
        """torchvision's InceptionD (Mixed_7a): the 17 → 8 reduction."""
        conv = self.conv
        b3 = conv(x, f"{name}.branch3x3_1", 192, 1)
        b3 = conv(b3, f"{name}.branch3x3_2", 320, 3, strides=2)
        b7 = conv(x, f"{name}.branch7x7x3_1", 192, 1)
        b7 = conv(b7, f"{name}.branch7x7x3_2", 192, (1, 7), padding="same")
        b7 = conv(b7, f"{name}.branch7x7x3_3", 192, (7, 1), padding="same")
        b7 = conv(b7, f"{name}.branch7x7x3_4", 192, 3, strides=2)
        pool = self.max_pool(x, f"{name}.max_pool")
        return self.concat([b3, b7, pool], name)

    def inception_e(self, x, name, max_pool):
        """pytorch-fid's FIDInceptionE_1 (average pool: Mixed_7b) or FIDInceptionE_2 (max pool: Mixed_7c)."""
        conv = self.conv
        branch1x1 = conv(x, f"{name}.branch1x1", 320, 1)
        b3 = conv(x, f"{name}.branch3x3_1", 384, 1)
        b3 = self.concat(
            [
                conv(b3, f"{name}.branch3x3_2a", 384, (1, 3), padding="same"),
                conv(b3, f"{name}.branch3x3_2b", 384, (3, 1), padding="same"),
            ],
            f"{name}.branch3x3",
        )
        dbl = conv(x, f"{name}.branch3x3dbl_1", 448, 1)
        dbl = conv(dbl, f"{name}.branch3x3dbl_2", 384, 3, padding="same")
        dbl = self.concat(
            [
                conv(dbl, f"{name}.branch3x3dbl_3a", 384, (1, 3), padding="same"),
                conv(dbl, f"{name}.branch3x3dbl_3b", 384, (3, 1), padding="same"),
            ],
            f"{name}.branch3x3dbl",
        )
        if max_pool:  # FIDInceptionE_2's patch: max pool, padding 1 (padded values never win)
            pooled = self.max_pool(x, f"{name}.max_pool", strides=1, padding="same")
        else:
            pooled = self.avg_pool(x, f"{name}.avg_pool")
        pool = conv(pooled, f"{name}.branch_pool", 192, 1)
        return self.concat([branch1x1, b3, dbl, pool], name)


COMPUTE_DTYPES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def FIDInceptionV3(  # noqa: N802 - a model constructor, named as keras.applications names them
    resize_input=True, normalize_input=True, compute_dtype="float32", name="fid_inception_v3"
):
    """pytorch-fid's FID InceptionV3 (output block 3, the 2048-d pool3 features) in Keras.

    The weights are Keras' initializers' until
    :func:`kdiff.fid.weights.load_pytorch_fid_weights` loads pytorch-fid's.

    Args:
        resize_input: resize the input to 299×299 as pytorch-fid does
            (:class:`TorchBilinearResize`); without it the input must be 299×299 already.
        normalize_input: map the input from [0, 1] to [−1, 1] (``2x − 1``) as pytorch-fid
            does; without it the input must be in [−1, 1].
        compute_dtype: "float32" (pytorch-fid's numbers) or "bfloat16" (Keras'
            "mixed_bfloat16" policy: float32 weights, bfloat16 convolutions; about twice as
            fast on CPUs with bfloat16 units, features ~1e-2 off). The resize, the
            normalization and the final average pool stay float32.
        name: the model's name.

    Returns:
        A functional ``keras.Model``: float32 NHWC images ``[N, H, W, 3]`` (any H and W
        when ``resize_input``) → float32 ``[N, 2048]``.

    Raises:
        ValueError: an unknown ``compute_dtype``.
    """
    policy = COMPUTE_DTYPES[one_of(compute_dtype, "compute_dtype", list(COMPUTE_DTYPES))]
    make = _Layers(policy)
    conv = make.conv
    size = None if resize_input else FID_SIZE
    inputs = keras.Input(shape=(size, size, 3), name="images")
    x = inputs
    if resize_input:
        x = TorchBilinearResize(FID_SIZE, name="resize", dtype="float32")(x)
    if normalize_input:
        x = keras.layers.Rescaling(2.0, offset=-1.0, name="normalize", dtype="float32")(x)
    # Block 0: 299 → 149 → 147 → 147 → max pool → 73
    x = conv(x, "Conv2d_1a_3x3", 32, 3, strides=2)
    x = conv(x, "Conv2d_2a_3x3", 32, 3)
    x = conv(x, "Conv2d_2b_3x3", 64, 3, padding="same")
    x = make.max_pool(x, "maxpool1")
    # Block 1: 73 → 73 → 71 → max pool → 35
    x = conv(x, "Conv2d_3b_1x1", 80, 1)
    x = conv(x, "Conv2d_4a_3x3", 192, 3)
    x = make.max_pool(x, "maxpool2")
    # Block 2: 35 → 17
    x = make.inception_a(x, "Mixed_5b", pool_features=32)
    x = make.inception_a(x, "Mixed_5c", pool_features=64)
    x = make.inception_a(x, "Mixed_5d", pool_features=64)
    x = make.inception_b(x, "Mixed_6a")
    x = make.inception_c(x, "Mixed_6b", c7=128)
    x = make.inception_c(x, "Mixed_6c", c7=160)
    x = make.inception_c(x, "Mixed_6d", c7=160)
    x = make.inception_c(x, "Mixed_6e", c7=192)
    # Block 3: 17 → 8 → average pool
    x = make.inception_d(x, "Mixed_7a")
    x = make.inception_e(x, "Mixed_7b", max_pool=False)
    x = make.inception_e(x, "Mixed_7c", max_pool=True)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool3", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


# --------------------------------------------------------------------------- extractor


def image_batch(images, name="images"):
    """``images`` as a ``[N, H, W, C]`` numpy array with C in 1, 3, 4 (``[N, H, W]`` → C = 1).

    Args:
        images: an array-like of pixels.
        name: the argument's name, for the message.

    Returns:
        The numpy array, of rank 4.

    Raises:
        ValueError: another rank or channel count.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Expected `{name}` of shape [N, H, W, C] with C in (1, 3, 4). "
            f"Received: {name}.shape={images.shape}"
        )
    return images


def prepare_images(images, name="images"):
    """Checks images and returns them as ``[N, H, W, 3]`` pixels 0..255 (uint8 or float32).

    Grayscale images are repeated to 3 channels and an alpha channel is dropped, as
    ``PIL.Image.convert("RGB")`` does in pytorch-fid and clean-fid.

    Args:
        images: uint8 pixels, or floats in [0, 255], ``[N, H, W, C]`` (``[N, H, W]``
            for grayscale) with C in 1, 3, 4.
        name: the argument's name, for the messages.

    Returns:
        A numpy array ``[N, H, W, 3]``: uint8 as given, floats as float32.

    Raises:
        ValueError: another rank, channel count or dtype, or floats outside [0, 255].
    """
    images = image_batch(images, name)
    if images.dtype.kind == "f":
        images = images.astype(np.float32, copy=False)
        if images.size and not np.all(np.isfinite(images)):
            raise ValueError(
                f"Expected float `{name}` to hold pixel values in [0, 255]. "
                f"Received: {int(np.sum(~np.isfinite(images)))} NaN or infinite values"
            )
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(
                f"Expected float `{name}` to hold pixel values in [0, 255] (floats are read as "
                f"0..255, not 0..1). Received: min={images.min()}, max={images.max()}"
            )
    elif images.dtype != np.uint8:
        raise ValueError(
            f"Expected `{name}` as uint8 pixels or floats in [0, 255]. Received: dtype={images.dtype}"
        )
    if images.shape[-1] == 4:
        images = images[..., :3]
    elif images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images
