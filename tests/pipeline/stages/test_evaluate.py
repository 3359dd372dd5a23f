"""Evaluate and retrieve stages, the feature extractors and their Beam transforms.

The data are scikit-learn's real digits at 8×8 (the tiny preset's size), written by the
tests as an Examples artifact (TFRecords of PNG bytes + labels, stats.json). "Samples"
are real held-out digits (a good sampler), copies of training digits (a memorizing one);
the stage's own Gaussian-fit baseline is the bad one.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline import features as features_lib
from pipeline.data import load_examples
from pipeline.stages import evaluate, retrieve
from pipeline.stages.base import StageError

BEAM_ARGS = ["--runner=DirectRunner"]


# --------------------------------------------------------------------------- helpers


def write_examples(directory, splits, num_classes, source="test", shards=2):
    """An Examples artifact: ``<split>-NNNNN-of-MMMMM.tfrecord`` shards and stats.json."""
    os.makedirs(directory, exist_ok=True)
    for split, (images, labels) in splits.items():
        for shard in range(shards):
            path = os.path.join(directory, f"{split}-{shard:05d}-of-{shards:05d}.tfrecord")
            with tf.io.TFRecordWriter(path) as writer:
                for image, label in zip(images[shard::shards], labels[shard::shards]):
                    feature = {
                        "image": tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])
                        ),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                    }
                    writer.write(
                        tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
                    )
    train_images, train_labels = splits["train"]
    stats = {
        "source": source,
        "num_train": len(train_images),
        "num_eval": len(splits["eval"][0]),
        "image_size": int(train_images.shape[1]),
        "channels": int(train_images.shape[-1]),
        "num_classes": num_classes,
        "label_counts": None
        if num_classes is None
        else np.bincount(train_labels, minlength=num_classes).tolist(),
        "pixel_mean": float(train_images.mean() / 255),
        "pixel_std": float(train_images.std() / 255),
    }
    with open(os.path.join(directory, "stats.json"), "w") as f:
        json.dump(stats, f)
    return directory


def write_samples(directory, samples):
    """A Samples artifact: ``<name>/samples.npz`` per sampler and timings.json."""
    for name, images in samples.items():
        os.makedirs(os.path.join(directory, name), exist_ok=True)
        np.savez(os.path.join(directory, name, "samples.npz"), images=images)
    with open(os.path.join(directory, "timings.json"), "w") as f:
        json.dump({name: {"seconds": 1.0, "num_samples": len(images)} for name, images in samples.items()}, f)
    return directory


def digits_uint8():
    """The 1,797 real 8×8 digits as uint8 [N, 8, 8, 1] and labels, shuffled."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images / 16.0 * 255).astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    return images[order], digits.target[order].astype(np.int64)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """Evaluate then retrieve on real digits: held-out digits and copies of training digits as samples."""
    root = tmp_path_factory.mktemp("digits_run")
    images, labels = digits_uint8()
    n_train = int(0.9 * len(images))
    train, train_labels = images[:n_train], labels[:n_train]
    heldout, heldout_labels = images[n_train:], labels[n_train:]
    copied = np.arange(0, 400, 10)  # 40 training digits, copied exactly
    examples = write_examples(
        str(root / "examples"), {"train": (train, train_labels), "eval": (heldout, heldout_labels)}, 10
    )
    # The stages see the images in the order the Examples reader returns them.
    train, train_labels = load_examples(examples, "train")
    heldout, heldout_labels = load_examples(examples, "eval")
    samples = write_samples(str(root / "samples"), {"heldout": heldout, "copies": train[copied]})
    metrics_dir, retrieval_dir = str(root / "metrics"), str(root / "retrieval")
    evaluate.Executor().Do(
        {"examples": examples, "samples": samples},
        {"metrics": metrics_dir},
        {
            "fid_features": "classifier",
            "inception_weights": "imagenet",
            "inception_graph": None,
            "seed": 0,
            "beam_args": BEAM_ARGS,
            "data_range": [-1.0, 1.0],
        },
    )
    retrieve.Executor().Do(
        {"examples": examples, "samples": samples, "metrics": metrics_dir},
        {"retrieval": retrieval_dir},
        {"knn": 3, "beam_args": BEAM_ARGS, "data_range": [-1.0, 1.0]},
    )
    with open(os.path.join(metrics_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(retrieval_dir, "retrieval.json")) as f:
        retrieval = json.load(f)
    return {
        "root": root,
        "train": train,
        "heldout": heldout,
        "heldout_labels": heldout_labels,
        "copied": copied,
        "metrics": metrics,
        "retrieval": retrieval,
        "metrics_dir": metrics_dir,
        "retrieval_dir": retrieval_dir,
    }


def standin_inception_graph(path, dim=8, seed=1, fixed_batch=False):
    """A tiny GraphDef with the 2015 graph's tensor names: ExpandDims [1,H,W,3] → … → pool_3 [1,1,1,dim].

    Like the real graph, it takes one decoded image, expands it to a batch of 1, resizes
    it (to 16×16 here, 299 there), normalizes with (x − 128)/128 (Sub, Mul), convolves and
    average-pools. Returns the conv weights (for a reference computation).
    """
    weights = np.random.default_rng(seed).standard_normal((3, 3, 3, dim)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.float32, [None, None, 3], name="Cast")
        batch = tf.expand_dims(image, 0, name="ExpandDims")
        resized = tf.raw_ops.ResizeBilinear(images=batch, size=[16, 16], name="ResizeBilinear")
        if fixed_batch:  # an op that really needs batch 1 (the real graph's Python shapes assume it)
            resized = tf.reshape(resized, [1, 16, 16, 3])
        x = tf.multiply(tf.subtract(resized, 128.0, name="Sub"), 1.0 / 128.0, name="Mul")
        y = tf.nn.relu(tf.nn.conv2d(x, tf.constant(weights), 1, "SAME"))
        tf.nn.avg_pool2d(y, 16, 1, "VALID", name="pool_3")
    with open(path, "wb") as f:
        f.write(graph.as_graph_def().SerializeToString())
    return weights


def standin_reference(images, weights):
    x = tf.raw_ops.ResizeBilinear(images=np.repeat(images, 3, -1).astype(np.float32), size=[16, 16])
    return tf.reduce_mean(
        tf.nn.relu(tf.nn.conv2d((x - 128.0) / 128.0, weights, 1, "SAME")), axis=[1, 2]
    ).numpy()


# --------------------------------------------------------------------------- evaluate on digits


@pytest.mark.slow
def test_classifier_reaches_high_heldout_accuracy(digits_run):
    metrics = digits_run["metrics"]
    assert metrics["classifier_accuracy_heldout"] >= 0.95
    assert metrics["feature_space"].startswith("classifier penultimate layer (64-d)")
    assert metrics["fid_features"] == "classifier"
    assert os.path.exists(os.path.join(digits_run["metrics_dir"], "classifier.keras"))
    # The saved classifier reloads by path and agrees with the recorded accuracy.
    extractor = features_lib.ClassifierFeatures(os.path.join(digits_run["metrics_dir"], "classifier.keras"))
    predicted = extractor(digits_run["heldout"])["probabilities"].argmax(axis=1)
    assert np.mean(predicted == digits_run["heldout_labels"]) == pytest.approx(
        metrics["classifier_accuracy_heldout"]
    )


@pytest.mark.slow
def test_real_samples_beat_the_gaussian_baseline(digits_run):
    metrics = digits_run["metrics"]
    real, base = metrics["samplers"]["heldout"], metrics["baseline_gaussian"]
    assert real["num_samples"] == len(digits_run["heldout"])
    assert real["fid"] < 0.25 * base["fid"]
    assert real["kid_mean"] < 0.25 * base["kid_mean"]
    assert real["classifier_confidence"] > 0.9
    assert real["num_classes_present"] == 10
    assert sum(real["class_shares"]) == pytest.approx(1.0)
    assert max(real["class_shares"]) < 0.2  # roughly equal shares
    assert base["classifier_confidence"] < real["classifier_confidence"]
    assert base["covariance"] == "full" and base["num_samples"] == len(digits_run["heldout"])
    # The held-out real images are the samples here: same numbers.
    assert metrics["real_heldout"]["fid"] == pytest.approx(real["fid"])
    assert metrics["real_heldout"]["classifier_confidence"] == pytest.approx(real["classifier_confidence"])


@pytest.mark.slow
def test_features_npz_and_fid_of_identical_sets(digits_run):
    from kdiff import metrics as kmetrics

    with np.load(os.path.join(digits_run["metrics_dir"], "features.npz")) as data:
        stored = {name: data[name] for name in data.files}
    assert {"train", "eval", "samples/heldout", "samples/copies", "baseline_gaussian"} <= set(stored)
    assert stored["train"].shape == (len(digits_run["train"]), 64)
    np.testing.assert_allclose(stored["samples/heldout"], stored["eval"], rtol=1e-5, atol=1e-5)
    assert kmetrics.fid_from_features(stored["eval"], stored["eval"]) == pytest.approx(0.0, abs=1e-6)
    # The Beam CombineFn statistics give the same FID as kdiff.metrics.fid_from_features.
    expected = kmetrics.fid_from_features(stored["train"], stored["samples/heldout"])
    assert digits_run["metrics"]["samplers"]["heldout"]["fid"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_fid_infinity_and_bootstrap_interval_are_stored_beside_fid(digits_run):
    from kdiff import metrics as kmetrics

    with np.load(os.path.join(digits_run["metrics_dir"], "features.npz")) as data:
        train, heldout = data["train"], data["samples/heldout"]
    row = digits_run["metrics"]["samplers"]["heldout"]
    stats = kmetrics.feature_statistics(train)
    assert row["fid_infinity"] == pytest.approx(kmetrics.fid_infinity(heldout, stats, seed=0)["fid_infinity"], rel=1e-4)
    assert row["fid_low"] <= row["fid"] <= row["fid_high"]
    # Real held-out images: FID∞ removes most of the small-sample bias of their raw FID.
    assert abs(row["fid_infinity"]) < row["fid"] / 2
    # ... but 180 samples are fewer than 10 per dimension of the 64-d features: kept, flagged.
    assert digits_run["metrics"]["fid_infinity_min_samples"] == 640
    assert row["fid_infinity_supported"] is False


def test_fid_inception_spec_takes_a_weight_file_and_says_how_to_get_one(tmp_path, monkeypatch):
    from kdiff.fid import extractors, weights

    path = tmp_path / "pt_inception.npz"
    path.write_bytes(b"")
    spec = evaluate.Executor._inception_spec("fid_inception", {"fid_weights": str(path)})
    assert spec == {"kind": "fid_inception", "weights": str(path)}
    assert "comparable with pytorch-fid's" in extractors.describe(spec, 2048)
    with pytest.raises(StageError, match="--fid_weights=.*does not exist"):
        evaluate.Executor._inception_spec("fid_inception", {"fid_weights": str(tmp_path / "missing.pth")})

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(weights, "fetch_weights", offline)
    with pytest.raises(StageError, match="--fid_weights=PATH"):
        evaluate.Executor._inception_spec("fid_inception", {})


@pytest.mark.slow
def test_kid_is_stored_raw_and_times_1000_and_shown_raw_in_classifier_features(digits_run):
    from kdiff import metrics as kmetrics

    metrics = digits_run["metrics"]
    for row in list(metrics["samplers"].values()) + [metrics["real_heldout"], metrics["baseline_gaussian"]]:
        assert row["kid_x1000_mean"] == pytest.approx(1000 * row["kid_mean"], rel=1e-12)
        assert row["kid_x1000_std"] == pytest.approx(1000 * row["kid_std"], rel=1e-12)
        assert row["kid_x1000_standard_error"] == pytest.approx(1000 * row["kid_standard_error"], rel=1e-12)
        assert row["kid_standard_error"] > 0
    assert evaluate.kid_entries(None, None) == {
        "kid_mean": None, "kid_std": None, "kid_standard_error": None,
        "kid_x1000_mean": None, "kid_x1000_std": None, "kid_x1000_standard_error": None,
    }
    assert metrics["kid_scale"] == 1  # raw in the classifier's features
    assert evaluate.kid_display_scale("fid_inception") == evaluate.KID_SCALE == 1000
    assert evaluate.kid_label(1) == "KID (raw)" and evaluate.kid_label(1000) == "KID ×10³"
    # The stored KID is kdiff.metrics.kid_estimate's, with the stage's subset size.
    with np.load(os.path.join(digits_run["metrics_dir"], "features.npz")) as data:
        train, copies = data["train"], data["samples/copies"]
    expected = kmetrics.kid_estimate(train, copies, subset_size=len(copies), seed=0)
    row = metrics["samplers"]["copies"]
    assert row["kid_mean"] == pytest.approx(expected["kid"], rel=1e-9)
    assert row["kid_standard_error"] == pytest.approx(expected["standard_error"], rel=1e-9)
    assert row["kid_subset_size"] == len(copies)


@pytest.mark.slow
def test_class_entropy_beside_confidence_and_no_flags_on_real_samples(digits_run):
    metrics = digits_run["metrics"]
    real, held, copies = metrics["real_heldout"], metrics["samplers"]["heldout"], metrics["samplers"]["copies"]
    assert real["class_entropy"] > 0.95 and 0 < real["predictive_entropy"] < 0.2
    assert held["class_entropy"] == pytest.approx(real["class_entropy"])
    for row in (held, copies):
        assert 0 < row["class_entropy_floor"] < row["class_entropy"]
    assert copies["class_entropy_floor"] < held["class_entropy_floor"]  # 40 draws scatter more than 180
    base = metrics["baseline_gaussian"]
    assert evaluate.row_flags(held, base) == []
    # Each sampler meets the baseline at its own count: at 180, the baseline's own interval;
    # at 40, a higher FID (FID rises as the count falls)...
    assert (held["baseline_fid_low"], held["baseline_fid_high"]) == (base["fid_low"], base["fid_high"])
    assert copies["baseline_fid"] > base["fid"]
    # ... and 40 samples in a 64-d space give an interval too wide to clear it: flagged, honestly.
    assert [code for code, _ in evaluate.row_flags(copies, base)] == ["baseline"]


@pytest.mark.slow
def test_few_samples_warning(digits_run):
    warnings = " ".join(digits_run["metrics"]["warnings"])
    assert "fewer than 2,048 samples" in warnings
    assert "heldout (180)" in warnings and "copies (40)" in warnings


def test_normalized_entropy_and_class_entropy_floor_closed_forms():
    assert evaluate.normalized_entropy([0.1] * 10) == pytest.approx(1.0)
    assert evaluate.normalized_entropy([1.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert evaluate.normalized_entropy([0.5, 0.5, 0.0, 0.0]) == pytest.approx(0.5)  # log 2 / log 4
    np.testing.assert_allclose(evaluate.normalized_entropy([[0.5, 0.5], [1.0, 0.0]]), [1.0, 0.0])
    # One class of two always: every draw has entropy 0, so the floor is 0.
    assert evaluate.class_entropy_floor([1.0, 0.0], 50) == 0.0
    # Fair classes: the floor rises towards 1 with the count (small counts miss classes).
    floors = [evaluate.class_entropy_floor([0.1] * 10, n) for n in (16, 200, 5000)]
    assert floors[0] < floors[1] < floors[2] < 1.0 and floors[2] > 0.99
    assert evaluate.class_entropy_floor([0.1] * 10, 16, seed=3) == evaluate.class_entropy_floor([0.1] * 10, 16, seed=3)


def test_classifier_statistics_read_confidence_beside_entropy():
    """A classifier sure of every sample, all in one class: confidence 0.999, entropy 0."""
    probabilities = np.full((20, 10), 0.001 / 9)
    probabilities[:, 3] = 0.999
    values = evaluate.classifier_statistics(probabilities, 10)
    assert values["classifier_confidence"] == pytest.approx(0.999)
    assert values["class_entropy"] == 0.0 and values["num_classes_present"] == 1
    assert values["predictive_entropy"] < 0.01
    uniform = evaluate.classifier_statistics(np.full((20, 10), 0.1), 10)
    assert uniform["predictive_entropy"] == pytest.approx(1.0)


def test_row_flags_on_hand_made_rows():
    baseline = {"fid": 40.0, "fid_low": 35.0, "fid_high": 46.0, "fid_infinity": 38.0, "fid_infinity_supported": False}
    bad = {"fid": 80.0, "fid_low": 70.0, "fid_high": 90.0, "fid_infinity": 75.0, "fid_infinity_supported": False,
           "class_entropy": 0.2, "class_entropy_floor": 0.7, "num_samples": 60}
    flags = evaluate.row_flags(bad, baseline)
    assert [code for code, _ in flags] == ["baseline", "classes"]
    assert flags[0][1] == "its FID interval [70, 90] is not below the baseline's [35, 46]"
    assert flags[1][1] == "class entropy 0.2 is below 0.7, the floor for 60 draws from the real class shares"
    assert "⚠ baseline: its FID interval [70, 90]" in evaluate.flag_line(flags)
    good = dict(bad, fid=10.0, fid_low=8.0, fid_high=12.0, fid_infinity=50.0, class_entropy=0.9)
    assert evaluate.row_flags(good, baseline) == []  # an unsupported FID∞ is not compared
    assert [c for c, _ in evaluate.row_flags(dict(good, fid_infinity_supported=True), dict(baseline, fid_infinity_supported=True))] == ["baseline"]
    assert {code for code, _ in evaluate.FLAGS} == {"baseline", "classes"}


# --------------------------------------------------------------------------- retrieve


@pytest.mark.slow
def test_retrieval_finds_copied_training_images(digits_run):
    from PIL import Image

    copies = digits_run["retrieval"]["copies"]
    assert copies["memorization_ratio"] == 1.0
    assert copies["mean_nn_distance"] == pytest.approx(0.0, abs=1e-4)
    assert copies["train_train_median_nn"] > 0
    assert copies["knn"] == 3
    # Real held-out digits are not copies: far fewer sit that close to a training digit.
    assert digits_run["retrieval"]["heldout"]["memorization_ratio"] < 0.8
    assert digits_run["retrieval"]["heldout"]["mean_nn_distance"] > copies["mean_nn_distance"]

    panel_info = copies["panel"]
    rows = len(panel_info["sample_indices"])
    assert rows == retrieve.PANEL_ROWS
    panel = np.asarray(Image.open(os.path.join(digits_run["retrieval_dir"], panel_info["path"])))
    scale = panel_info["scale"]
    tops, lefts, size = retrieve.panel_layout(rows, 3, 8, 8, scale)
    assert panel.shape == size + (3,)
    # Column titles above the tiles: dark text over the sample column and over each neighbour.
    for left in lefts:
        assert np.any(panel[: tops[0], left : left + 8 * scale].max(axis=-1) < 128)
    assert retrieve.ordinal(1) == "1st" and retrieve.ordinal(12) == "12th" and retrieve.ordinal(23) == "23rd"
    train, copied = digits_run["train"], digits_run["copied"]
    for row in range(rows):
        first = panel_info["neighbor_indices"][row][0]
        original = train[copied[row]]
        # The first neighbour is the copied image (or a pixel-identical duplicate of it).
        assert np.array_equal(train[first], original)
        tile = panel[tops[row] : tops[row] + 8 * scale, lefts[1] : lefts[1] + 8 * scale, 0]
        assert np.array_equal(tile, np.kron(original[..., 0], np.ones((scale, scale), np.uint8)))
        sample_tile = panel[tops[row] : tops[row] + 8 * scale, lefts[0] : lefts[0] + 8 * scale, 0]
        assert np.array_equal(sample_tile, tile)


# --------------------------------------------------------------------------- bad input and other feature spaces


def test_unlabelled_data_with_classifier_features_is_a_stage_error(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 1)).astype(np.uint8)
    unlabelled = -np.ones(12, np.int64)
    examples = write_examples(
        str(tmp_path / "examples"),
        {"train": (images[:10], unlabelled[:10]), "eval": (images[10:], unlabelled[10:])},
        None,
    )
    samples = write_samples(str(tmp_path / "samples"), {"s": images[:4]})
    with pytest.raises(StageError, match="no labels.*--fid_features=inception"):
        evaluate.Executor().Do(
            {"examples": examples, "samples": samples},
            {"metrics": str(tmp_path / "metrics")},
            {
                "fid_features": "classifier",
                "inception_weights": "imagenet",
                "inception_graph": None,
                "seed": 0,
                "beam_args": BEAM_ARGS,
            },
        )
    assert not os.path.exists(tmp_path / "metrics")
    with pytest.raises(StageError, match="--inception_graph"):
        evaluate.Executor().Do(
            {"examples": examples, "samples": samples},
            {"metrics": str(tmp_path / "metrics")},
            {
                "fid_features": "inception_graph",
                "inception_weights": "imagenet",
                "inception_graph": str(tmp_path / "missing.pb"),
                "seed": 0,
                "beam_args": BEAM_ARGS,
            },
        )
    with pytest.raises(StageError, match="--inception_weights=.*missing.h5 does not exist"):
        evaluate.Executor().Do(
            {"examples": examples, "samples": samples},
            {"metrics": str(tmp_path / "metrics")},
            {
                "fid_features": "inception",
                "inception_weights": str(tmp_path / "missing.h5"),
                "inception_graph": None,
                "seed": 0,
                "beam_args": BEAM_ARGS,
            },
        )
    assert not os.path.exists(tmp_path / "metrics")


def test_unlabelled_data_with_the_inception_graph(tmp_path):
    """Unlabelled data evaluate fine in the Inception-graph space (a stand-in graph here)."""
    images, _ = digits_uint8()
    unlabelled = -np.ones(len(images), np.int64)
    examples = write_examples(
        str(tmp_path / "examples"),
        {"train": (images[:300], unlabelled[:300]), "eval": (images[300:330], unlabelled[300:330])},
        None,
    )
    samples = write_samples(str(tmp_path / "samples"), {"real": images[400:450]})
    graph = str(tmp_path / "classify_image_graph_def.pb")
    standin_inception_graph(graph)
    evaluate.Executor().Do(
        {"examples": examples, "samples": samples},
        {"metrics": str(tmp_path / "metrics")},
        {
            "fid_features": "inception_graph",
            "inception_weights": "imagenet",
            "inception_graph": graph,
            "seed": 0,
            "beam_args": BEAM_ARGS,
        },
    )
    with open(tmp_path / "metrics" / "metrics.json") as f:
        metrics = json.load(f)
    assert (
        "2015-12-05 Inception graph" in metrics["feature_space"] and "pool_3, 8-d" in metrics["feature_space"]
    )
    assert metrics["feature_dim"] == 8 and metrics["classifier_accuracy_heldout"] is None
    assert "classifier_confidence" not in metrics["samplers"]["real"]
    assert metrics["samplers"]["real"]["fid"] < metrics["baseline_gaussian"]["fid"]
    assert not os.path.exists(tmp_path / "metrics" / "classifier.keras")


def test_inception_graph_extractor_loads_a_standin_graph(tmp_path):
    path = str(tmp_path / "classify_image_graph_def.pb")
    weights = standin_inception_graph(path)
    extractor = features_lib.load_extractor({"kind": "inception_graph", "path": path, "batch_size": 2})
    assert extractor.input_name == "ExpandDims:0" and extractor.dim == 8
    images = (
        np.random.default_rng(0).integers(0, 256, (3, 10, 12, 1)).astype(np.uint8)
    )  # gray, any size, batch > 1
    features = extractor(images)["features"]
    assert features.shape == (3, 8) and features.dtype == np.float32
    np.testing.assert_allclose(features, standin_reference(images, weights), rtol=1e-4, atol=1e-5)
    # A graph that only runs on batches of 1 is fed one image at a time.
    fixed = str(tmp_path / "fixed_batch.pb")
    standin_inception_graph(fixed, fixed_batch=True)
    one_at_a_time = features_lib.InceptionGraphFeatures(fixed)(images)["features"]
    np.testing.assert_allclose(one_at_a_time, standin_reference(images, weights), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="pool_3"):
        tf.io.write_file(str(tmp_path / "empty.pb"), tf.compat.v1.GraphDef().SerializeToString())
        features_lib.InceptionGraphFeatures(str(tmp_path / "empty.pb"))


@pytest.mark.slow
def test_keras_inception_v3_loads_local_weights(tmp_path):
    import keras

    # InceptionV3 needs ≥ 75×75 inputs; the conv weights do not depend on the input size.
    network = keras.applications.InceptionV3(
        weights=None, include_top=False, pooling="avg", input_shape=(75, 75, 3)
    )
    path = str(tmp_path / "inception_v3_notop.weights.h5")
    network.save_weights(path)
    spec = {"kind": "inception_v3", "weights": features_lib.resolve_inception_weights(path)}
    extractor = features_lib.load_extractor(spec)
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 1)).astype(np.uint8)
    features = extractor(images)["features"]
    assert features.shape == (2, 2048) and np.all(np.isfinite(features))
    # Same as the network itself on gray → RGB, bilinear 299×299, Inception preprocessing.
    x = tf.image.resize(np.repeat(images, 3, -1).astype(np.float32), (299, 299), method="bilinear")
    reference = extractor.model(keras.applications.inception_v3.preprocess_input(x), training=False)
    np.testing.assert_allclose(features, np.asarray(reference), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(extractor.model.get_weights()[0], network.get_weights()[0])
    assert "weights file inception_v3_notop.weights.h5" in features_lib.describe(spec, 2048)
    assert "not with published FIDs" in features_lib.describe(
        {"kind": "inception_v3", "weights": "imagenet"}, 2048
    )
    with pytest.raises(FileNotFoundError):
        features_lib.resolve_inception_weights(str(tmp_path / "missing.h5"))


# --------------------------------------------------------------------------- Beam transforms


@pytest.mark.slow
def test_feature_dofn_and_mean_covariance_under_test_pipeline(digits_run):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from kdiff import metrics as kmetrics

    spec = {"kind": "classifier", "path": os.path.join(digits_run["metrics_dir"], "classifier.keras")}
    images = digits_run["heldout"][:50]
    expected = features_lib.load_extractor(spec)(images)
    mu, sigma = kmetrics.feature_statistics(expected["features"])

    def check_features(elements):
        ((key, outputs),) = elements
        assert key == "heldout"
        np.testing.assert_allclose(outputs["features"], expected["features"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)

    def check_statistics(elements):
        ((_key, (mean, covariance)),) = elements
        np.testing.assert_allclose(mean, mu, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(covariance, sigma, rtol=1e-4, atol=1e-5)

    with TestPipeline(argv=BEAM_ARGS) as p:
        batches = p | "Batches" >> beam.Create(
            features_lib.batch_images({"heldout": images}, 16)
        )  # 16+16+16+2
        outputs = batches | "Features" >> features_lib.ExtractFeatures(spec)
        merged = (
            outputs
            | "Group" >> beam.GroupByKey()
            | "Concatenate" >> beam.Map(features_lib.concatenate_batches)
        )
        statistics = merged | "MeanCovariance" >> beam.Map(features_lib.set_statistics)
        counts = outputs | "Count" >> beam.combiners.Count.Globally()
        assert_that(merged, check_features, label="CheckFeatures")
        assert_that(statistics, check_statistics, label="CheckStatistics")
        assert_that(counts, equal_to([4]), label="CheckBatches")


def test_set_statistics_are_numpys_and_independent_of_the_batching():
    """A set's statistics come from its rows in order (a combine's merge order would change
    their last bits between runners): numpy's mean and unbiased covariance, exactly."""
    from kdiff import metrics as kmetrics

    rows = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    batches = [(i, {"features": rows[start : start + 16]}) for i, start in enumerate(range(0, 50, 16))]
    merged = features_lib.concatenate_batches(("set", batches[::-1]))  # arrival order does not matter
    key, (mean, covariance) = features_lib.set_statistics(merged)
    expected_mean, expected_covariance = kmetrics.feature_statistics(rows)
    assert key == "set" and mean.dtype == covariance.dtype == np.float64
    np.testing.assert_array_equal(mean, expected_mean)
    np.testing.assert_array_equal(covariance, expected_covariance)
    _, (mean, covariance) = features_lib.set_statistics(("one", {"features": rows[:1]}))
    np.testing.assert_array_equal(mean, rows[0])
    assert covariance.shape == (6, 6) and np.isnan(covariance).all()


