"""Feature extractors for FID, KID and retrieval: uint8 images → feature vectors.

Each extractor is described by a small JSON-able *spec* (a dict), so that a Beam ``DoFn``
(``pipeline.features``) receives only the description and loads the network in
``setup()``, and the ``python -m kdiff.fid`` command builds the same one from its flags:

* ``{"kind": "fid_inception", "weights": path | None}`` — :class:`FIDInceptionFeatures`,
  pytorch-fid's FID Inception network in Keras (pool3, 2048-d), resized as pytorch-fid
  resizes: FIDs comparable with pytorch-fid's and with published FIDs.
* ``{"kind": "classifier", "path": ".../classifier.keras"}`` — :class:`ClassifierFeatures`,
  a small CNN trained on the dataset's own labels (``pipeline.features.train_classifier``);
  its penultimate layer is the feature space and its softmax gives class probabilities.
  FIDs in this space compare runs on the same dataset only.
* ``{"kind": "inception_v3", "weights": "imagenet" | path}`` — :class:`InceptionV3Features`,
  Keras' InceptionV3 (``include_top=False``, average pooling, 2048-d). Keras' ImageNet
  weights are not the network behind published FIDs: its FIDs compare kdiff runs only.
* ``{"kind": "inception_graph", "path": ".../classify_image_graph_def.pb"}`` —
  :class:`InceptionGraphFeatures`, the 2015-12-05 frozen Inception graph used by the
  original TF FID code (TTUR), TF-GAN and pytorch-fid: ``pool_3`` features comparable
  with published FIDs.

Every extractor maps uint8 images ``[N, H, W, C]`` (any size, 1, 3 or 4 channels) to
``{"features": float32 [N, D]}`` (plus ``"probabilities"`` for the classifier).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from kdiff.checks import one_of, positive_int
from kdiff.fid import weights as weights_lib
from kdiff.fid.inception import (
    COMPUTE_DTYPES,
    FID_DIM,
    RESIZES,
    FIDInceptionV3,
    clean_resize,
    image_batch,
    prepare_images,
)

__all__ = [
    "ClassifierFeatures",
    "FIDInceptionFeatures",
    "InceptionGraphFeatures",
    "InceptionV3Features",
    "describe",
    "SPEC_FILE_KEYS",
    "load_extractor",
    "read_inception_graph",
    "resolve_inception_weights",
]

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048


def _check_images(images):
    """Returns ``images`` as a uint8 ``[N, H, W, C]`` array (C in 1, 3, 4), or raises ValueError."""
    images = image_batch(images)
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


# --------------------------------------------------------------------------- FID Inception


class FIDInceptionFeatures:
    """pytorch-fid's FID Inception features (2048-d pool3) of uint8 images, batched.

    Images are read as pytorch-fid reads them (``ToTensor``: pixels / 255, grayscale
    repeated to RGB), resized to 299×299, scaled to [−1, 1] and run through
    :func:`FIDInceptionV3` in batches, inside one ``tf.function`` traced once for every
    batch size and image size.

    Args:
        weights: where pytorch-fid's weights come from: "pytorch_fid" (the default:
            :func:`kdiff.fid.weights.fetch_weights`, which reuses torch hub's cached file
            or ``$KDIFF_FID_WEIGHTS`` and downloads it otherwise), the path of a ``.pth``
            or ``.npz`` state dict, a dict of arrays, or None (Keras' random
            initialization: for tests and timings only).
        batch_size: images per forward pass (pytorch-fid's default is 50).
        resize: "pytorch_fid" (torch's bilinear ``F.interpolate``, in the graph) or
            "clean" (clean-fid's PIL bicubic resize of each channel as float, on the host;
            :func:`clean_resize`). With "clean" the network and its input scaling stay
            pytorch-fid's (``x / 255 · 2 − 1``; clean-fid's own port of the same graph
            scales by ``(x − 128) / 128``), so FIDs are close to clean-fid's, not equal.
        compute_dtype: "float32" (the default: pytorch-fid's features to ~1e-6) or
            "bfloat16" (about twice as fast on CPUs with bfloat16 units; features ~1e-2
            off, so FIDs no longer match pytorch-fid's).

    Raises:
        ValueError: a bad ``batch_size``, ``resize`` or ``compute_dtype``, or weights that
            do not fit.
        FileNotFoundError / ImportError / OSError: see
            :func:`kdiff.fid.weights.load_pytorch_fid_weights` and
            :func:`kdiff.fid.weights.fetch_weights`.
    """

    kind = "fid_inception"

    def __init__(self, weights="pytorch_fid", batch_size=50, resize="pytorch_fid", compute_dtype="float32"):

        self.batch_size = positive_int(batch_size, "batch_size")
        self.resize = one_of(resize, "resize", RESIZES)
        self.dim = FID_DIM
        self.compute_dtype = one_of(compute_dtype, "compute_dtype", list(COMPUTE_DTYPES))
        if isinstance(weights, str) and weights == "pytorch_fid":
            weights = weights_lib.fetch_weights()
        # What the weights are, in words: a path, "a state dict" or "random".
        self.weights = "random" if weights is None else (
            "a state dict" if isinstance(weights, dict) else os.fspath(weights)
        )
        self.model = FIDInceptionV3(compute_dtype=self.compute_dtype)
        if weights is not None:
            weights_lib.load_pytorch_fid_weights(self.model, weights)
        model = self.model

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def forward(pixels):
            return model(pixels / 255.0, training=False)

        self._forward = forward

    @property
    def description(self):
        """The feature space in words (``kdiff.fid.extractors.describe``, the one wording)."""
        spec = {"kind": self.kind, "resize": self.resize, "compute_dtype": self.compute_dtype}
        return describe(dict(spec, weights=None if self.weights in ("random", "a state dict") else self.weights), self.dim)

    def extract(self, images, callback=None):
        """The features of ``images``, one batch at a time.

        Args:
            images: uint8 ``[N, H, W, C]`` (or floats in [0, 255]; C in 1, 3, 4), any size.
            callback: None, or a function ``callback(done, total)`` called after every batch
                with the number of images done so far and ``N``.

        Returns:
            float32 ``[N, 2048]``.

        Raises:
            ValueError: badly shaped images, or a ``callback`` that is not callable.
        """
        if callback is not None and not callable(callback):
            raise ValueError(f"Expected `callback` to be callable or None. Received: callback={callback!r}")
        images = prepare_images(images)
        total = images.shape[0]
        out = []
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            batch = images[start:stop]
            batch = clean_resize(batch) if self.resize == "clean" else batch.astype(np.float32)
            out.append(np.asarray(self._forward(batch), np.float32))
            if callback is not None:
                callback(stop, total)
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def __call__(self, images):
        """``{"features": float32 [N, 2048]}`` of uint8 images ``[N, H, W, C]``."""
        return {"features": self.extract(images)}


# --------------------------------------------------------------------------- specs


# each spec kind → the key that names its file (a weights file, a .keras or .pb path; for
# the Inception weights also "imagenet" or None): what a caller copies locally before loading
SPEC_FILE_KEYS = {"fid_inception": "weights", "classifier": "path", "inception_v3": "weights", "inception_graph": "path"}


def load_extractor(spec):
    """Builds the extractor a spec describes (call this in ``DoFn.setup()``).

    Args:
        spec: ``{"kind": "fid_inception", "weights": ..., "resize": ..., "compute_dtype": ...}``,
            ``{"kind": "classifier", "path": ...}``, ``{"kind": "inception_v3",
            "weights": ...}`` or ``{"kind": "inception_graph", "path": ...}``; an optional
            ``"batch_size"``.

    Returns:
        A callable: uint8 images → dict of float32 arrays (at least "features").
    """
    kind = spec.get("kind")
    if kind not in SPEC_FILE_KEYS:
        raise ValueError(f"Expected spec['kind'] in {sorted(SPEC_FILE_KEYS)}. Received: {spec!r}")
    kwargs = {"batch_size": spec["batch_size"]} if spec.get("batch_size") else {}
    if kind == "fid_inception":
        return FIDInceptionFeatures(
            spec.get("weights") or "pytorch_fid", resize=spec.get("resize", "pytorch_fid"),
            compute_dtype=spec.get("compute_dtype", "float32"), **kwargs,
        )
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
    if kind == "fid_inception":
        clean = spec.get("resize") == "clean"
        resize = (
            "PIL bicubic resize to 299×299 (clean-fid's 'clean')" if clean
            else "torch bilinear resize to 299×299 (pytorch-fid)"
        )
        dtype = spec.get("compute_dtype", "float32")
        if dtype != "float32":
            compares = f"{dtype} features, FIDs close to pytorch-fid's but not equal"
        elif clean:
            compares = "FIDs close to clean-fid's (its resize, pytorch-fid's input scaling)"
        else:
            compares = "FIDs comparable with pytorch-fid's and with published FIDs"
        weights = spec.get("weights")
        source = f" ({os.path.basename(str(weights))})" if weights else ""
        return f"pytorch-fid's FID InceptionV3 pool3{source}, {dim}-d, {resize} — {compares}"
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
    raise ValueError(f"Expected spec['kind'] in {sorted(SPEC_FILE_KEYS)}. Received: {spec!r}")
