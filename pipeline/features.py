"""The pipeline's feature side: the feature classifier's training and the Beam transforms.

The extractors themselves (the FID Inception network, the classifier, Keras' InceptionV3,
the 2015 Inception graph), their JSON-able specs and ``load_extractor`` live in
``kdiff.fid.extractors`` (the ``python -m kdiff.fid`` command uses them too) and are
re-exported here. This module adds :func:`train_classifier` (the small CNN trained on the
dataset's labels), :class:`FeatureExtractorDoFn` / :class:`ExtractFeatures`, which run an
extractor over a PCollection of image batches — the extractor loaded from its spec in
``setup()``, never captured in a closure (DESIGN.md pattern 7) — and
:func:`set_statistics`, a set's feature mean and covariance.
"""

from __future__ import annotations

import contextlib

import numpy as np

from kdiff import data as kdiff_data
from kdiff.fid.extractors import (  # noqa: F401  (the extractors live in kdiff; re-exported here)
    SPEC_FILE_KEYS,
    IMAGENET_NOTOP_URL,
    INCEPTION_DIM,
    INCEPTION_SIZE,
    ClassifierFeatures,
    InceptionGraphFeatures,
    InceptionV3Features,
    describe,
    load_extractor,
    read_inception_graph,
    resolve_inception_weights,
)
from kdiff.fid.inception import image_batch

try:  # Beam is only needed for the transforms at the bottom of this module.
    import apache_beam as beam
except ImportError:  # pragma: no cover - apache-beam is a pipeline dependency
    beam = None

__all__ = [
    "ClassifierFeatures",
    "ExtractFeatures",
    "FeatureExtractorDoFn",
    "InceptionGraphFeatures",
    "InceptionV3Features",
    "describe",
    "load_extractor",
    "local_spec",
    "read_inception_graph",
    "resolve_inception_weights",
    "set_statistics",
    "train_classifier",
]


# --------------------------------------------------------------------------- classifier


def _classifier_network(input_shape, num_classes, feature_dim, seed):
    """The feature classifier, its weights and dropout drawn from ``seed`` alone (no global RNG).

    Args:
        input_shape: (height, width, channels) of the images.
        num_classes: softmax width.
        feature_dim: width of the "penultimate" layer.
        seed: an integer ≥ 0.

    Returns:
        An uncompiled ``keras.Sequential``.
    """
    import keras
    from keras import layers

    seeds = np.random.default_rng(seed)  # each initializer and dropout layer gets its own seed

    def next_seed():
        return int(seeds.integers(2**31))

    def init():
        return keras.initializers.GlorotUniform(seed=next_seed())

    height = input_shape[0]
    stack = [keras.Input(shape=input_shape)]
    if height > 32:  # large images: classify a 32×32 view (cheap, still ≫ chance on real data)
        stack.append(layers.Resizing(32, 32, interpolation="bilinear"))
        height = 32
    stack += [
        layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=init()),
        layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=init()),
    ]
    if height >= 8:
        stack.append(layers.MaxPooling2D())
        height //= 2
    stack += [layers.Conv2D(64, 3, padding="same", activation="relu", kernel_initializer=init())]
    if height >= 8:
        stack.append(layers.MaxPooling2D())
    stack += [
        layers.Flatten(),
        layers.Dropout(0.25, seed=next_seed()),
        layers.Dense(feature_dim, activation="relu", name="penultimate", kernel_initializer=init()),
        layers.Dropout(0.25, seed=next_seed()),
        layers.Dense(num_classes, activation="softmax", name="probabilities", kernel_initializer=init()),
    ]
    return keras.Sequential(stack, name="feature_classifier")