def test_the_classifier_comes_from_its_seed_alone(tmp_path):
    """TensorFlow's global seed does not change the feature classifier (it did: its data
    order came from Dataset.shuffle, whose op seed is combined with the global one)."""
    import keras
    import tensorflow as tf

    images, labels = digits_uint8()
    images, labels = images[:200], labels[:200]
    weights = []
    for global_seed in (1, 2):
        tf.random.set_seed(global_seed)
        path = features_lib.train_classifier(
            images, labels, str(tmp_path / f"c{global_seed}.keras"), num_classes=10, epochs=2, seed=3, verbose=False
        )
        weights.append(keras.models.load_model(path).get_weights())
    other = features_lib.train_classifier(
        images, labels, str(tmp_path / "other.keras"), num_classes=10, epochs=2, seed=4, verbose=False
    )
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(weights[0], keras.models.load_model(other).get_weights()))


def test_check_extracted_names_the_set_short_of_rows():
    images = np.zeros((4, 8, 8, 1), np.uint8)
    named = [("train", images), ("samples/a", images)]
    full = {"features": np.zeros((4, 3)), "mean": np.zeros(3), "covariance": np.eye(3), "probabilities": np.ones((4, 10))}
    results = {"train": dict(full, probabilities=None), "samples/a": dict(full)}
    evaluate.check_extracted(results, named, {"samples/a"})  # train needs no probabilities
    with pytest.raises(StageError, match="gave the set 'samples/a' 3 rows of probabilities for 4 images"):
        evaluate.check_extracted(dict(results, **{"samples/a": dict(full, probabilities=np.ones((3, 10)))}), named, {"samples/a"})
    with pytest.raises(StageError, match="gave the set 'train' no covariance"):
        evaluate.check_extracted(dict(results, train=dict(full, covariance=None)), named, set())
    with pytest.raises(StageError, match="gave the set 'samples/a' no features, mean, covariance"):
        evaluate.check_extracted({"train": full}, named, set())
