"""Evaluate stage: FID, KID and classifier statistics of every sampler's samples.

Reads the real training and held-out images (Examples) and each sampler's
``samples.npz`` (Samples); extracts features in a Beam pipeline — a ``DoFn`` that loads
the feature network in ``setup()`` from a path — and combines them into mean and
covariance with a ``CombineFn``; then computes per sampler FID (Heusel et al., 2017) and
KID (Bińkowski et al., 2018; unbiased) against the real training images, plus the same numbers for the held-out
real images (the floor) and for a baseline that draws images from a Gaussian fit to the
real pixels (the ceiling a model must beat). When the dataset has labels, a small
classifier trained on them gives per-sampler confidence and class shares.

The feature space (``fid_features``):

* "classifier" (default): the penultimate layer of that classifier — needs labels.
* "fid_inception": pytorch-fid's FID Inception network in Keras (``kdiff.fid``), with
  pytorch-fid's weights from ``fid_weights`` (a file) or torch hub's cache /
  ``$KDIFF_FID_WEIGHTS`` / a download: FIDs comparable with pytorch-fid's and published ones.
* "inception": Keras' InceptionV3 with ``inception_weights`` ("imagenet" or a file).
* "inception_graph": the 2015 Inception graph at ``inception_graph`` (published FIDs).

KID is stored raw (``kid_mean``, ``kid_std``: the MMD² estimate) and in the ×10³ units
papers report it in (``kid_x1000_mean``, ``kid_x1000_std``). Beside each FID:
``fid_infinity`` (Chong & Forsyth's extrapolation to infinitely many samples) and
``fid_low`` / ``fid_high`` (a 95 % bootstrap interval over the samples), from 10 samples up.

Writes ``metrics.json``, ``features.npz`` (keys "train", "eval", "samples/<name>",
"baseline_gaussian") and, for labelled data, ``classifier.keras``.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from pipeline import config as config_lib
from pipeline import features as features_lib
from pipeline.data import load_examples
from pipeline.stages.base import (
    EXAMPLES,
    METRICS,
    SAMPLES,
    StageError,
    StageSpec,
    atomic_directory,
    read_json,
    write_json,
)

SPEC = StageSpec(
    name="evaluate",
    inputs={"examples": EXAMPLES, "samples": SAMPLES},
    outputs={"metrics": METRICS},
    parameters=("fid_features", "fid_weights", "inception_weights", "inception_graph", "seed"),
)

FID_FEATURES = config_lib.FID_FEATURES
# Below this many samples FID is biased upward and noisy: 2,048 is the Inception feature
# dimension (Cerizza et al. 2023, section 5.3); Heusel et al. (2017) use ≥ 10,000.
MIN_RELIABLE_FID_SAMPLES = 2048
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
BOOTSTRAP_ROUNDS = 100  # FID's 95 % bootstrap interval (kdiff.metrics.fid_bootstrap)
FID_INFINITY_MIN_SAMPLES = 10  # FID∞ and the interval need a few subset sizes of at least 2
KID_SCALE = 1000  # KID is conventionally reported ×10³ (the unit of the report and kid_x1000_*)
BATCH_SIZE = 256  # images per Beam element
FULL_COVARIANCE_MAX_DIM = 4096  # the Gaussian baseline fits a full pixel covariance up to this size


def _log(message):
    print(f"[evaluate] {message}", flush=True)


def _fmt(value):
    return "–" if value is None else f"{value:.4g}"


# --------------------------------------------------------------------------- inputs


def load_split(examples_dir, split):
    """uint8 images and int64 labels of one split, or StageError naming the directory."""
    try:
        images, labels = load_examples(examples_dir, split)
    except (OSError, ValueError) as error:
        raise StageError(
            f"evaluate: cannot read the {split} split of the Examples at {examples_dir} ({error}); "
            "rerun the ingest stage (--force)."
        ) from None
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise StageError(
            f"evaluate: expected uint8 [N, H, W, C] {split} images with N >= 1 in {examples_dir}; "
            f"got dtype {images.dtype}, shape {images.shape}. Rerun the ingest stage (--force)."
        )
    return images, np.asarray(labels, np.int64).reshape(-1)


def load_samples(samples_dir, image_shape):
    """``{sampler name: uint8 images}`` from ``<samples_dir>/<name>/samples.npz``."""
    if not os.path.isdir(samples_dir):
        raise StageError(f"evaluate: no Samples directory at {samples_dir}; run the sample stage first.")
    names = sorted(
        name
        for name in os.listdir(samples_dir)
        if os.path.isfile(os.path.join(samples_dir, name, "samples.npz"))
    )
    if not names:
        raise StageError(
            f"evaluate: no <sampler>/samples.npz under {samples_dir}; run the sample stage first (--force)."
        )
    samples = {}
    for name in names:
        path = os.path.join(samples_dir, name, "samples.npz")
        try:
            with np.load(path) as data:
                images = data["images"]
        except (OSError, KeyError, ValueError) as error:
            raise StageError(
                f"evaluate: cannot read the 'images' array of {path} ({error}); rerun the sample stage (--force)."
            ) from None
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != tuple(image_shape):
            raise StageError(
                f"evaluate: {path} holds {images.dtype} images of shape {list(images.shape)}; expected uint8 "
                f"[N, {', '.join(map(str, image_shape))}] like the training images. The samples come from "
                "another run: rerun the sample stage (--force)."
            )
        if len(images) == 0:
            raise StageError(f"evaluate: {path} holds no images; rerun the sample stage (--force).")
        samples[name] = images
    return samples


# --------------------------------------------------------------------------- pieces


def gaussian_baseline(images, count, seed=0):
    """Images drawn from a Gaussian fit to the pixels of ``images``.

    A full covariance up to 4,096 pixel values per image (e.g. 64×64 grayscale or
    32×32 RGB), a diagonal one above that; draws are rounded and clipped to 0..255.

    Returns:
        ``(uint8 images [count, H, W, C], "full" | "diagonal")``.
    """
    n = len(images)
    x = images.reshape(n, -1).astype(np.float64)
    mean = x.mean(axis=0)
    rng = np.random.default_rng(seed)
    if x.shape[1] <= FULL_COVARIANCE_MAX_DIM and n > 1:
        covariance = np.cov(x, rowvar=False)
        draws = rng.multivariate_normal(mean, covariance, size=count, method="eigh")
        kind = "full"
    else:
        draws = mean + x.std(axis=0) * rng.standard_normal((count, x.shape[1]))
        kind = "diagonal"
    draws = np.clip(np.round(draws), 0, 255).astype(np.uint8)
    return draws.reshape((count,) + images.shape[1:]), kind


def classifier_statistics(probabilities, num_classes, labels=None):
    """Mean max-probability (confidence), predicted-class shares and classes present; with
    the classes the samples were drawn for, also how often the classifier agrees.

    Args:
        probabilities: the classifier's [N, K] class probabilities of the samples.
        num_classes: K.
        labels: None, or the int [N] classes a class-conditional model was asked for.

    Returns:
        A dict: ``classifier_confidence``, ``class_shares``, ``num_classes_present`` and,
        with labels, ``class_agreement`` (the share whose predicted class is the requested one).
    """
    probabilities = np.asarray(probabilities, np.float64)
    predicted = probabilities.argmax(axis=1)
    shares = np.bincount(predicted, minlength=num_classes)[:num_classes] / max(len(predicted), 1)
    values = {
        "classifier_confidence": float(probabilities.max(axis=1).mean()),
        "class_shares": [float(s) for s in shares],
        "num_classes_present": int(np.sum(shares > 0)),
    }
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape != predicted.shape:
            raise ValueError(
                f"Expected one label per sample. Received: {labels.shape[0]} labels for {predicted.shape[0]} samples"
            )
        values["class_agreement"] = float(np.mean(predicted == labels))
    return values


def load_sample_labels(samples_dir, names):
    """``{sampler name: int labels or None}``: the classes a class-conditional model's samples
    were drawn for (``labels`` in ``samples.npz``; None where the model is unconditional)."""
    labels = {}
    for name in names:
        with np.load(os.path.join(samples_dir, name, "samples.npz")) as data:
            labels[name] = data["labels"] if "labels" in data.files else None
    return labels


def kid_entries(kid_mean, kid_std):
    """KID as metrics.json stores it: raw and in the conventional ×10³ units.

    Args:
        kid_mean: the mean MMD² estimate (``kdiff.metrics.kernel_inception_distance``), or None.
        kid_std: its standard deviation over subsets, or None.

    Returns:
        ``{"kid_mean", "kid_std", "kid_x1000_mean", "kid_x1000_std"}`` (None stays None).
    """

    def scaled(value):
        return None if value is None else value * KID_SCALE

    return {
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_x1000_mean": scaled(kid_mean),
        "kid_x1000_std": scaled(kid_std),
    }


def _distances(train_features, train_stats, features, stats, seed):
    """FID (from the combined statistics) and KID of ``features`` against the real train set."""
    from kdiff import metrics

    n = len(features)
    if n < 2:
        return {"fid": None, **kid_entries(None, None)}
    fid = metrics.frechet_distance(train_stats[0], train_stats[1], stats[0], stats[1])
    subset = min(KID_SUBSET_SIZE, n, len(train_features))
    kid_mean, kid_std = metrics.kernel_inception_distance(
        train_features, features, num_subsets=KID_SUBSETS, subset_size=subset, seed=seed
    )
    honest = {"fid_infinity": None, "fid_low": None, "fid_high": None}
    if n >= FID_INFINITY_MIN_SAMPLES:
        honest["fid_infinity"] = metrics.fid_infinity(features, train_stats, seed=seed)["fid_infinity"]
        interval = metrics.fid_bootstrap(features, train_stats, num_rounds=BOOTSTRAP_ROUNDS, seed=seed)
        honest.update(fid_low=interval["low"], fid_high=interval["high"])
    return {"fid": fid, **honest, **kid_entries(kid_mean, kid_std)}


# --------------------------------------------------------------------------- Beam


def write_arrays(element, directory):
    """Writes ``(set index, {name: array})`` to ``<directory>/<set index>.npz`` (Beam's FileSystems)."""
    from apache_beam.io.filesystems import FileSystems

    key, arrays = element
    with FileSystems.create(f"{directory}/{key}.npz") as f:
        np.savez(f, **arrays)
    return key


def write_statistics(element, directory):
    """Writes ``(set index, (mean, covariance))`` to ``<directory>/<set index>.npz``."""
    key, (mean, covariance) = element
    return write_arrays((key, {"mean": mean, "covariance": covariance}), directory)


def _read_arrays(directory, key):
    with np.load(os.path.join(directory, f"{key}.npz")) as data:
        return {name: data[name] for name in data.files}


def extract(named_images, fid_spec, classifier_spec, classifier_sets, scratch, beam_args):
    """Runs the feature extraction as one Beam pipeline.

    Args:
        named_images: list of ``(set name, uint8 images)``.
        fid_spec: the extractor spec of the FID feature space.
        classifier_spec: the classifier's spec when it is a second network (else None).
        classifier_sets: names of the sets that need classifier probabilities.
        scratch: a directory for the pipeline's outputs.
        beam_args: Beam pipeline flags.

    Returns:
        ``{set name: {"features", "mean", "covariance"[, "probabilities"]}}``.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    names = [name for name, _ in named_images]
    by_index = {index: images for index, (_, images) in enumerate(named_images)}
    classifier_indices = {i for i, name in enumerate(names) if name in classifier_sets}
    dirs = {tag: os.path.join(scratch, tag) for tag in ("features", "statistics", "classifier")}
    for path in dirs.values():
        os.makedirs(path, exist_ok=True)

    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
        batches = p | "CreateImageBatches" >> beam.Create(features_lib.batch_images(by_index, BATCH_SIZE))
        outputs = batches | "ExtractFidFeatures" >> features_lib.ExtractFeatures(fid_spec)
        _ = (
            outputs
            | "GroupFeatureBatches" >> beam.GroupByKey()
            | "ConcatenateFeatures" >> beam.Map(features_lib.concatenate_batches)
            | "WriteFeatures" >> beam.Map(write_arrays, dirs["features"])
        )
        _ = (
            outputs
            | "FeatureRows" >> beam.Map(lambda kv: (kv[0], kv[1][1]["features"]))
            | "MeanAndCovariance" >> beam.CombinePerKey(features_lib.MeanCovarianceFn())
            | "WriteStatistics" >> beam.Map(write_statistics, dirs["statistics"])
        )
        if classifier_spec is not None and classifier_indices:
            _ = (
                batches
                | "SetsForClassifier" >> beam.Filter(lambda kv, keep: kv[0] in keep, classifier_indices)
                | "ClassifierProbabilities" >> features_lib.ExtractFeatures(classifier_spec)
                | "GroupClassifierBatches" >> beam.GroupByKey()
                | "ConcatenateProbabilities" >> beam.Map(features_lib.concatenate_batches)
                | "WriteProbabilities" >> beam.Map(write_arrays, dirs["classifier"])
            )

    results = {}
    for index, name in enumerate(names):
        entry = _read_arrays(dirs["features"], index)
        entry.update(_read_arrays(dirs["statistics"], index))
        if classifier_spec is not None and index in classifier_indices:
            entry["probabilities"] = _read_arrays(dirs["classifier"], index)["probabilities"]
        results[name] = entry
    return results


# --------------------------------------------------------------------------- executor


class Executor:
    """Computes metrics.json and features.npz from Examples and Samples."""

    def Do(self, inputs, outputs, params):
        fid_features = params.get("fid_features", "classifier")
        seed = int(params.get("seed", 0) or 0)
        beam_args = list(params.get("beam_args") or ["--runner=DirectRunner"])
        if fid_features not in FID_FEATURES:
            raise StageError(f"evaluate: --fid_features={fid_features!r} is not one of {list(FID_FEATURES)}.")

        examples_dir = inputs["examples"]
        stats_path = os.path.join(examples_dir, "stats.json")
        if not os.path.exists(stats_path):
            raise StageError(
                f"evaluate: no stats.json in the Examples at {examples_dir}; rerun the ingest stage."
            )
        stats = read_json(stats_path)
        source = stats.get("source", examples_dir)
        train, train_labels = load_split(examples_dir, "train")
        heldout, heldout_labels = load_split(examples_dir, "eval")
        samples = load_samples(inputs["samples"], train.shape[1:])
        sample_labels = load_sample_labels(inputs["samples"], samples)
        _log(
            f"{len(train)} training and {len(heldout)} held-out real images of {list(train.shape[1:])}; "
            + ", ".join(f"{name}: {len(images)} samples" for name, images in samples.items())
        )

        num_classes = stats.get("num_classes")
        labelled = num_classes is not None and len(train_labels) and np.all(train_labels >= 0)
        if fid_features == "classifier" and not labelled:
            raise StageError(
                f"evaluate: the dataset {source} has no labels (num_classes is null in {stats_path}, or "
                "labels of -1), so "
                "--fid_features=classifier cannot train its feature classifier. Use "
                "--fid_features=inception with --inception_weights=imagenet (downloads once) or "
                "--inception_weights=PATH (a local InceptionV3 no-top weights file), or "
                "--fid_features=inception_graph with --inception_graph=PATH/classify_image_graph_def.pb."
            )

        # Check the Inception weights / graph before spending time on the classifier.
        fid_spec = None if fid_features == "classifier" else self._inception_spec(fid_features, params)
        with atomic_directory(outputs["metrics"]) as out:
            classifier_spec, accuracy = None, None
            if labelled:
                num_classes = int(num_classes)
                path = os.path.join(out, "classifier.keras")
                _log(
                    f"training the feature classifier on {len(train)} labelled images ({num_classes} classes)"
                )
                try:
                    features_lib.train_classifier(
                        train, train_labels, path, num_classes=num_classes, seed=seed
                    )
                except ValueError as error:
                    raise StageError(
                        f"evaluate: cannot train the feature classifier on the labels of {examples_dir} "
                        f"({error}); check num_classes in {stats_path} and rerun the ingest stage (--force)."
                    ) from None
                classifier_spec = {"kind": "classifier", "path": path}
            fid_spec = fid_spec or classifier_spec

            count = max(len(images) for images in samples.values())
            baseline, covariance_kind = gaussian_baseline(train, count, seed=seed)
            named = [("train", train), ("eval", heldout)]
            named += [(f"samples/{name}", images) for name, images in samples.items()]
            named.append(("baseline_gaussian", baseline))
            _log(
                f"extracting features with Beam ({fid_spec['kind']}): "
                f"{sum(len(images) for _, images in named)} images in {len(named)} sets"
            )
            scratch = os.path.join(out, ".scratch")
            shared = fid_spec == classifier_spec
            results = extract(
                named,
                fid_spec,
                None if shared else classifier_spec,
                {name for name, _ in named if name != "train"},
                scratch,
                beam_args,
            )
            shutil.rmtree(scratch)
            dim = int(results["train"]["features"].shape[1])

            train_features = results["train"]["features"]
            train_stats = (results["train"]["mean"], results["train"]["covariance"])

            def row(name, labels=None):
                entry = results[name]
                values = _distances(
                    train_features, train_stats, entry["features"], (entry["mean"], entry["covariance"]), seed
                )
                values["num_samples"] = len(entry["features"])
                if classifier_spec is not None:
                    values.update(classifier_statistics(entry["probabilities"], num_classes, labels))
                return values

            metrics = {
                "feature_space": features_lib.describe(fid_spec, dim),
                "fid_features": fid_features,
                "feature_dim": dim,
                "num_real": len(train),
                "num_heldout": len(heldout),
                "source": source,
                "warnings": [],
                "samplers": {},
            }
            for name in samples:
                metrics["samplers"][name] = row(f"samples/{name}", sample_labels[name])
                values = metrics["samplers"][name]
                _log(
                    f"{name}: FID {_fmt(values['fid'])}, KID×10³ {_fmt(values['kid_x1000_mean'])} "
                    f"± {_fmt(values['kid_x1000_std'])}"
                    + (f", confidence {values['classifier_confidence']:.3f}" if classifier_spec else "")
                    + (f", class agreement {values['class_agreement']:.3f}" if "class_agreement" in values else "")
                )
            real = row("eval")
            real["num_images"] = real.pop("num_samples")
            metrics["real_heldout"] = real
            base = row("baseline_gaussian")
            base["covariance"] = covariance_kind
            metrics["baseline_gaussian"] = base
            if classifier_spec is not None:
                probabilities = results["eval"]["probabilities"]
                valid = heldout_labels >= 0
                accuracy = (
                    float(np.mean(probabilities[valid].argmax(axis=1) == heldout_labels[valid]))
                    if valid.any()
                    else None
                )
            metrics["classifier_accuracy_heldout"] = accuracy
            _log(
                f"held-out real: FID {_fmt(real['fid'])}, Gaussian baseline: FID {_fmt(base['fid'])}"
                + (f", classifier held-out accuracy {accuracy:.4f}" if accuracy is not None else "")
            )
            metrics["warnings"] = self._warnings(metrics, samples, len(train))

            arrays = {name: entry["features"] for name, entry in results.items()}
            np.savez(os.path.join(out, "features.npz"), **arrays)
            write_json(os.path.join(out, "metrics.json"), metrics)
        _log(f"wrote {outputs['metrics']}/metrics.json and features.npz")

    @staticmethod
    def _inception_spec(fid_features, params):
        """The extractor spec of "fid_inception" / "inception" / "inception_graph", or StageError
        saying what is missing."""
        if fid_features == "fid_inception":
            from kdiff.fid import weights as fid_weights

            weights = params.get("fid_weights")
            if weights:
                if not os.path.isfile(weights):
                    raise StageError(
                        f"evaluate: --fid_weights={weights} does not exist; pass pytorch-fid's "
                        f"{fid_weights.FID_WEIGHTS_FILENAME} (or its .npz conversion), or leave it unset."
                    )
                return {"kind": "fid_inception", "weights": os.path.abspath(weights)}
            try:
                return {"kind": "fid_inception", "weights": fid_weights.fetch_weights()}
            except OSError as error:
                raise StageError(
                    f"evaluate: --fid_features=fid_inception needs pytorch-fid's weights, but {error}. Download "
                    f"{fid_weights.FID_WEIGHTS_URL} on a machine with internet and pass --fid_weights=PATH "
                    f"(or set ${fid_weights.WEIGHTS_ENV}), or use --fid_features=classifier (labelled datasets)."
                ) from None
        if fid_features == "inception":
            weights = params.get("inception_weights") or "imagenet"
            try:
                path = features_lib.resolve_inception_weights(weights)
            except FileNotFoundError:
                raise StageError(
                    f"evaluate: --inception_weights={weights} does not exist; pass 'imagenet' or the path of "
                    "InceptionV3 no-top weights (e.g. inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5)."
                ) from None
            except OSError as error:
                raise StageError(
                    f"evaluate: --fid_features=inception needs Keras' ImageNet weights, but {error}. Download "
                    f"{features_lib.IMAGENET_NOTOP_URL} on a machine with internet and pass "
                    "--inception_weights=PATH, or use --fid_features=classifier (labelled datasets)."
                ) from None
            return {"kind": "inception_v3", "weights": path, "source": weights}
        graph = params.get("inception_graph")
        if not graph:
            raise StageError(
                "evaluate: --fid_features=inception_graph needs --inception_graph=PATH to the 2015 "
                "classify_image_graph_def.pb (from http://download.tensorflow.org/models/image/imagenet/"
                "inception-2015-12-05.tgz)."
            )
        try:
            features_lib.read_inception_graph(graph)
        except (OSError, ValueError) as error:
            raise StageError(f"evaluate: --inception_graph={graph}: {error}") from None
        return {"kind": "inception_graph", "path": os.path.abspath(graph)}

    @staticmethod
    def _warnings(metrics, samples, num_real):
        warnings = []
        few = {
            name: len(images) for name, images in samples.items() if len(images) < MIN_RELIABLE_FID_SAMPLES
        }
        if few:
            listed = ", ".join(f"{name} ({n})" for name, n in few.items())
            warnings.append(
                f"FID from fewer than {MIN_RELIABLE_FID_SAMPLES:,} samples is biased upward and unreliable "
                f"(Heusel et al. 2017; Cerizza et al. 2023, section 5.3): {listed}. Compare FIDs only at equal sample counts; KID is unbiased and "
                "better suited to small sample counts."
            )
        unmeasured = [name for name, images in samples.items() if len(images) < 2]
        if metrics["real_heldout"]["num_images"] < 2:
            unmeasured.append("the held-out real images")
        if unmeasured:
            warnings.append(f"No FID or KID for {', '.join(unmeasured)}: they need at least 2 images.")
        if num_real < MIN_RELIABLE_FID_SAMPLES:
            warnings.append(
                f"The real reference set has {num_real} images (fewer than {MIN_RELIABLE_FID_SAMPLES:,}): its "
                "feature mean and covariance are noisy estimates, so FIDs carry extra error."
            )
        if metrics["feature_dim"] > min([num_real] + [len(images) for images in samples.values()]):
            warnings.append(
                f"The feature space has {metrics['feature_dim']} dimensions, more than the smallest image set: "
                "the covariances are singular and the FIDs are dominated by estimation error."
            )
        return warnings
