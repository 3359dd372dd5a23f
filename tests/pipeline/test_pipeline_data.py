"""Data sources, preprocessing, the Examples artifact and the ingest stage (Beam, DirectRunner).

Every source here is made by the test (images written with PIL, TFDS mocked) or ships in
a package (scikit-learn's digits): no network.
"""

import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipeline import data
from pipeline.config import preset
from pipeline.stages import base, ingest
from pipeline.io import read_json
from pipeline.stages.base import StageError

BEAM_ARGS = ["--runner=DirectRunner"]


def ingest_params(**overrides):
    config = preset("tiny")
    params = config.section(ingest.SPEC.parameters)
    params.update(beam_args=BEAM_ARGS, data_range=list(config.data_range))
    params.update(overrides)
    return params


def run_ingest(out, **overrides):
    ingest.Executor().Do({}, {"examples": str(out)}, ingest_params(**overrides))
    return str(out)


def digits_sklearn():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def as_row(key, image, label):
    """A hashable stand-in for (key, array, label), for equal_to."""
    image = np.asarray(image)
    return key, image.shape, str(image.dtype), image.tobytes(), int(label)


@pytest.fixture(scope="session")
def digits_examples(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "ingest" / "examples"
    return run_ingest(out, dataset="digits", limit=96, limit_order="file_number", image_size=8)


def write_class_folder(root):
    """Mixed sizes and modes (L, RGB, RGBA, P) and formats in three class subfolders."""
    rng = np.random.default_rng(0)
    files = {}

    def save(relative, image):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        files[relative] = path

    save("cat/a.png", Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8), "L"))
    save("cat/b.jpg", Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8), "RGB"))
    rgba = rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)
    rgba[:10, :, 3] = 0  # the top half transparent
    save("cat/c.png", Image.fromarray(rgba, "RGBA"))
    save("dog/d.bmp", Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "RGB"))
    palette = Image.fromarray(rng.integers(0, 256, (50, 30, 3), dtype=np.uint8), "RGB").quantize(16)
    save("dog/e.png", palette)
    save("bird/f.webp", Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8), "RGB"))
    (root / "dog" / "notes.txt").write_text("not an image")
    return files


# ---------------------------------------------------------------------------- sources


def test_parse_source_forms_and_unknown():
    assert data.parse_source("digits").kind == "digits"
    source = data.parse_source("tfds:celeb_a/align")
    assert (source.kind, source.name) == ("tfds", "celeb_a/align")
    assert data.parse_source("folder:some/dir").name == os.path.abspath("some/dir")
    for bad in ("imagenet", "tfds:", "folder:", "", None):
        with pytest.raises(StageError) as info:
            data.parse_source(bad)
        assert "digits" in str(info.value) or "NAME" in str(info.value) or "PATH" in str(info.value)
    with pytest.raises(StageError, match=r"'imagenet'.*digits.*tfds:NAME\[/CONFIG\].*folder:PATH"):
        data.parse_source("imagenet")


def test_unknown_dataset_and_bad_limit_in_do(tmp_path):
    out = tmp_path / "examples"
    with pytest.raises(StageError, match="'cifar'.*tfds:NAME"):
        run_ingest(out, dataset="cifar")
    for limit in (0, -3):
        with pytest.raises(ValueError, match="limit"):
            run_ingest(out, limit=limit)
    assert not out.exists()


def test_empty_and_missing_folders(tmp_path):
    out = tmp_path / "examples"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StageError, match=f"no images found in {empty}; expected"):
        run_ingest(out, dataset=f"folder:{empty}")
    (empty / "readme.txt").write_text("no images here")
    (empty / ".hidden.png").write_bytes(b"ignored")
    with pytest.raises(StageError, match="no images found in"):
        run_ingest(out, dataset=f"folder:{empty}")
    missing = tmp_path / "nowhere"
    with pytest.raises(StageError, match=f"folder {missing} does not exist"):
        run_ingest(out, dataset=f"folder:{missing}")
    assert not out.exists()


