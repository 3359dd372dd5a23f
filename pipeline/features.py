"""Feature extractors for FID, KID and retrieval, and the Beam transforms that run them.

Three feature spaces, each described by a small JSON-able *spec* (a dict) so that a Beam
``DoFn`` receives only the description and loads the network in ``setup()`` — never a
model captured in a closure (DESIGN.md pattern 7):

* ``{"kind": "classifier", "path": ".../classifier.keras"}`` — :class:`ClassifierFeatures`,
  a small CNN trained on the dataset's own labels (:func:`train_classifier`); its
  penultimate layer is the feature space and its softmax gives class probabilities. FIDs in
  this space compare runs on the same dataset only.
* ``{"kind": "inception_v3", "weights": "imagenet" | path}`` — :class:`InceptionV3Features`,
  Keras' InceptionV3 (``include_top=False``, average pooling, 2048-d). Keras' ImageNet
  weights are not the network behind published FIDs: its FIDs compare kdiff runs only.
* ``{"kind": "inception_graph", "path": ".../classify_image_graph_def.pb"}`` —
  :class:`InceptionGraphFeatures`, the 2015-12-05 frozen Inception graph used by the
  original TF FID code (TTUR), TF-GAN and pytorch-fid: ``pool_3`` features comparable
  with published FIDs.

Every extractor maps uint8 images ``[N, H, W, C]`` (any size, 1 or 3 channels) to
``{"features": float32 [N, D]}`` (plus ``"probabilities"`` for the classifier).
:class:`ExtractFeatures` runs an extractor over a PCollection of image batches and
:class:`MeanCovarianceFn` combines features into their mean and covariance.
"""

from __future__ import annotations

import os

import numpy as np

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
    "MeanCovarianceFn",
    "describe",
    "load_extractor",
    "read_inception_graph",
    "resolve_inception_weights",
    "train_classifier",
]

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048