def train_classifier(
    images,
    labels,
    path,
    *,
    num_classes=None,
    feature_dim=64,
    epochs=None,
    batch_size=64,
    seed=0,
    max_images=20000,
    verbose=True,
):
    """Trains the feature classifier on labelled uint8 images and saves it to ``path``.

    A small CNN (3×3 convolutions with max pooling, a ``feature_dim``-unit ReLU layer named
    "penultimate", dropout, softmax) trained with Adam: seconds on the digits on a CPU
    (docs/benchmarks.md).

    Args:
        images: uint8 ``[N, H, W, C]``.
        labels: int ``[N]`` in ``[0, num_classes)``.
        path: where the ``.keras`` file goes.
        num_classes: number of classes (default: ``max(labels) + 1``).
        feature_dim: width of the penultimate layer (the feature space).
        epochs: passes over the data (default: about 20,000 images seen, 3 to 30 epochs).
        batch_size: batch size.
        seed: seed of the weights and the shuffling.
        max_images: train on at most this many images (a random subset; bounds the time).
        verbose: print a line per epoch.

    Returns:
        The saved path.
    """
    import keras
    import tensorflow as tf

    images = image_batch(images)
    if images.dtype != np.uint8:
        raise ValueError(f"Expected uint8 images (pixels 0..255). Received: dtype={images.dtype}")
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(
            f"Expected one label per image. Received: {len(images)} images, {len(labels)} labels"
        )
    if len(images) < 2:
        raise ValueError(
            f"Expected at least 2 labelled images to train the classifier. Received: {len(images)}"
        )
    if np.any(labels < 0):
        raise ValueError("Expected labels >= 0 (labels of -1 mark an unlabelled dataset).")
    num_classes = int(num_classes or labels.max() + 1)
    if labels.max() >= num_classes:
        raise ValueError(f"Expected labels < num_classes={num_classes}. Received: max label {labels.max()}")
    rng = np.random.default_rng(seed)
    if len(images) > max_images:
        keep = rng.choice(len(images), max_images, replace=False)
        images, labels = images[keep], labels[keep]
    if images.shape[-1] == 4:
        images = images[..., :3]
    if epochs is None:
        epochs = int(np.clip(round(20000 / len(images)), 3, 30))
    model = _classifier_network(images.shape[1:], num_classes, feature_dim, seed)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    x = images.astype(np.float32) / 255.0

    class _Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if verbose:
                logs = logs or {}
                print(
                    f"  classifier epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.4f}, "
                    f"accuracy {logs.get('accuracy', float('nan')):.4f}",
                    flush=True,
                )

    # Each epoch's order is a NumPy permutation drawn from the seed: an op-level seed of
    # Dataset.shuffle is combined with TensorFlow's global seed, so the classifier (and
    # every FID in its features) changed with whatever had called tf.random.set_seed.
    orders = np.stack([rng.permutation(len(x)) for _ in range(epochs)])
    images_t, labels_t = tf.constant(x), tf.constant(labels)
    batches = kdiff_data.without_autotuning(
        tf.data.Dataset.from_tensor_slices(orders)
        .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
        .map(lambda index: (tf.gather(images_t, index), tf.gather(labels_t, index)))
    )
    steps = -(-len(x) // batch_size)
    model.fit(batches, epochs=epochs, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=[_Progress()])
    model.save(path)
    return path


# --------------------------------------------------------------------------- Beam


def set_statistics(element):
    """One set's feature mean and covariance, from its rows in batch order.

    Computed on the set's concatenated features (``concatenate_batches``), not combined
    from partial sums: a combine merges its accumulators in whatever order the runner
    delivers them, which changes the last bits of the covariance, and FID's matrix square
    root of a near-singular covariance can magnify those bits. In order, the same features
    give the same statistics on every runner.

    Args:
        element: ``(key, {"features": [N, D], ...})`` with ``N ≥ 1``.

    Returns:
        ``(key, (mean [D], covariance [D, D]))`` in float64: the unbiased covariance (as
        ``kdiff.metrics.feature_statistics``), all NaN for a single row.
    """
    key, arrays = element
    features = np.asarray(arrays["features"], np.float64)
    mean = features.mean(axis=0)
    if len(features) < 2:
        return key, (mean, np.full((features.shape[1],) * 2, np.nan))
    return key, (mean, np.atleast_2d(np.cov(features, rowvar=False)))


# a spec's "source" → how a worker that lacks the launcher's downloaded copy fetches its own
_FETCHES = {
    "imagenet": lambda: resolve_inception_weights("imagenet"),  # Keras' cache
    "download": lambda: _fid_weights().fetch_weights(),  # torch hub's cache, as pytorch-fid
}


def _fid_weights():
    from kdiff.fid import weights

    return weights


def local_spec(spec, files):
    """``spec`` with its file on this machine, for a worker that may not share the
    launcher's disk: a file in an object store (the classifier a run on S3 trained,
    ``--fid_weights=s3://…``) is copied locally for as long as ``files`` stays open; a
    download the launcher cached (``source`` "imagenet" or "download") and this machine
    lacks is fetched into this machine's cache.

    Args:
        spec: a :func:`load_extractor` spec.
        files: a ``contextlib.ExitStack`` that owns the local copies.

    Returns:
        The spec to load here (a copy; ``spec`` is not changed).
    """
    from pipeline import io

    spec = dict(spec)
    key = SPEC_FILE_KEYS.get(spec.get("kind"))
    path = spec.get(key)
    if not isinstance(path, str) or path == "imagenet":
        return spec
    if io.is_remote(path):
        spec[key] = files.enter_context(io.local_copy(path))
    elif not io.exists(path) and spec.get("source") in _FETCHES:
        spec[key] = _FETCHES[spec["source"]]()
    return spec


class FeatureExtractorDoFn(beam.DoFn if beam else object):
    """``(key, (batch_index, uint8 images))`` → ``(key, (batch_index, {name: array}))``.

    The extractor is built from its spec in ``setup()`` — once per worker — and never
    pickled with the DoFn; its file is made local to the worker for the worker's lifetime
    (:func:`local_spec`).

    Args:
        spec: a :func:`load_extractor` spec.
    """

    def __init__(self, spec):
        super().__init__()
        self._spec = dict(spec)
        self._extractor = None
        self._files = None

    def setup(self):
        self._files = contextlib.ExitStack()
        self._extractor = load_extractor(local_spec(self._spec, self._files))

    def teardown(self):
        if self._files is not None:
            self._files.close()

    def process(self, element):
        key, (index, images) = element
        yield key, (index, self._extractor(images))


if beam is not None:

    class ExtractFeatures(beam.PTransform):
        """Runs a feature extractor over ``(key, (batch_index, images))`` batches.

        Args:
            spec: a :func:`load_extractor` spec (what the DoFn loads in ``setup()``).
        """

        def __init__(self, spec, label=None):
            super().__init__(label)
            self._spec = dict(spec)

        def expand(self, batches):
            return batches | "Extract" >> beam.ParDo(FeatureExtractorDoFn(self._spec))

    def batch_images(named_images, batch_size):
        """``(key, (batch_index, images))`` elements for a dict key → uint8 images."""
        elements = []
        for key, images in named_images.items():
            for index, start in enumerate(range(0, len(images), batch_size)):
                elements.append((key, (index, np.ascontiguousarray(images[start : start + batch_size]))))
        return elements

    def concatenate_batches(element):
        """``(key, [(batch_index, {name: array}), ...])`` → ``(key, {name: concatenated array})``."""
        key, batches = element
        batches = sorted(batches, key=lambda item: item[0])
        names = batches[0][1].keys()
        return key, {name: np.concatenate([outputs[name] for _, outputs in batches]) for name in names}
else:  # pragma: no cover
    ExtractFeatures = None