def test_folder_labels_from_class_subfolders_else_unlabeled(tmp_path):
    write_class_folder(tmp_path / "classes")
    plan = data.plan_source(f"folder:{tmp_path / 'classes'}")
    assert plan.class_names == ["bird", "cat", "dog"]
    assert sorted((key, label) for key, _, label in plan.records) == [
        ("bird/f.webp", 0), ("cat/a.png", 1), ("cat/b.jpg", 1), ("cat/c.png", 1), ("dog/d.bmp", 2), ("dog/e.png", 2)
    ]
    assert data.plan_source(f"folder:{tmp_path / 'classes'}", limit=2, limit_order="file_number").records == plan.records[:2]
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("x.png", "y.PNG"):
        Image.new("RGB", (5, 7), (1, 2, 3)).save(flat / name, format="PNG")
    plan = data.plan_source(f"folder:{flat}")
    assert plan.num_classes is None and [r[2] for r in plan.records] == [-1, -1]


def test_ambiguous_folder_layouts_fail_saying_what_was_found(tmp_path):
    def image(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (9, 9, 9)).save(path, format="PNG")

    nested = tmp_path / "nested"  # cat/{young,old}, dog/{young,old}: not merged into young / old
    for name in ("cat/young/a.png", "cat/old/b.png", "dog/young/c.png", "dog/old/d.png"):
        image(nested / name)
    with pytest.raises(StageError, match=r"below the class folders .*cat/old.*--dataset=folder:.*nested/cat"):
        data.plan_source(f"folder:{nested}")
    mixed = tmp_path / "mixed"  # one loose image beside class folders
    for name in ("loose.png", "cat/a.png", "dog/b.png"):
        image(mixed / name)
    with pytest.raises(StageError, match=r"1 image\(s\) lie directly in .*loose.png.* and 2 in subfolders"):
        data.plan_source(f"folder:{mixed}")
    single = tmp_path / "single"  # one class folder: unlabelled
    image(single / "faces" / "a.png")
    assert data.plan_source(f"folder:{single}").num_classes is None


# ---------------------------------------------------------------------------- preprocessing


def test_preprocess_modes_crop_and_resize():
    # RGBA: transparent pixels become white; opaque ones keep their colour.
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[2:, :, 3] = 255
    out = data.preprocess(rgba, 4, 3)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:2], 255)
    np.testing.assert_array_equal(out[2:], np.broadcast_to([200, 0, 0], (2, 4, 3)))
    # Center crop of a wide image keeps its middle columns (no resize at the same size).
    wide = np.arange(4 * 8, dtype=np.uint8).reshape(4, 8)
    np.testing.assert_array_equal(data.preprocess(wide, 4, 1)[..., 0], wide[:, 2:6])
    # Grayscale → RGB repeats the channel; RGB → grayscale is Pillow's luma.
    rgb = data.preprocess(wide, 4, 3)
    np.testing.assert_array_equal(rgb, np.repeat(wide[:, 2:6, None], 3, axis=2))
    gray = data.preprocess(np.full((6, 6, 3), (255, 0, 0), np.uint8), 6, 1)
    np.testing.assert_array_equal(gray, 76)  # 0.299 × 255
    # Palette, 16-bit and 1-bit images; any size → image_size.
    palette = Image.new("RGB", (30, 10), (10, 20, 30)).quantize(4)
    np.testing.assert_array_equal(data.preprocess(palette, 5, 3), np.broadcast_to([10, 20, 30], (5, 5, 3)))
    sixteen = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert sixteen.mode.startswith("I")
    np.testing.assert_array_equal(data.preprocess(sixteen, 3, 1), 255)
    assert data.preprocess(Image.new("1", (13, 17), 1), 7, 3).shape == (7, 7, 3)
    with pytest.raises(ValueError, match="channels"):
        data.preprocess(wide, 4, 2)