def _check_images(images):
    """Returns ``images`` as a uint8 ``[N, H, W, C]`` array (C in 1, 3, 4), or raises ValueError."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Expected images of shape [N, H, W, C] with C in (1, 3, 4). Received: shape={images.shape}"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"Expected uint8 images (pixels 0..255). Received: dtype={images.dtype}")
    return images


def _to_channels(images, channels):
    """Converts uint8/float images to ``channels`` channels (gray → RGB repeats; RGB → gray averages)."""
    have = images.shape[-1]
    if have == 4:  # drop alpha
        images, have = images[..., :3], 3
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if have == 3 and channels == 1:
        return np.round(images.astype(np.float32).mean(axis=-1, keepdims=True)).astype(images.dtype)
    raise ValueError(f"Cannot convert {have}-channel images to {channels} channels.")


def _chunks(n, size):
    for start in range(0, n, size):
        yield start, min(start + size, n)


# --------------------------------------------------------------------------- classifier


class ClassifierFeatures:
    """A small CNN trained on the dataset's labels: penultimate-layer features and softmax.

    Args:
        path: a ``.keras`` file written by :func:`train_classifier`.
        batch_size: images per forward pass.
    """

    kind = "classifier"

    def __init__(self, path, batch_size=256):
        import keras

        if not os.path.exists(path):
            raise FileNotFoundError(f"Expected a classifier .keras file at {path}. Received: no such file")
        self.path = path
        self.batch_size = int(batch_size)
        self.model = keras.models.load_model(path, compile=False)
        penultimate = self.model.get_layer("penultimate")
        self._both = keras.Model(self.model.inputs[0], [penultimate.output, self.model.outputs[0]])
        _, self.height, self.width, self.channels = self.model.inputs[0].shape
        self.dim = int(penultimate.output.shape[-1])
        self.num_classes = int(self.model.outputs[0].shape[-1])

    @property
    def description(self):
        return describe({"kind": self.kind}, self.dim)

    def _prepare(self, images):
        import tensorflow as tf

        images = _to_channels(_check_images(images), self.channels)
        x = images.astype(np.float32) / 255.0
        if x.shape[1:3] != (self.height, self.width):
            x = tf.image.resize(x, (self.height, self.width), method="bilinear").numpy()
        return x

    def __call__(self, images):
        """``{"features": float32 [N, dim], "probabilities": float32 [N, num_classes]}``."""
        x = self._prepare(images)
        features, probabilities = [], []
        for start, stop in _chunks(len(x), self.batch_size):
            f, p = self._both(x[start:stop], training=False)
            features.append(np.asarray(f))
            probabilities.append(np.asarray(p))
        if not features:
            return {
                "features": np.zeros((0, self.dim), np.float32),
                "probabilities": np.zeros((0, self.num_classes), np.float32),
            }
        return {
            "features": np.concatenate(features).astype(np.float32),
            "probabilities": np.concatenate(probabilities).astype(np.float32),
        }


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
    "penultimate", dropout, softmax) trained with Adam. On the digits (1,617 training
    images, 8×8 or 16×16) it reaches ≥ 98% held-out accuracy in about 5–10 s on 2 CPUs.

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

    images = _check_images(images)
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

    # Shuffled by an op-level seed: deterministic without seeding TensorFlow's global RNG.
    batches = (
        tf.data.Dataset.from_tensor_slices((x, labels))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )
    model.fit(batches, epochs=epochs, shuffle=False, verbose=0, callbacks=[_Progress()])
    model.save(path)
    return path


# --------------------------------------------------------------------------- Keras InceptionV3


class InceptionV3Features:
    """Keras' InceptionV3 (``include_top=False``, average pooling): 2048-d features.

    Images are converted to 3 channels, resized to 299×299 (bilinear) and scaled with
    ``keras.applications.inception_v3.preprocess_input`` (to [−1, 1]).

    Args:
        weights: "imagenet" (Keras downloads and caches the file; needs internet once) or
            the path of a local weights file (``.h5`` / ``.weights.h5``) of the same
            network without its top.
        batch_size: images per forward pass.
    """

    kind = "inception_v3"

    def __init__(self, weights="imagenet", batch_size=32):
        import keras
        import tensorflow as tf

        if weights != "imagenet" and not os.path.exists(str(weights)):
            raise FileNotFoundError(
                f"Expected `weights` to be 'imagenet' or an existing weights file. Received: weights={weights!r}"
            )
        self.weights = weights
        self.batch_size = int(batch_size)
        self.dim = INCEPTION_DIM
        self.model = keras.applications.InceptionV3(
            include_top=False, pooling="avg", weights=weights, input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3)
        )
        preprocess = keras.applications.inception_v3.preprocess_input
        model = self.model

        @tf.function(reduce_retracing=True)
        def forward(batch):
            x = tf.image.resize(
                tf.cast(batch, tf.float32), (INCEPTION_SIZE, INCEPTION_SIZE), method="bilinear"
            )
            return model(preprocess(x), training=False)

        self._forward = forward

    @property
    def description(self):
        return describe({"kind": self.kind, "weights": self.weights}, self.dim)

    def __call__(self, images):
        images = _to_channels(_check_images(images), 3)
        out = [np.asarray(self._forward(images[a:b])) for a, b in _chunks(len(images), self.batch_size)]
        features = np.concatenate(out) if out else np.zeros((0, self.dim))
        return {"features": features.astype(np.float32)}


# Keras' own file for InceptionV3(weights="imagenet", include_top=False).
IMAGENET_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
IMAGENET_NOTOP_HASH = "bcbd6486424b2319ff4ef7d526e38f63"


def resolve_inception_weights(weights):
    """A local weights file for ``weights``: "imagenet" is fetched once into Keras' cache.

    Fetching here (before the Beam pipeline starts) gives one clear error when offline,
    and lets every worker load the same local file in ``setup()``.

    Raises:
        FileNotFoundError: a path that does not exist.
        OSError: "imagenet" could not be downloaded.
    """
    if weights != "imagenet":
        if not os.path.exists(str(weights)):
            raise FileNotFoundError(f"Expected a weights file at {weights}. Received: no such file")
        return os.path.abspath(str(weights))
    import keras

    try:
        return keras.utils.get_file(
            os.path.basename(IMAGENET_NOTOP_URL),
            IMAGENET_NOTOP_URL,
            cache_subdir="models",
            file_hash=IMAGENET_NOTOP_HASH,
        )
    except Exception as error:  # noqa: BLE001 - Keras re-raises URLError, HTTPError, ... as Exception
        raise OSError(f"could not download Keras' ImageNet InceptionV3 weights ({error})") from None


# --------------------------------------------------------------------------- 2015 Inception graph


def read_inception_graph(path):
    """Parses a frozen Inception ``GraphDef`` and finds its input tensor.

    Returns:
        ``(graph_def, input_name)``: input "ExpandDims:0" (TTUR's) or "Mul:0" (TF-GAN's).

    Raises:
        FileNotFoundError / ValueError: no such file, not a GraphDef, or no ``pool_3``.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    if not path or not os.path.exists(str(path)):
        raise FileNotFoundError(f"Expected the Inception graph file at {path}. Received: no such file")
    graph_def = tf.compat.v1.GraphDef()
    with tf.io.gfile.GFile(path, "rb") as f:
        try:
            graph_def.ParseFromString(f.read())
        except DecodeError as error:
            raise ValueError(
                f"Expected a serialized GraphDef in {path}. Received: unreadable ({error})"
            ) from None
    names = {node.name for node in graph_def.node}
    if "pool_3" not in names:
        raise ValueError(f"Expected a node 'pool_3' in the Inception graph {path}. Received: no such node")
    if "ExpandDims" in names:
        return graph_def, "ExpandDims:0"
    if "Mul" in names:
        return graph_def, "Mul:0"
    raise ValueError(
        f"Expected an input node 'ExpandDims' or 'Mul' in the Inception graph {path}. Received: neither"
    )


