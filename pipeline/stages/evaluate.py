"""Evaluate stage: FID, KID and classifier statistics of every sampler's samples.

Reads the real training and held-out images (Examples) and each sampler's
``samples.npz`` (Samples); extracts features in a Beam pipeline — a ``DoFn`` that loads
the feature network in ``setup()`` from a path — and gathers each set's features in batch
order into their mean and covariance (the same bits on every runner); then computes per
sampler FID (Heusel et al., 2017) and KID (Bińkowski et al., 2018; unbiased) against the
real training images, plus the same numbers for the held-out
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

KID follows the field's protocol (subsets of ``min(1000, n)`` rows, 100 of them;
``kdiff.metrics.kid_estimate``) and is stored raw (``kid_mean``; ``kid_std``, the spread
over subsets, None when every subset is the whole of both sets; ``kid_standard_error``, a
jackknife standard error that also covers the samples' own noise) and ×10³
(``kid_x1000_*``). ``kid_scale`` says which unit the report and the console show: raw in
the classifier's unnormalized 64-d features (KIDs of 1–30), ×10³ in Inception features
(10⁻³–10⁻¹), as papers do. Beside each FID: ``fid_low`` / ``fid_high`` (a 95 % bootstrap
interval over the samples) and ``fid_infinity`` (Chong & Forsyth's extrapolation to
infinitely many samples), from 10 samples up, with ``fid_infinity_supported`` false below
``kdiff.metrics.fid_infinity_min_samples`` (10 × the feature dimension). With labels,
each row also has its class entropy (the predicted classes' spread, 1 = all classes
equally), and the samplers' rows a ``class_entropy_floor`` and their ``flags``
(:func:`row_flags`: not clearly better than the Gaussian baseline; fewer classes than the
real data would give).

Writes ``metrics.json``, ``features.npz`` (keys "train", "eval", "samples/<name>",
"baseline_gaussian") and, for labelled data, ``classifier.keras``.
"""

from __future__ import annotations

import math
import os

import numpy as np

from pipeline import config as config_lib
from pipeline import features as features_lib
from pipeline import io
from pipeline.data import load_examples
from pipeline.stages.base import (
    EXAMPLES,
    METRICS,
    SAMPLES,
    StageError,
    StageSpec,
)

SPEC = StageSpec(
    name="evaluate",
    inputs={"examples": EXAMPLES, "samples": SAMPLES},
    outputs={"metrics": METRICS},
    reads_urls=True,  # its workers copy the extractor's files and write their features through pipeline.io
)

FID_FEATURES = config_lib.FID_FEATURES
# Below this many samples FID is biased upward and noisy: 2,048 is the Inception feature
# dimension (Cerizza et al. 2023, section 5.3); Heusel et al. (2017) use ≥ 10,000.
MIN_RELIABLE_FID_SAMPLES = 2048
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
BOOTSTRAP_ROUNDS = 100  # FID's 95 % bootstrap interval (kdiff.metrics.fid_bootstrap)
FID_INFINITY_MIN_SAMPLES = 10  # FID∞ and the interval need a few subset sizes of at least 2
KID_SCALE = 1000  # KID is conventionally reported ×10³ (kid_x1000_*; the shown unit in Inception features)
CLASS_ENTROPY_QUANTILE = 0.05  # a sampler's class entropy below this quantile of real draws is flagged
CLASS_ENTROPY_ROUNDS = 2000  # multinomial draws behind that quantile
# The flags of row_flags: (code, what it means), in the order the report explains them.
FLAGS = (
    (
        "baseline",
        "not clearly better than the Gaussian baseline: its FID bootstrap interval is not wholly below the "
        "baseline's at the same sample count (or, without intervals, its FID is not below), or its FID∞ is not "
        "below the baseline's — the model has not shown that it learned more than the pixels' mean and covariance",
    ),
    (
        "classes",
        "its predicted classes are spread less evenly than the real data's: its class entropy is below what "
        f"{1 - CLASS_ENTROPY_QUANTILE:.0%} of as many draws from the training labels' class shares give — "
        "a classifier's high confidence on such samples does not mean they look like the data",
    ),
)
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
    if not io.isdir(samples_dir):
        raise StageError(f"evaluate: no Samples directory at {samples_dir}; run the sample stage first.")
    names = [name for name in io.listdir(samples_dir) if io.isfile(os.path.join(samples_dir, name, "samples.npz"))]
    if not names:
        raise StageError(
            f"evaluate: no <sampler>/samples.npz under {samples_dir}; run the sample stage first (--force)."
        )
    samples = {}
    for name in names:
        path = os.path.join(samples_dir, name, "samples.npz")
        try:
            images = io.read_npz(path, ["images"])["images"]
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