def test_read_image_file_corrupt_names_the_file(tmp_path):
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (32, 32), (5, 6, 7)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(StageError, match=f"Cannot read image {truncated}"):
        data.read_image_file(str(truncated))


def test_read_and_preprocess_transform():
    images, labels = digits_sklearn()
    plan = data.plan_source("digits", limit=5, limit_order="file_number")
    expected = [
        as_row(f"digits/{i:06d}", data.preprocess(data.digits_uint8(images[i]), 16, 3), labels[i]) for i in range(5)
    ]
    with test_pipeline.TestPipeline(argv=BEAM_ARGS) as p:
        rows = (
            p
            | "Records" >> beam.Create(plan.records)
            | "ReadAndPreprocess" >> beam.ParDo(ingest.ReadAndPreprocessFn(plan.source, plan.options, 16, 3))
            | "Rows" >> beam.MapTuple(as_row)
        )
        assert_that(rows, equal_to(expected))


def test_encode_example_transform_round_trip():
    rng = np.random.default_rng(1)
    tagged = [
        ("train", "a", rng.integers(0, 256, (6, 6, 1), dtype=np.uint8), 3),
        ("eval", "b/c.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), -1),
    ]
    with test_pipeline.TestPipeline(argv=BEAM_ARGS) as p:
        rows = (
            p
            | "Tagged" >> beam.Create(tagged)
            | "Encode" >> beam.Map(ingest.encode_tagged)
            | "Decode" >> beam.Map(data.decode_example)
            | "Rows" >> beam.MapTuple(as_row)
        )
        assert_that(rows, equal_to([as_row(k, x, y) for _, k, x, y in tagged]))


def test_eval_keys_and_stats_combine_fns():
    keys = [f"k{i}" for i in range(25)]
    expected_eval = sorted(keys, key=lambda k: ingest.split_hash(7, k))[: ingest.num_eval(25)]
    assert ingest.num_eval(25) == 2 and ingest.num_eval(2) == 1 and ingest.num_eval(1797) == 180
    tagged = [("train", "a", np.zeros((2, 2, 1), np.uint8), 1), ("train", "b", np.full((2, 2, 1), 255, np.uint8), 0),
              ("eval", "c", np.zeros((2, 2, 1), np.uint8), 1)]
    with test_pipeline.TestPipeline(argv=BEAM_ARGS) as p:
        chosen = (
            p
            | "Keys" >> beam.Create(keys)
            | "EvalKeys" >> beam.CombineGlobally(ingest.EvalKeysFn(7))
            | "Sorted" >> beam.Map(sorted)
        )
        assert_that(chosen, equal_to([sorted(expected_eval)]), label="CheckEval")
        stats = p | "Tagged" >> beam.Create(tagged) | "Stats" >> beam.CombineGlobally(ingest.StatsFn())
        assert_that(
            stats,
            equal_to([{"num_train": 2, "num_eval": 1, "label_counts": {"0": 1, "1": 2}, "pixel_mean": 0.5, "pixel_std": 0.5}]),
            label="CheckStats",
        )


# ---------------------------------------------------------------------------- ingest


def test_ingest_digits_round_trip(digits_examples, capsys):
    out = digits_examples
    names = sorted(os.listdir(out))
    assert names == ["eval-00000-of-00001.tfrecord", "stats.json", "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    stats = read_json(os.path.join(out, "stats.json"))
    assert (stats["num_train"], stats["num_eval"]) == (86, 10)
    assert (stats["image_size"], stats["channels"], stats["num_classes"], stats["source"]) == (8, 1, 10, "digits")
    images, labels = digits_sklearn()
    assert stats["label_counts"] == {str(k): int(v) for k, v in zip(*np.unique(labels[:96], return_counts=True))}
    expected = data.digits_uint8(images[:96])[..., None]
    seen = []
    for split, count in (("train", 86), ("eval", 10)):
        x, y, keys = data.load_examples(out, split, return_keys=True)
        assert x.shape == (count, 8, 8, 1) and x.dtype == np.uint8 and y.dtype == np.int64
        index = np.array([int(k.split("/")[1]) for k in keys])
        assert list(index) == sorted(index)
        np.testing.assert_array_equal(y, labels[index])
        np.testing.assert_array_equal(x, expected[index])
        seen.extend(index)
    assert sorted(seen) == list(range(96))
    # The held-out keys are the seed's smallest hashes.
    _, _, eval_keys = data.load_examples(out, "eval", return_keys=True)
    by_hash = sorted((f"digits/{i:06d}" for i in range(96)), key=lambda k: ingest.split_hash(0, k))
    assert sorted(eval_keys) == sorted(by_hash[:10])
    train_pixels = expected[[i for i in range(96) if f"digits/{i:06d}" not in eval_keys]] / 255.0
    assert stats["pixel_mean"] == pytest.approx(train_pixels.mean())
    assert stats["pixel_std"] == pytest.approx(train_pixels.std())


def test_ingest_writes_the_same_shard_files_on_every_run(digits_examples, tmp_path):
    """Each example's shard comes from its key, sorted by key within: the files are the same
    bytes from run to run (and runner to runner: tests/pipeline/test_dask_runner.py)."""
    again = run_ingest(tmp_path / "examples", dataset="digits", limit=96, limit_order="file_number", image_size=8)
    for name in ingest.shard_files(2):
        with open(os.path.join(digits_examples, name), "rb") as first, open(os.path.join(again, name), "rb") as second:
            assert first.read() == second.read(), name
    import tensorflow as tf

    for index, name in enumerate(ingest.shard_files(2)):
        path = os.path.join(digits_examples, name)
        keys = [data.decode_example(record.numpy())[0] for record in tf.data.TFRecordDataset(path)]
        assert keys == sorted(keys) and len(keys) > 0, name
        split = "eval" if name.startswith("eval") else "train"
        assert {ingest.shard_index((split, key), 0, 2) for key in keys} == {index}, name


def test_ingest_writes_every_shard_file_an_empty_one_too(tmp_path):
    out = run_ingest(tmp_path / "examples", dataset="digits", limit=6, image_size=8, num_shards=8)
    names = ingest.shard_files(8)
    assert sorted(os.listdir(out)) == sorted(names + ["stats.json"])
    counts = [base.record_count(os.path.join(out, name)) for name in names]
    assert sum(counts[:8]) == 5 and counts[8] == 1 and 0 in counts[:8]  # 5 train in 8 shards: some empty


def test_ingest_fails_when_a_shard_was_not_written(tmp_path, monkeypatch):
    """The end-of-stage check: a pipeline that wrote all but one shard (as a runner running
    part of the pipeline would) fails the stage, naming the file, and leaves no output."""
    write_shard = ingest.write_shard

    def all_but_the_second(element, directory, names):
        return (names[1], 0) if element[0] == 1 else write_shard(element, directory, names)

    monkeypatch.setattr(ingest, "write_shard", all_but_the_second)
    with pytest.raises(StageError, match=r"missing \['train-00001-of-00002.tfrecord'\]"):
        run_ingest(tmp_path / "examples", dataset="digits", limit=24, image_size=8)
    assert not (tmp_path / "examples").exists()


def test_ingest_check_counts_the_records_written(digits_examples, tmp_path):
    stats = read_json(os.path.join(digits_examples, "stats.json"))
    ingest.check_written(digits_examples, stats, 2, expected=96)
    with pytest.raises(StageError, match="the train shards in .* hold 86 examples; the pipeline read 87"):
        ingest.check_written(digits_examples, dict(stats, num_train=87), 2)
    with pytest.raises(StageError, match="the pipeline read 96 images; the source's plan holds 97"):
        ingest.check_written(digits_examples, stats, 2, expected=97)
    with pytest.raises(StageError, match=r"unexpected \['train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord'\]"):
        ingest.check_written(digits_examples, stats, 3)


def test_make_dataset_float_batches_in_range(digits_examples):
    import tensorflow as tf

    for data_range in ((-1.0, 1.0), (0.0, 1.0)):
        dataset = data.make_dataset(digits_examples, data_range, batch_size=32, shuffle_seed=3)
        batches = list(dataset)
        assert [int(b.shape[0]) for b in batches] == [32, 32, 22]
        assert all(b.dtype == tf.float32 and tuple(b.shape[1:]) == (8, 8, 1) for b in batches)
        values = np.concatenate([b.numpy() for b in batches])
        assert values.min() == data_range[0] and values.max() == data_range[1]
    pairs = data.make_dataset(digits_examples, (-1, 1), batch_size=4, split="eval", with_labels=True, drop_remainder=True)
    images, labels = next(iter(pairs))
    assert images.shape == (4, 8, 8, 1) and labels.dtype == tf.int64
    again = [b.numpy() for b in data.make_dataset(digits_examples, (0, 1), 32, shuffle_seed=3)]
    first = [b.numpy() for b in data.make_dataset(digits_examples, (0, 1), 32, shuffle_seed=3)]
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate(first))
    with pytest.raises(StageError, match="run the ingest stage"):
        data.load_examples(os.path.dirname(digits_examples), "train")


def test_ingest_folder_mixed_sizes_and_modes(tmp_path, capsys):
    files = write_class_folder(tmp_path / "images")
    out = run_ingest(tmp_path / "out" / "examples", dataset=f"folder:{tmp_path / 'images'}", limit=None, image_size=8, num_shards=2)
    stats = read_json(os.path.join(out, "stats.json"))
    assert (stats["num_train"], stats["num_eval"], stats["channels"]) == (5, 1, 3)
    assert (stats["num_classes"], stats["class_names"]) == (3, ["bird", "cat", "dog"])
    rows = {}
    for split in ("train", "eval"):
        x, y, keys = data.load_examples(out, split, return_keys=True)
        rows.update({k: (image, label) for k, image, label in zip(keys, x, y)})
    assert sorted(rows) == sorted(files)
    labels = {"bird": 0, "cat": 1, "dog": 2}
    for key, (image, label) in rows.items():
        assert label == labels[key.split("/")[-2]]
        np.testing.assert_array_equal(image, data.preprocess(data.read_image_file(str(files[key])), 8, 3))
    assert "ingest: read 6 images from folder:" in capsys.readouterr().out


def test_ingest_corrupt_file_fails_naming_it(tmp_path):
    folder = tmp_path / "images"
    write_class_folder(folder)
    bad = folder / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    out = tmp_path / "run" / "examples"
    with pytest.raises(StageError, match=f"Cannot read image {bad}"):
        run_ingest(out, dataset=f"folder:{folder}", image_size=8)
    assert not out.exists()
    assert os.listdir(out.parent) == []  # no temporary directory left either


def test_ingest_tfds_mocked(tmp_path, capsys):
    import tensorflow_datasets as tfds

    out = tmp_path / "examples"
    with tfds.testing.mock_data(num_examples=20):
        run_ingest(out, dataset="tfds:mnist", limit=12, image_size=8, channels=None, num_shards=1)
    stats = read_json(os.path.join(out, "stats.json"))
    assert (stats["num_train"], stats["num_eval"]) == (11, 1)
    assert (stats["channels"], stats["num_classes"], stats["source"]) == (1, 10, "tfds:mnist")
    x, y = data.load_examples(str(out), "train")
    assert x.shape == (11, 8, 8, 1) and ((0 <= y) & (y < 10)).all()
    assert "ingest: read 12 images from tfds:mnist → 11 train / 1 eval in 1 shards" in capsys.readouterr().out


def test_load_examples_truncated_shard_names_the_directory(digits_examples, tmp_path):
    import shutil

    copy = tmp_path / "examples"
    shutil.copytree(digits_examples, copy)
    shard = copy / "eval-00000-of-00001.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(StageError, match=f"Cannot read the eval examples in {copy}"):
        data.load_examples(str(copy), "eval")


# ---------------------------------------------------------------------------- --limit


def write_numbered_folder(root, classes):
    """Tiny PNGs named by number in class subfolders: {class name: count}, numbered across classes."""
    number = 0
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            Image.new("L", (2, 2), number % 256).save(root / name / f"{number}.png")
            number += 1
    return root


def class_counts(plan):
    labels = [label for _, _, label in plan.records]
    return {plan.class_names[c]: labels.count(c) for c in sorted(set(labels))}


def test_stratified_limit_covers_every_class_in_proportion_and_is_reproducible(tmp_path):
    folder = write_numbered_folder(tmp_path / "faces", {"a": 60, "b": 30, "c": 10})
    spec = f"folder:{folder}"
    sorted_first = data.plan_source(spec, limit=12, limit_order="file_number")
    assert class_counts(sorted_first) == {"a": 12}  # what "the first N" gives with class folders
    plan = data.plan_source(spec, limit=12, seed=0)  # stratified: the default
    assert class_counts(plan) == {"a": 7, "b": 4, "c": 1}
    assert data.plan_source(spec, limit=12, seed=0).records == plan.records  # same seed, same subset
    other = data.plan_source(spec, limit=12, seed=1)
    assert class_counts(other) == class_counts(plan) and other.records != plan.records
    assert len({key for key, _, _ in plan.records}) == 12
    digits = data.plan_source("digits", limit=96)
    assert sorted(class_counts(digits)) == [str(i) for i in range(10)] and len(digits.records) == 96
    assert max(class_counts(digits).values()) - min(class_counts(digits).values()) <= 1


def test_stratified_limit_without_labels_is_a_seeded_subset(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(20):
        Image.new("L", (2, 2), i).save(flat / f"{i}.png")
    plan = data.plan_source(f"folder:{flat}", limit=5, seed=3)
    keys = [key for key, _, _ in plan.records]
    assert len(keys) == 5 and keys == sorted(keys) and plan.num_classes is None
    assert keys != sorted((f"{i}.png" for i in range(20)))[:5]
    assert data.plan_source(f"folder:{flat}", limit=5, seed=3).records == plan.records


def test_class_quotas():
    assert data.class_quotas([60, 30, 10], 12) == [7, 4, 1]
    assert data.class_quotas([100, 1], 5) == [4, 1]  # every class, when the limit allows
    assert data.class_quotas([5, 5], 3) == [2, 1]
    assert data.class_quotas([3, 0, 2], 10) == [3, 0, 2]
    assert sum(data.class_quotas([17, 5, 9, 1], 11)) == 11


def test_file_number_order_is_numeric(tmp_path):
    flat = tmp_path / "celeba"
    flat.mkdir()
    for name in ("10.jpg", "2.jpg", "1.jpg", "0.jpg", "img_003.png", "notes.png", "100.jpg"):
        Image.new("RGB", (2, 2)).save(flat / name)
    plan = data.plan_source(f"folder:{flat}", limit=4, limit_order="file_number")
    assert [key for key, _, _ in plan.records] == ["0.jpg", "1.jpg", "2.jpg", "img_003.png"]
    everything = data.plan_source(f"folder:{flat}", limit_order="file_number")
    assert [key for key, _, _ in everything.records][-3:] == ["10.jpg", "100.jpg", "notes.png"]
    assert data.file_number("faces/img_0012.png") == 12 and data.file_number("a.png") is None
    assert data.plan_source("digits", limit=3, limit_order="file_number").records == data.plan_source(
        "digits").records[:3]


def test_limit_order_is_checked(tmp_path):
    with pytest.raises(ValueError, match="limit_order"):
        data.plan_source("digits", limit=3, limit_order="random")
    with pytest.raises(ValueError, match="limit_order"):
        run_ingest(tmp_path / "examples", limit_order="first")


def test_ingest_tfds_stratified_limit_mocked(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        plan = data.plan_source("tfds:mnist", limit=10, seed=0)
        (_, limit, indices), = plan.records
        assert limit == 10 and len(indices) == 10 and list(indices) == sorted(indices)
        assert plan.records == data.plan_source("tfds:mnist", limit=10, seed=0).records
        first = data.plan_source("tfds:mnist", limit=10, limit_order="file_number")
        assert first.records == [("train", 10, None)]
        out = run_ingest(tmp_path / "examples", dataset="tfds:mnist", limit=10, channels=None, num_shards=1)
    stats = read_json(os.path.join(out, "stats.json"))
    assert stats["num_train"] + stats["num_eval"] == 10
    keys = data.load_examples(out, "train", return_keys=True)[2] + data.load_examples(out, "eval", return_keys=True)[2]
    assert sorted(keys) == [f"train/{i:09d}" for i in indices]


# ---------------------------------------------------------------------------- one loader, one order


def test_digits_come_from_kdiff_digits_with_one_scaling():
    import kdiff

    images, labels = digits_sklearn()
    np.testing.assert_array_equal(data.digits_uint8(images), kdiff.digits.to_uint8(images))
    pixels, digit_labels = kdiff.digits.load_uint8(return_labels=True)
    assert pixels.shape == (1797, 8, 8, 1) and pixels.dtype == np.uint8 and pixels.max() == 255
    np.testing.assert_array_equal(pixels[..., 0], data.digits_uint8(images))
    np.testing.assert_array_equal(digit_labels, labels)
    floats = kdiff.digits.load(8, data_range=(-1.0, 1.0))
    np.testing.assert_allclose(floats, pixels / 255.0 * 2.0 - 1.0, atol=1e-6)  # what the pipeline trains on


def test_a_list_of_seeds_gives_each_epoch_the_batches_of_its_own_seed(digits_examples):
    """One dataset for several epochs (the train stage's one fit) = the per-seed datasets, in turn."""
    seeds = [7, 8, 9]
    together = [b.numpy() for b in data.make_dataset(digits_examples, (0, 1), 32, shuffle_seed=seeds)]
    apart = [b.numpy() for seed in seeds for b in data.make_dataset(digits_examples, (0, 1), 32, shuffle_seed=seed)]
    assert [len(b) for b in together] == [32, 32, 22] * 3  # each epoch ends on its own partial batch
    for a, b in zip(together, apart, strict=True):
        np.testing.assert_array_equal(a, b)
    combined = data.make_dataset(digits_examples, (0, 1), 32, shuffle_seed=seeds)
    assert int(combined.cardinality()) == 9


def test_shuffle_order_does_not_depend_on_tensorflows_global_seed(digits_examples):
    import tensorflow as tf

    orders = []
    for global_seed in (1, 2):
        tf.random.set_seed(global_seed)
        batches = data.make_dataset(digits_examples, (0, 1), 86, shuffle_seed=5)
        orders.append(np.concatenate([b.numpy() for b in batches]))
    np.testing.assert_array_equal(orders[0], orders[1])
    other = np.concatenate([b.numpy() for b in data.make_dataset(digits_examples, (0, 1), 86, shuffle_seed=6)])
    assert not np.array_equal(orders[0], other)


def test_training_datasets_have_tf_datas_autotuning_off(digits_examples):
    """With the autotuner on, deleting an iterator (the end of every fit and validation
    pass) waits for its next wake-up, up to a minute (``kdiff.data``)."""
    for shuffle_seed in (None, 3, [3, 4]):
        dataset = data.make_dataset(digits_examples, (-1, 1), batch_size=32, shuffle_seed=shuffle_seed)
        assert dataset.options().autotune.enabled is False, shuffle_seed