class InceptionGraphFeatures:
    """The 2015-12-05 frozen Inception graph (``classify_image_graph_def.pb``): ``pool_3``.

    This is the network behind published FIDs (TTUR's original TF code, TF-GAN,
    pytorch-fid's port). As in TTUR's ``fid.py``, images are fed to ``ExpandDims:0`` as
    float32 pixels in 0..255, at their own size, three channels; the graph resizes them to
    299×299 (``ResizeBilinear``) and normalizes them itself. The input is remapped to a
    batch of any size with ``import_graph_def(input_map=...)`` (the graph stores batch 1).
    A graph without ``ExpandDims`` but with ``Mul`` (TF-GAN's input) is fed 299×299 images
    scaled to [−1, 1] instead. The output ``pool_3:0`` ``[N, 1, 1, 2048]`` is flattened.

    Args:
        path: the ``.pb`` file (a serialized ``GraphDef``).
        batch_size: images per forward pass (TTUR uses 50).
    """

    kind = "inception_graph"
    OUTPUT = "pool_3:0"

    def __init__(self, path, batch_size=50):
        import tensorflow as tf

        self.path = path
        self.batch_size = int(batch_size)
        self._one_at_a_time = False
        graph_def, input_name = read_inception_graph(path)
        self.input_name = input_name

        def _import():
            images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="kdiff_images")
            tf.compat.v1.import_graph_def(graph_def, input_map={input_name: images}, name="FID_Inception_Net")

        wrapped = tf.compat.v1.wrap_function(_import, [])
        graph = wrapped.graph
        self._forward = wrapped.prune(
            graph.as_graph_element("kdiff_images:0"),
            graph.as_graph_element(f"FID_Inception_Net/{self.OUTPUT}"),
        )
        self.dim = int(np.prod(graph.as_graph_element(f"FID_Inception_Net/{self.OUTPUT}").shape[1:]))

    @property
    def description(self):
        return describe({"kind": self.kind, "path": self.path}, self.dim)

    def _run(self, batch):
        """pool_3 of a batch; per image when the graph turns out to fix its batch at 1.

        The graph stores batch 1 (TTUR rewrites the static shapes to allow more); a graph
        with an op that really needs batch 1 fails on a larger batch, and is then fed one
        image at a time from there on.
        """
        import tensorflow as tf

        n = int(batch.shape[0])
        if not self._one_at_a_time or n == 1:
            try:
                return np.asarray(self._forward(batch)).reshape(n, -1)
            except tf.errors.InvalidArgumentError:
                if n == 1:
                    raise
                self._one_at_a_time = True
        return np.concatenate([np.asarray(self._forward(batch[i : i + 1])).reshape(1, -1) for i in range(n)])

    def __call__(self, images):
        import tensorflow as tf

        images = _to_channels(_check_images(images), 3).astype(np.float32)
        out = []
        for a, b in _chunks(len(images), self.batch_size):
            batch = images[a:b]
            if self.input_name == "Mul:0":  # TF-GAN's convention: 299×299 in [−1, 1]
                batch = tf.image.resize(batch, (INCEPTION_SIZE, INCEPTION_SIZE), method="bilinear")
                batch = (batch - 128.0) / 128.0
            out.append(self._run(tf.constant(batch, tf.float32)))
        features = np.concatenate(out) if out else np.zeros((0, self.dim))
        return {"features": features.astype(np.float32)}


# --------------------------------------------------------------------------- specs


_KINDS = {"classifier": "path", "inception_v3": "weights", "inception_graph": "path"}