def normalized_entropy(shares):
    """Shannon entropy of a distribution divided by log(K): 1 for all K equally, 0 for one.

    Args:
        shares: K ≥ 2 non-negative numbers summing to 1 (rows of an array: one each).

    Returns:
        A float in [0, 1] (an array for a 2-D input).
    """
    shares = np.asarray(shares, np.float64)
    terms = np.where(shares > 0, -shares * np.log(np.where(shares > 0, shares, 1.0)), 0.0)
    return terms.sum(axis=-1) / math.log(shares.shape[-1])


def class_entropy_floor(class_shares, count, seed=0):
    """The class entropy below which ``count`` samples are spread over too few classes.

    The :data:`CLASS_ENTROPY_QUANTILE` quantile of :func:`normalized_entropy` over
    :data:`CLASS_ENTROPY_ROUNDS` multinomial draws of ``count`` labels from
    ``class_shares``: even perfect samples fall below it that rarely. It allows for the
    entropy's downward bias at small counts (16 fair draws of 10 classes rarely cover all).

    Args:
        class_shares: the real data's class shares (K ≥ 2, summing to 1), e.g. the
            training labels'.
        count: the number of samples, an integer ≥ 1.
        seed: seed of the draws.

    Returns:
        The floor, a float in [0, 1].
    """
    shares = np.asarray(class_shares, np.float64)
    draws = np.random.default_rng(seed).multinomial(int(count), shares / shares.sum(), size=CLASS_ENTROPY_ROUNDS)
    return float(np.quantile(normalized_entropy(draws / int(count)), CLASS_ENTROPY_QUANTILE))


