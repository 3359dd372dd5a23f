"""The bundled dataset — scikit-learn's 1,797 handwritten 8×8 digits — and the shipped model.

``load_uint8`` returns them as 8-bit images (scikit-learn's pixel values 0..16 mapped to
0..255 by ``to_uint8``, the one scaling: the pipeline ingests these); ``load`` returns
them as floats in a data range, at their own 8×8 or upsampled to a size the U-Net suits;
``python -m kdiff.digits`` trains a small DDPM on them and exports it (this is how
``saved_models/ddpm_digits`` is made). No network access is needed: the data ship inside scikit-learn.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kdiff import checks

__all__ = ["PIXEL_MAX", "to_uint8", "load_uint8", "load", "train", "main"]

PIXEL_MAX = 16  # scikit-learn's digits hold integer pixel values 0..16


def to_uint8(values):
    """scikit-learn digits pixel values 0..16 → uint8 0..255 (× 255/16, rounded).

    Args:
        values: an array of pixel values in [0, 16], any shape.

    Returns:
        A uint8 array of the same shape.
    """
    values = np.asarray(values, np.float64)
    return np.round(np.clip(values, 0, PIXEL_MAX) * (255.0 / PIXEL_MAX)).astype(np.uint8)


def load_uint8(return_labels=False):
    """The 1,797 digits as uint8 images [N, 8, 8, 1] (``to_uint8`` of scikit-learn's).

    Args:
        return_labels: also return the int labels [N].

    Returns:
        The images (and labels).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = to_uint8(digits.images)[..., None]
    if return_labels:
        return images, digits.target.astype("int32")
    return images


def load(image_size=16, data_range=(-1.0, 1.0), return_labels=False):
    """The 1,797 digits as float32 images [N, image_size, image_size, 1].

    The pixels are ``load_uint8``'s (what the pipeline trains on), mapped from 0..255 to
    ``data_range``.

    Args:
        image_size: output height and width (bilinear resize from 8×8).
        data_range: (low, high) the pixel values are scaled to.
        return_labels: also return the int labels [N].

    Returns:
        The images (and labels).
    """
    import tensorflow as tf

    image_size = checks.positive_int(image_size, "image_size")
    pixels, labels = load_uint8(return_labels=True)
    images = pixels.astype("float32") / 255.0  # [0, 1]
    if image_size != 8:
        images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    low, high = data_range
    images = (np.clip(images, 0.0, 1.0) * (high - low) + low).astype("float32")
    if return_labels:
        return images, labels
    return images


def train(output, *, image_size=8, epochs=100, batch_size=64, learning_rate=1e-3, seed=0, T=1000, verbose="auto",
          ema_decay=0.999, lr_decay=True):
    """Trains a small DDPM (``UNet.small``) on the digits and exports it to ``output``.

    The recipe is the pipeline's default run's (``pipeline.config.RunConfig``): Adam at
    ``learning_rate`` after a 200-step warm-up from a tenth of it, decaying linearly to 0
    at the last step, and an EMA of decay 0.999 that is sampled from.

    Args:
        output: the SavedModel directory to write.
        image_size: image height and width.
        epochs: passes over the 1,797 digits (100: 2,900 steps at batch 64).
        batch_size: batch size.
        learning_rate: peak learning rate (after a 200-step warm-up from a tenth of it).
        seed: seed of the weights and the training noise.
        T: diffusion steps of the linear schedule.
        verbose: Keras' fit verbosity; "auto": the progress bar on a terminal, one line per
            epoch where stdout is a file or a pipe (no control characters in logs).
        ema_decay: decay of the EMA copy of the weights (the exported one).
        lr_decay: decay the learning rate linearly to 0 at the last step, when the run is
            longer than the warm-up (a shorter one keeps the warm-up's rate).

    Returns:
        The trained ``kdiff.DDPM``.
    """
    import keras
    import tensorflow as tf

    from kdiff import _terminal, data, export, optim, schedules
    from kdiff.diffusion import DDPM
    from kdiff.models import UNet

    keras.utils.set_random_seed(seed)
    images = load(image_size)
    dataset = data.without_autotuning(
        tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=seed).batch(batch_size)
    )
    warmup_steps = 200
    steps = checks.positive_int(epochs, "epochs") * -(-len(images) // batch_size)
    decay_steps = steps if lr_decay and steps > warmup_steps else None
    model = DDPM(UNet.small(image_size=image_size, in_channels=1), schedules.linear(T=T), ema_decay=ema_decay, seed=seed)
    model.compile(optimizer=optim.adam(
        learning_rate, warmup_steps=warmup_steps, warmup_from=learning_rate / 10, decay_steps=decay_steps
    ))
    start = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=_terminal.keras_verbosity(verbose))
    print(f"trained {int(model.optimizer.iterations)} steps in {time.perf_counter() - start:.0f} s")
    export.export(model, output, overwrite=True)
    return model


def main(argv=None):
    """``python -m kdiff.digits --out saved_models/ddpm_digits``."""
    parser = argparse.ArgumentParser(prog="python -m kdiff.digits", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="saved_models/ddpm_digits", help="SavedModel directory to write")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train(args.out, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