def load_extractor(spec):
    """Builds the extractor a spec describes (call this in ``DoFn.setup()``).

    Args:
        spec: ``{"kind": "classifier", "path": ...}``, ``{"kind": "inception_v3",
            "weights": ...}`` or ``{"kind": "inception_graph", "path": ...}``; an optional
            ``"batch_size"``.

    Returns:
        A callable: uint8 images → dict of float32 arrays (at least "features").
    """
    kind = spec.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"Expected spec['kind'] in {sorted(_KINDS)}. Received: {spec!r}")
    kwargs = {"batch_size": spec["batch_size"]} if spec.get("batch_size") else {}
    if kind == "classifier":
        return ClassifierFeatures(spec["path"], **kwargs)
    if kind == "inception_v3":
        return InceptionV3Features(spec.get("weights", "imagenet"), **kwargs)
    return InceptionGraphFeatures(spec["path"], **kwargs)


def describe(spec, dim):
    """The ``feature_space`` text for features of width ``dim`` from the extractor of ``spec``.

    Says exactly which network made the features and with which FIDs they compare.
    """
    kind = spec.get("kind")
    if kind == "classifier":
        return (
            f"classifier penultimate layer ({dim}-d) of a small CNN trained on the dataset's labels — "
            "FIDs comparable between runs on this dataset only, not with published FIDs"
        )
    if kind == "inception_v3":
        weights = spec.get("source") or spec.get("weights", "imagenet")
        source = (
            "ImageNet weights" if weights == "imagenet" else f"weights file {os.path.basename(str(weights))}"
        )
        return (
            f"Keras InceptionV3 ({source}) average pool, {dim}-d, images resized to 299×299 (bilinear) — "
            "FIDs comparable between kdiff runs only, not with published FIDs (those use the 2015 Inception graph)"
        )
    if kind == "inception_graph":
        return (
            f"2015-12-05 Inception graph ({os.path.basename(str(spec.get('path')))}) pool_3, {dim}-d, "
            "fed as TTUR's fid.py feeds it — FIDs comparable with published FIDs"
        )
    raise ValueError(f"Expected spec['kind'] in {sorted(_KINDS)}. Received: {spec!r}")


# --------------------------------------------------------------------------- Beam


class MeanCovarianceFn(beam.CombineFn if beam else object):
    """Combines batches of feature vectors ``[B, D]`` into ``(mean [D], covariance [D, D])``.

    Accumulates the count, the mean and the centered sum of outer products in float64 and
    merges them with Chan et al.'s pairwise formula, so the result equals
    ``kdiff.metrics.feature_statistics`` (unbiased covariance) on the concatenated rows up
    to rounding, whatever the batching.
    """

    def create_accumulator(self):
        return (0, None, None)

    @staticmethod
    def _merge(a, b):
        n_a, mean_a, m2_a = a
        n_b, mean_b, m2_b = b
        if n_a == 0:
            return b
        if n_b == 0:
            return a
        n = n_a + n_b
        delta = mean_b - mean_a
        mean = mean_a + delta * (n_b / n)
        m2 = m2_a + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        return (n, mean, m2)

    def add_input(self, accumulator, features):
        features = np.asarray(features, np.float64)
        if features.ndim == 1:
            features = features[None]
        if len(features) == 0:
            return accumulator
        mean = features.mean(axis=0)
        centered = features - mean
        return self._merge(accumulator, (len(features), mean, centered.T @ centered))

    def merge_accumulators(self, accumulators):
        result = self.create_accumulator()
        for accumulator in accumulators:
            result = self._merge(result, accumulator)
        return result

    def extract_output(self, accumulator):
        """``(mean, covariance)``; the covariance is all NaN for a single vector (none for zero)."""
        n, mean, m2 = accumulator
        if n == 0:
            return None, None
        if n < 2:
            return mean, np.full_like(m2, np.nan)
        return mean, m2 / (n - 1)


class FeatureExtractorDoFn(beam.DoFn if beam else object):
    """``(key, (batch_index, uint8 images))`` → ``(key, (batch_index, {name: array}))``.

    The extractor is built from its spec in ``setup()`` — once per worker — and never
    pickled with the DoFn.

    Args:
        spec: a :func:`load_extractor` spec.
    """

    def __init__(self, spec):
        super().__init__()
        self._spec = dict(spec)
        self._extractor = None

    def setup(self):
        self._extractor = load_extractor(self._spec)

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
            for index, (a, b) in enumerate(_chunks(len(images), batch_size)):
                elements.append((key, (index, np.ascontiguousarray(images[a:b]))))
        return elements

    def concatenate_batches(element):
        """``(key, [(batch_index, {name: array}), ...])`` → ``(key, {name: concatenated array})``."""
        key, batches = element
        batches = sorted(batches, key=lambda item: item[0])
        names = batches[0][1].keys()
        return key, {name: np.concatenate([outputs[name] for _, outputs in batches]) for name in names}
else:  # pragma: no cover
    ExtractFeatures = None