def classifier_statistics(probabilities, num_classes, labels=None):
    """Mean max-probability (confidence), predicted-class shares and their entropy, classes
    present; with the classes the samples were drawn for, also how often the classifier agrees.

    Confidence alone can hide failure: a classifier is often confidently wrong on noise.
    ``class_entropy`` (the spread of the predicted classes across samples) and
    ``predictive_entropy`` (the mean per-sample uncertainty) read beside it, each
    normalized by log(K).

    Args:
        probabilities: the classifier's [N, K] class probabilities of the samples.
        num_classes: K.
        labels: None, or the int [N] classes a class-conditional model was asked for.

    Returns:
        A dict: ``classifier_confidence``, ``class_shares``, ``class_entropy`` (1 = every
        class equally often), ``predictive_entropy`` (0 = every sample certain),
        ``num_classes_present`` and, with labels, ``class_agreement`` (the share whose
        predicted class is the requested one).
    """
    probabilities = np.asarray(probabilities, np.float64)
    predicted = probabilities.argmax(axis=1)
    shares = np.bincount(predicted, minlength=num_classes)[:num_classes] / max(len(predicted), 1)
    values = {
        "classifier_confidence": float(probabilities.max(axis=1).mean()),
        "class_shares": [float(s) for s in shares],
        "class_entropy": float(normalized_entropy(shares)),
        "predictive_entropy": float(np.mean(normalized_entropy(probabilities))),
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
        try:
            labels[name] = io.read_npz(os.path.join(samples_dir, name, "samples.npz"), ["labels"])["labels"]
        except KeyError:  # an unconditional model's samples
            labels[name] = None
    return labels


def kid_display_scale(fid_features):
    """The factor KID is shown with in the report and the console for a feature space.

    Raw (1) in the classifier's unnormalized 64-d features, whose cubic kernel gives raw
    KIDs of 1–30 (×10³ would show thousands); ×10³ (:data:`KID_SCALE`) in the Inception
    spaces, where raw KIDs are 10⁻³–10⁻¹ and papers report ×10³.

    Args:
        fid_features: one of ``config.FID_FEATURES``.

    Returns:
        1 or :data:`KID_SCALE`.
    """
    return 1 if fid_features == "classifier" else KID_SCALE


def kid_label(scale):
    """The column / console name of KID shown with :func:`kid_display_scale`'s ``scale``.

    Args:
        scale: 1 or :data:`KID_SCALE`.

    Returns:
        "KID (raw)" or "KID ×10³".
    """
    return "KID (raw)" if scale == 1 else "KID ×10³"


def kid_entries(kid_mean, kid_std, kid_standard_error=None):
    """KID as metrics.json stores it: raw and in the conventional ×10³ units.

    Args:
        kid_mean: the mean MMD² estimate (``kdiff.metrics.kid_estimate``'s ``kid``), or None.
        kid_std: its standard deviation over subsets, or None (also when the subsets
            cannot vary).
        kid_standard_error: its jackknife standard error, or None.

    Returns:
        ``{"kid_mean", "kid_std", "kid_standard_error", "kid_x1000_mean", "kid_x1000_std",
        "kid_x1000_standard_error"}`` (None stays None).
    """

    def scaled(value):
        return None if value is None else value * KID_SCALE

    return {
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_standard_error": kid_standard_error,
        "kid_x1000_mean": scaled(kid_mean),
        "kid_x1000_std": scaled(kid_std),
        "kid_x1000_standard_error": scaled(kid_standard_error),
    }


def _distances(train_features, train_stats, features, stats, seed):
    """FID (from the combined statistics) and KID of ``features`` against the real train set."""
    from kdiff import metrics

    n = len(features)
    if n < 2:
        return {"fid": None, **kid_entries(None, None)}
    fid = metrics.frechet_distance(train_stats[0], train_stats[1], stats[0], stats[1])
    subset = min(KID_SUBSET_SIZE, n, len(train_features))
    kid = metrics.kid_estimate(train_features, features, num_subsets=KID_SUBSETS, subset_size=subset, seed=seed)
    honest = {"fid_infinity": None, "fid_infinity_supported": False, "fid_low": None, "fid_high": None}
    if n >= FID_INFINITY_MIN_SAMPLES:
        extrapolated = metrics.fid_infinity(features, train_stats, seed=seed)
        honest.update(fid_infinity=extrapolated["fid_infinity"], fid_infinity_supported=extrapolated["supported"])
        interval = metrics.fid_bootstrap(features, train_stats, num_rounds=BOOTSTRAP_ROUNDS, seed=seed)
        honest.update(fid_low=interval["low"], fid_high=interval["high"])
    return {
        "fid": fid,
        **honest,
        **kid_entries(kid["kid"], kid["subset_std"], kid["standard_error"]),
        "kid_subset_size": kid["subset_size"],
    }


def comparable(row):
    """A metrics row as ``kdiff.comparisons`` reads it: FID∞ only where it is supported.

    Args:
        row: a metrics row (a sampler's, the held-out images' or the baseline's).

    Returns:
        ``{"fid", "fid_low", "fid_high", "fid_infinity", "kid", "num_samples"}``, KID raw,
        ``fid_infinity`` None unless ``fid_infinity_supported``.
    """
    return {
        "fid": row.get("fid"),
        "fid_low": row.get("fid_low"),
        "fid_high": row.get("fid_high"),
        "fid_infinity": row.get("fid_infinity") if row.get("fid_infinity_supported") else None,
        "kid": row.get("kid_mean"),
        "num_samples": row.get("num_samples"),
    }


def baseline_at_count(baseline_features, train_stats, count, seed):
    """The Gaussian baseline's FID and bootstrap interval at a sampler's sample count.

    FID rises as the count falls, so a sampler is compared with the baseline at its own
    count: the baseline's first ``count`` draws (independent draws, so a fair subset).

    Args:
        baseline_features: the baseline's ``[N, dim]`` features (N ≥ ``count``).
        train_stats: the real training features' ``(mean, covariance)``.
        count: the sampler's sample count.
        seed: seed of the bootstrap.

    Returns:
        ``{"baseline_fid", "baseline_fid_low", "baseline_fid_high"}`` (the interval None
        below the stage's 10 samples).
    """
    from kdiff import metrics

    features = baseline_features[:count]
    if count < FID_INFINITY_MIN_SAMPLES:
        fid = metrics.frechet_distance(*train_stats, *metrics.feature_statistics(features)) if count >= 2 else None
        return {"baseline_fid": fid, "baseline_fid_low": None, "baseline_fid_high": None}
    interval = metrics.fid_bootstrap(features, train_stats, num_rounds=BOOTSTRAP_ROUNDS, seed=seed)
    return {"baseline_fid": interval["fid"], "baseline_fid_low": interval["low"], "baseline_fid_high": interval["high"]}


def row_flags(row, baseline):
    """What is wrong with a sampler's row, as ``[(code, detail)]`` (codes of :data:`FLAGS`).

    Args:
        row: the sampler's metrics row (``fid``, ``fid_low``/``fid_high``, ``fid_infinity``
            and ``fid_infinity_supported``; ``baseline_fid``/``baseline_fid_low``/
            ``baseline_fid_high``, the baseline at the row's count, where present; with a
            classifier ``class_entropy`` and ``class_entropy_floor``).
        baseline: the Gaussian baseline's row (its FID stands in where the row has no
            ``baseline_fid``; its FID∞ is compared where both are supported).

    Returns:
        A list of ``(code, detail)``: "baseline" when the row is not clearly better than
        the baseline (``kdiff.comparisons.not_clearly_below``), "classes" when its class
        entropy is below its floor. Empty when nothing is wrong or nothing can be judged.
    """
    from kdiff import comparisons

    flags = []
    reference = comparable(baseline)
    if row.get("baseline_fid") is not None:
        reference.update(
            fid=row["baseline_fid"], fid_low=row.get("baseline_fid_low"), fid_high=row.get("baseline_fid_high")
        )
    reason = comparisons.not_clearly_below(comparable(row), reference)
    if reason:
        flags.append(("baseline", reason))
    entropy, floor = row.get("class_entropy"), row.get("class_entropy_floor")
    if entropy is not None and floor is not None and entropy < floor:
        flags.append(
            ("classes", f"class entropy {entropy:.3g} is below {floor:.3g}, the floor for {row.get('num_samples')} "
             "draws from the real class shares")
        )
    return flags


def flag_line(flags):
    """The console text of flags.

    Args:
        flags: :func:`row_flags`' list of ``(code, detail)``.

    Returns:
        " ⚠ code: detail." per flag, "" when there are none.
    """
    return "".join(f" ⚠ {code}: {detail}." for code, detail in flags)


# --------------------------------------------------------------------------- Beam


def write_arrays(element, directory):
    """Writes ``(set index, {name: array})`` to ``<directory>/<set index>.npz``."""
    key, arrays = element
    io.write_npz(f"{directory}/{key}.npz", **arrays)
    return key


def write_statistics(element, directory):
    """Writes ``(set index, (mean, covariance))`` to ``<directory>/<set index>.npz``."""
    key, (mean, covariance) = element
    return write_arrays((key, {"mean": mean, "covariance": covariance}), directory)


def _read_arrays(directory, key):
    return io.read_npz(os.path.join(directory, f"{key}.npz"))


def scratch_dirs(scratch):
    """Where ``build_pipeline`` writes: ``{"features", "statistics", "classifier"}`` → folder."""
    return {tag: os.path.join(scratch, tag) for tag in ("features", "statistics", "classifier")}


def build_pipeline(root, named_images, fid_spec, classifier_spec, classifier_indices, scratch):
    """Adds the feature extraction to a Beam pipeline ``root`` (no I/O: the graph alone, as a
    runner's translation, e.g. Dataflow's, needs it).

    Args:
        root: a ``beam.Pipeline``.
        named_images: list of ``(set name, uint8 images)``; a set is keyed by its index.
        fid_spec: the extractor spec of the FID feature space.
        classifier_spec: the classifier's spec when it is a second network (else None).
        classifier_indices: the indices of the sets that need classifier probabilities.
        scratch: where the workers write ``<scratch_dirs>/<set index>.npz``.
    """
    import apache_beam as beam

    from pipeline.branches import JoinBranches

    dirs = scratch_dirs(scratch)
    by_index = {index: images for index, (_, images) in enumerate(named_images)}
    batches = root | "CreateImageBatches" >> beam.Create(features_lib.batch_images(by_index, BATCH_SIZE))
    features = (
        batches
        | "ExtractFidFeatures" >> features_lib.ExtractFeatures(fid_spec)
        | "GroupFeatureBatches" >> beam.GroupByKey()
        | "ConcatenateFeatures" >> beam.Map(features_lib.concatenate_batches)
    )
    written = {
        "features": features | "WriteFeatures" >> beam.Map(write_arrays, dirs["features"]),
        "statistics": (
            features
            | "MeanAndCovariance" >> beam.Map(features_lib.set_statistics)
            | "WriteStatistics" >> beam.Map(write_statistics, dirs["statistics"])
        ),
    }
    if classifier_spec is not None and classifier_indices:
        written["classifier"] = (
            batches
            | "SetsForClassifier" >> beam.Filter(lambda kv, keep: kv[0] in keep, set(classifier_indices))
            | "ClassifierProbabilities" >> features_lib.ExtractFeatures(classifier_spec)
            | "GroupClassifierBatches" >> beam.GroupByKey()
            | "ConcatenateProbabilities" >> beam.Map(features_lib.concatenate_batches)
            | "WriteProbabilities" >> beam.Map(write_arrays, dirs["classifier"])
        )
    # the last step depends on every branch: a runner that computes only the last
    # transform (Beam's DaskRunner) runs them all
    _ = written | "AllWritten" >> JoinBranches()


def extract(named_images, fid_spec, classifier_spec, classifier_sets, scratch, beam_args):
    """Runs the feature extraction as one Beam pipeline (``build_pipeline``).

    Args:
        named_images: list of ``(set name, uint8 images)``.
        fid_spec: the extractor spec of the FID feature space.
        classifier_spec: the classifier's spec when it is a second network (else None).
        classifier_sets: names of the sets that need classifier probabilities.
        scratch: a directory for the pipeline's outputs.
        beam_args: Beam pipeline flags.

    Returns:
        ``{set name: {"features", "mean", "covariance"[, "probabilities"]}}``.

    Raises:
        StageError: a set's features, statistics or probabilities were not written (a runner
            that ran part of the pipeline).
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    names = [name for name, _ in named_images]
    classifier_indices = {i for i, name in enumerate(names) if name in classifier_sets}
    dirs = scratch_dirs(scratch)
    for path in dirs.values():
        io.makedirs(path)
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
        build_pipeline(p, named_images, fid_spec, classifier_spec, classifier_indices, scratch)

    missing = [
        os.path.join(dirs[tag], f"{index}.npz")
        for tag, indices in (
            ("features", range(len(names))), ("statistics", range(len(names))),
            ("classifier", classifier_indices if classifier_spec is not None else ()),
        )
        for index in sorted(indices)
        if not io.isfile(os.path.join(dirs[tag], f"{index}.npz"))
    ]
    if missing:
        raise StageError(
            f"evaluate: the feature pipeline did not write {', '.join(missing)}; the runner did not run all of it. "
            "Rerun the stage."
        )
    results = {}
    for index, name in enumerate(names):
        entry = _read_arrays(dirs["features"], index)
        entry.update(_read_arrays(dirs["statistics"], index))
        if classifier_spec is not None and index in classifier_indices:
            entry["probabilities"] = _read_arrays(dirs["classifier"], index)["probabilities"]
        results[name] = entry
    return results


def check_extracted(results, named_images, probability_sets):
    """The end-of-extraction check: every set has its mean, its covariance and one feature row
    per image (and one row of class probabilities where the metrics need them), so that no
    metric is computed from a part of a set.

    Args:
        results: ``extract``'s ``{set name: {"features", "mean", "covariance"[, "probabilities"]}}``.
        named_images: the ``(set name, images)`` extracted.
        probability_sets: the names of the sets that need classifier probabilities.

    Raises:
        StageError: naming the set and what it lacks.
    """
    for name, images in named_images:
        entry = results.get(name, {})
        rows = ("features",) + (("probabilities",) if name in probability_sets else ())
        lacking = [key for key in rows + ("mean", "covariance") if entry.get(key) is None]
        if lacking:
            raise StageError(f"evaluate: the feature pipeline gave the set {name!r} no {', '.join(lacking)}; rerun the stage.")
        for key in rows:
            if len(entry[key]) != len(images):
                raise StageError(
                    f"evaluate: the feature pipeline gave the set {name!r} {len(entry[key])} rows of {key} for "
                    f"{len(images)} images; the runner lost or duplicated batches. Rerun the stage."
                )


# --------------------------------------------------------------------------- executor


class Executor:
    """Computes metrics.json and features.npz from Examples and Samples."""

    def Do(self, inputs, outputs, params):
        from kdiff import metrics as kmetrics

        fid_features = params.get("fid_features") or config_lib.field_default("fid_features")
        seed = int(params.get("seed", 0) or 0)
        beam_args = list(params.get("beam_args") or ["--runner=DirectRunner"])
        if fid_features not in FID_FEATURES:
            raise StageError(f"evaluate: --fid_features={fid_features!r} is not one of {list(FID_FEATURES)}.")

        examples_dir = inputs["examples"]
        stats_path = os.path.join(examples_dir, "stats.json")
        if not io.exists(stats_path):
            raise StageError(
                f"evaluate: no stats.json in the Examples at {examples_dir}; rerun the ingest stage."
            )
        stats = io.read_json(stats_path)
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
        # The workers read the classifier and write their features through pipeline.io into the
        # run's store (a bucket for a run on S3): none relies on the launcher's disk.
        with io.shared_directory(outputs["metrics"]) as out:
            classifier_spec, accuracy = None, None
            if labelled:
                num_classes = int(num_classes)
                path = os.path.join(out, "classifier.keras")
                _log(
                    f"training the feature classifier on {len(train)} labelled images ({num_classes} classes)"
                )
                try:
                    with io.local_output(path) as local:  # Keras saves by name
                        features_lib.train_classifier(train, train_labels, local, num_classes=num_classes, seed=seed)
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
            classifier_sets = {name for name, _ in named if name != "train"}
            results = extract(
                named, fid_spec, None if shared else classifier_spec, classifier_sets, scratch, beam_args
            )
            io.remove_tree(scratch)
            check_extracted(results, named, classifier_sets if classifier_spec is not None else set())
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
                "fid_infinity_min_samples": kmetrics.fid_infinity_min_samples(dim),
                "kid_scale": kid_display_scale(fid_features),
                "num_real": len(train),
                "num_heldout": len(heldout),
                "source": source,
                "warnings": [],
                "samplers": {name: row(f"samples/{name}", sample_labels[name]) for name in samples},
            }
            real = row("eval")
            real["num_images"] = real.pop("num_samples")
            metrics["real_heldout"] = real
            base = row("baseline_gaussian")
            base["covariance"] = covariance_kind
            metrics["baseline_gaussian"] = base
            for values in metrics["samplers"].values():
                values.update(
                    baseline_at_count(results["baseline_gaussian"]["features"], train_stats, values["num_samples"], seed)
                )
            label_shares = np.bincount(train_labels, minlength=num_classes) / len(train_labels) if labelled else None
            scale = metrics["kid_scale"]
            for name, values in metrics["samplers"].items():
                if label_shares is not None:
                    values["class_entropy_floor"] = class_entropy_floor(label_shares, values["num_samples"], seed)
                kid = "n/a" if values["kid_mean"] is None else f"{values['kid_mean'] * scale:.4g}"
                if values["kid_standard_error"] is not None:
                    kid += f" ± {values['kid_standard_error'] * scale:.2g} (s.e.)"
                _log(
                    f"{name}: FID {_fmt(values['fid'])}"
                    + (f" [{_fmt(values['fid_low'])}, {_fmt(values['fid_high'])}]" if values["fid_low"] is not None else "")
                    + f", {kid_label(scale)} {kid}"
                    + (
                        f", confidence {values['classifier_confidence']:.3f} (real {real['classifier_confidence']:.3f})"
                        f", class entropy {values['class_entropy']:.3f} (real {real['class_entropy']:.3f})"
                        if classifier_spec else ""
                    )
                    + (f", class agreement {values['class_agreement']:.3f}" if "class_agreement" in values else "")
                    + flag_line(row_flags(values, base))
                )
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
                f"held-out real: FID {_fmt(real['fid'])}, Gaussian baseline: FID {_fmt(base['fid'])} "
                f"[{_fmt(base['fid_low'])}, {_fmt(base['fid_high'])}]"
                + (f", classifier held-out accuracy {accuracy:.4f}" if accuracy is not None else "")
            )
            metrics["warnings"] = self._warnings(metrics, samples, len(train))

            arrays = {name: entry["features"] for name, entry in results.items()}
            io.write_npz(os.path.join(out, "features.npz"), **arrays)
            io.write_json(os.path.join(out, "metrics.json"), metrics)
        _log(f"wrote {outputs['metrics']}/metrics.json and features.npz")

    @staticmethod
    def _inception_spec(fid_features, params):
        """The extractor spec of "fid_inception" / "inception" / "inception_graph", or StageError
        saying what is missing."""
        if fid_features == "fid_inception":
            from kdiff.fid import weights as fid_weights

            weights = params.get("fid_weights")
            if weights:
                if not io.isfile(weights):
                    raise StageError(
                        f"evaluate: --fid_weights={weights} does not exist; pass pytorch-fid's "
                        f"{fid_weights.FID_WEIGHTS_FILENAME} (or its .npz conversion), or leave it unset."
                    )
                return {"kind": "fid_inception", "weights": io.abspath(weights)}
            try:  # "download": a worker without the launcher's cache fetches its own copy
                return {"kind": "fid_inception", "weights": fid_weights.fetch_weights(), "source": "download"}
            except OSError as error:
                raise StageError(
                    f"evaluate: --fid_features=fid_inception needs pytorch-fid's weights, but {error}. Download "
                    f"{fid_weights.FID_WEIGHTS_URL} on a machine with internet and pass --fid_weights=PATH "
                    f"(or set ${fid_weights.WEIGHTS_ENV}), or use --fid_features=classifier (labelled datasets)."
                ) from None
        if fid_features == "inception":
            weights = params.get("inception_weights") or "imagenet"
            if io.is_remote(weights):  # the workers copy it (features.local_spec)
                if not io.isfile(weights):
                    raise StageError(
                        f"evaluate: --inception_weights={weights} does not exist; pass 'imagenet' or the URL or "
                        "path of InceptionV3 no-top weights."
                    )
                return {"kind": "inception_v3", "weights": io.abspath(weights), "source": weights}
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
            with io.local_copy(graph) as local:  # a URL's graph: checked on a local copy
                features_lib.read_inception_graph(local)
        except (OSError, ValueError) as error:
            raise StageError(f"evaluate: --inception_graph={graph}: {error}") from None
        return {"kind": "inception_graph", "path": io.abspath(graph)}

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
