"""IDX files (pipeline/idx.py), the ``idx:DIR`` source and ``fashion_mnist``'s lookup.

Every IDX file here is written by the test (``write_idx``, a writer of its own, not the
module's code) into tmp_path, a few dozen images, plain and gzipped: no network, and
Debian's dataset-fashion-mnist is not needed (its folder, Keras' cache and TFDS are
replaced by tmp folders and stubs).
"""

import functools
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
from test_pipeline_data import run_ingest

from pipeline import data, idx
from pipeline import run as run_lib
from pipeline.stages import ingest
from pipeline.io import read_json
from pipeline.stages.base import StageError

FASHION_COMMANDS = (
    "tfds build fashion_mnist",
    'python -c "import keras; keras.datasets.fashion_mnist.load_data()"',
    "apt-get install dataset-fashion-mnist",
)


def write_idx(path, array, gz=None, code=0x08):
    """Writes ``array`` as an IDX file: 00 00, ``code``, ndim, the sizes (big-endian
    uint32), the values as bytes; gzipped when ``gz`` (None: when the name ends in .gz)."""
    array = np.asarray(array)
    content = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    content += array.astype(np.uint8).tobytes()
    gz = str(path).endswith(".gz") if gz is None else gz
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def make_images(count, size=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size), dtype=np.uint8)


def make_labels(count, classes=10):
    return (np.arange(count) * 7 % classes).astype(np.uint8)  # every class, not in order


def write_set(folder, prefix="train", count=40, size=12, seed=0, gz=True, labels=True, classes=10):
    """An images file and (``labels``) its labels in ``folder``; returns (images, labels)."""
    suffix = ".gz" if gz else ""
    images = make_images(count, size, seed)
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    y = make_labels(count, classes)
    if labels:
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", y)
    return images, (y if labels else None)


# ---------------------------------------------------------------------------- the reader


@pytest.mark.parametrize("name", ["plain-images-idx3-ubyte", "zipped-images-idx3-ubyte.gz"])
def test_read_idx_round_trips_images_and_labels(tmp_path, name):
    images = make_images(30, size=28)
    read = idx.read_idx(write_idx(tmp_path / name, images), ndim=3)
    assert read.dtype == np.uint8 and read.shape == (30, 28, 28)
    np.testing.assert_array_equal(read, images)
    labels = make_labels(30)
    np.testing.assert_array_equal(idx.read_idx(write_idx(tmp_path / (name + ".labels"), labels), ndim=1), labels)
    assert idx.read_idx(write_idx(tmp_path / "other", make_images(2)[..., None])).shape == (2, 12, 12, 1)  # ndim None


def test_read_idx_reads_mnists_header_exactly(tmp_path):
    """The header MNIST's files start with, written byte by byte."""
    path = tmp_path / "t"
    values = bytes(range(2 * 3 * 4))
    path.write_bytes(bytes.fromhex("00 00 08 03 00 00 00 02 00 00 00 03 00 00 00 04") + values)
    np.testing.assert_array_equal(idx.read_idx(path, 3), np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


def test_read_idx_errors_name_the_file_what_was_expected_and_received(tmp_path):
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(idx.IdxError, match=rf"IDX file {png}: expected an IDX header .*; received 89 50 4e 47\."):
        idx.read_idx(png)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(idx.IdxError, match=rf"IDX file {empty}: expected an IDX header .*; received an empty file\."):
        idx.read_idx(empty)
    floats = write_idx(tmp_path / "floats", np.zeros((2, 2)), code=0x0D)
    with pytest.raises(idx.IdxError, match=rf"IDX file {floats}: expected type code 0x08 \(uint8\); received 0x0D \(float32\)\."):
        idx.read_idx(floats)
    labels = write_idx(tmp_path / "labels.gz", make_labels(5))
    with pytest.raises(idx.IdxError, match=rf"IDX file {labels}: expected 3 dimension\(s\); received 1\."):
        idx.read_idx(labels, ndim=3)
    cut_header = tmp_path / "cut-header"
    cut_header.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0]))
    with pytest.raises(idx.IdxError, match=rf"{cut_header}: expected a 16-byte header for 3 dimension\(s\); received 10 bytes"):
        idx.read_idx(cut_header)
    for gz in (False, True):
        whole = tmp_path / f"whole{gz}"
        write_idx(whole, make_images(3, size=4), gz=False)
        content = whole.read_bytes()
        short, long = tmp_path / f"short{gz}", tmp_path / f"long{gz}"
        for path, cut in ((short, content[:-5]), (long, content + b"\x00")):
            path.write_bytes(gzip.compress(cut) if gz else cut)
        with pytest.raises(idx.IdxError, match=rf"{short}: expected 48 bytes of values after the header \(shape 3 × 4 × 4\); received 43 \(truncated\)"):
            idx.read_idx(short)
        with pytest.raises(idx.IdxError, match=rf"{long}: expected 48 bytes .*; received 49 \(longer than its header says\)"):
            idx.read_idx(long)
    zipped = write_idx(tmp_path / "cut.gz", make_images(20))
    zipped.write_bytes(zipped.read_bytes()[:-30])
    with pytest.raises(idx.IdxError, match=rf"IDX file {zipped}: expected a complete gzip stream .*; received a truncated or corrupt one"):
        idx.read_idx(zipped)
    with pytest.raises(FileNotFoundError):
        idx.read_idx(tmp_path / "missing")


def test_find_idx_set_prefers_train_then_the_only_prefix_and_uncompressed(tmp_path):
    both = tmp_path / "both"
    write_set(both, "t10k")
    write_set(both, "train")
    assert idx.find_idx_set(both) == idx.IdxSet(
        "train", str(both / "train-images-idx3-ubyte.gz"), str(both / "train-labels-idx1-ubyte.gz")
    )
    write_set(both, "train", gz=False)  # beside the .gz files: the uncompressed ones are read
    assert idx.find_idx_set(both).images == str(both / "train-images-idx3-ubyte")
    only = tmp_path / "only"
    write_set(only, "t10k", labels=False)
    (only / ".hidden-images-idx3-ubyte").write_bytes(b"")
    assert idx.find_idx_set(only) == idx.IdxSet("t10k", str(only / "t10k-images-idx3-ubyte.gz"), None)
    several = tmp_path / "several"
    write_set(several, "t10k")
    write_set(several, "extra")
    with pytest.raises(idx.IdxError, match=r"expected one set of images \(or one named 'train'\); received 2: "
                       r"extra-images-idx3-ubyte, t10k-images-idx3-ubyte"):
        idx.find_idx_set(several)
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    (kaggle / "train-images.idx3-ubyte").write_bytes(b"")
    with pytest.raises(idx.IdxError, match=rf"IDX folder {kaggle}: expected an images file PREFIX-images-idx3-ubyte\[\.gz\] "
                       r".*; received no such file; found train-images\.idx3-ubyte, which do not match"):
        idx.find_idx_set(kaggle)


# ---------------------------------------------------------------------------- idx:DIR


def test_parse_source_idx_and_fashion_mnist():
    assert data.parse_source("fashion_mnist") == data.Source("fashion_mnist", "fashion_mnist")
    assert data.parse_source("idx:some/dir") == data.Source("idx:some/dir", "idx", os.path.abspath("some/dir"))
    with pytest.raises(StageError, match=r"'idx:' names no folder: expected 'idx:DIR'"):
        data.parse_source("idx:")
    with pytest.raises(StageError, match=r"'fashion'.*'fashion_mnist'.*'idx:DIR'"):
        data.parse_source("fashion")
    help_text = " ".join(run_lib.build_parser().format_help().split())
    assert '"fashion_mnist"' in help_text and '"idx:DIR"' in help_text  # --help and RunConfig's field doc


def test_idx_source_plans_and_reads_with_labels_and_a_limit(tmp_path):
    folder = tmp_path / "mnist"
    images, labels = write_set(folder, "train", count=40, classes=4)
    write_set(folder, "t10k", count=6, seed=1)  # not read: train is
    plan = data.plan_source(f"idx:{folder}")
    assert (plan.source.kind, plan.num_classes, plan.class_names, plan.default_channels) == ("idx", 4, ["0", "1", "2", "3"], 1)
    assert plan.records == [(f"train/{i:06d}", i, int(labels[i])) for i in range(40)]
    assert plan.origin == "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz"
    assert len(pickle.dumps(plan.records)) < 2000  # indices and labels, never the pixels
    reader = data.open_reader(plan.source, plan.options)
    for record in plan.records:
        (key, image, label), = reader(record)
        assert (key, label) == (record[0], record[2])
        np.testing.assert_array_equal(image, images[record[1]])
    limited = data.plan_source(f"idx:{folder}", limit=8, seed=3)
    assert len(limited.records) == 8 and sorted({r[2] for r in limited.records}) == [0, 1, 2, 3]
    assert [r[2] for r in limited.records].count(0) == 2  # 10 of 40 each: 2 of 8 each
    assert limited.records == data.plan_source(f"idx:{folder}", limit=8, seed=3).records
    first = data.plan_source(f"idx:{folder}", limit=5, limit_order="file_number")
    assert [r[1] for r in first.records] == [0, 1, 2, 3, 4]
    fn = ingest.ReadAndPreprocessFn(plan.source, plan.options, 28, 1)
    assert len(pickle.dumps(fn)) < 5000  # the DoFn carries the path; setup() loads the array


def test_idx_source_without_labels_is_unlabelled(tmp_path):
    folder = tmp_path / "unlabelled"
    write_set(folder, "gen", count=12, labels=False, gz=False)
    plan = data.plan_source(f"idx:{folder}", limit=5)
    assert (plan.num_classes, plan.class_names) == (None, None)
    assert len(plan.records) == 5 and {r[2] for r in plan.records} == {-1}
    assert plan.origin == "gen-images-idx3-ubyte, no gen-labels-idx1-ubyte[.gz]: unlabelled"


def test_idx_source_bad_input_fails_naming_the_file(tmp_path):
    folder = tmp_path / "bad"
    write_set(folder, count=10)
    write_idx(folder / "train-labels-idx1-ubyte.gz", make_labels(9))
    spec = f"idx:{folder}"
    with pytest.raises(StageError, match=rf"Dataset '{spec}': labels file {folder}/train-labels-idx1-ubyte.gz: expected "
                       rf"one label per image of {folder}/train-images-idx3-ubyte.gz, 10; received 9\."):
        data.plan_source(spec)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(StageError, match=rf"Dataset '{spec}': IDX file {folder}/train-images-idx3-ubyte.gz: expected an "
                       r"IDX header.*received 50 4b 03 04"):
        data.plan_source(spec)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no IDX here")
    with pytest.raises(StageError, match=rf"Dataset 'idx:{empty}': IDX folder {empty}: expected an images file .*"
                       r"received no such file\. Pass --dataset=idx:DIR"):
        data.check_source(f"idx:{empty}")
    with pytest.raises(StageError, match=rf"folder {tmp_path / 'nowhere'} does not exist\. Pass --dataset=idx:DIR with an existing folder"):
        data.plan_source(f"idx:{tmp_path / 'nowhere'}")
    gone = empty / "gone-images-idx3-ubyte"
    with pytest.raises(StageError, match=rf"Dataset 'x': cannot read IDX file {gone}: No such file"):  # in a worker
        data.open_reader(data.Source("x", "idx", str(empty)), {"images": str(gone)})


@pytest.mark.parametrize("image_size", [12, 16])
def test_ingest_idx_end_to_end(tmp_path, capsys, image_size):
    """Beam's DirectRunner over an idx: folder (12×12 kept, or resized to 16×16 as 28 → 32 is)."""
    folder = tmp_path / "idx"
    images, labels = write_set(folder, count=30, classes=3)
    out = run_ingest(tmp_path / "examples", dataset=f"idx:{folder}", limit=None, image_size=image_size, channels=None,
                     num_shards=1)
    stats = read_json(os.path.join(out, "stats.json"))
    assert (stats["num_train"], stats["num_eval"], stats["channels"], stats["image_size"]) == (27, 3, 1, image_size)
    assert (stats["num_classes"], stats["class_names"], stats["source"]) == (3, ["0", "1", "2"], f"idx:{folder}")
    seen = {}
    for split in ("train", "eval"):
        x, y, keys = data.load_examples(out, split, return_keys=True)
        seen.update({key: (image, label) for key, image, label in zip(keys, x, y)})
    assert sorted(seen) == [f"train/{i:06d}" for i in range(30)]
    for key, (image, label) in seen.items():
        i = int(key.split("/")[1])
        assert label == labels[i]
        np.testing.assert_array_equal(image, data.preprocess(images[i], image_size, 1))
    if image_size == 12:
        np.testing.assert_array_equal(seen["train/000007"][0][..., 0], images[7])  # unchanged at its own size
    assert "ingest: reading 30 images (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz)" in capsys.readouterr().out


# ---------------------------------------------------------------------------- fashion_mnist


def fashion_copies(tmp_path):
    """A fake Keras cache and a fake Debian folder (told apart by their pixels)."""
    keras_dir, debian_dir = tmp_path / "keras" / "datasets" / "fashion-mnist", tmp_path / "debian"
    write_set(keras_dir, "train", count=20, seed=1)
    write_set(keras_dir, "t10k", count=5, seed=2)
    write_set(debian_dir, "train", count=20, seed=3)
    return keras_dir, debian_dir


def absent():
    return False


def test_fashion_mnist_lookup_order(tmp_path):
    keras_dir, debian_dir = fashion_copies(tmp_path)
    downloads = []
    find = functools.partial(
        data.find_fashion_mnist, tfds_prepared=absent, download=lambda: downloads.append(1), environ={}
    )
    assert find(keras_dir=keras_dir, debian_dir=debian_dir) == data.FashionMnistCopy(
        "idx", str(keras_dir), f"Keras' cache at {keras_dir}"
    )
    assert find(keras_dir=tmp_path / "no_keras", debian_dir=debian_dir) == data.FashionMnistCopy(
        "idx", str(debian_dir), f"Debian's dataset-fashion-mnist at {debian_dir}"
    )
    assert downloads == []  # never while a copy is present
    assert data.find_fashion_mnist(keras_dir=keras_dir, debian_dir=debian_dir, tfds_prepared=lambda: True,
                                   download=False, environ={}).kind == "tfds"
    copy = find(keras_dir=tmp_path / "no_keras", debian_dir=tmp_path / "no_debian")
    assert (copy.kind, downloads) == ("tfds", [1])  # downloaded only when nothing else is there
    # Keras' folder with only the test files is no copy.
    (keras_dir / "train-images-idx3-ubyte.gz").unlink()
    assert find(keras_dir=keras_dir, debian_dir=debian_dir).folder == str(debian_dir)
    assert data.keras_fashion_mnist_dir({"KERAS_HOME": str(tmp_path / "keras")}) == str(keras_dir)
    assert data.keras_fashion_mnist_dir({}) == os.path.expanduser(os.path.join("~", ".keras", "datasets", "fashion-mnist"))


def test_fashion_mnist_found_nowhere_names_the_three_ways(tmp_path):
    keras_dir, debian_dir = tmp_path / "keras", tmp_path / "debian"
    debian_dir.mkdir()
    with pytest.raises(StageError) as info:
        data.find_fashion_mnist(keras_dir=keras_dir, debian_dir=debian_dir, tfds_prepared=absent, download=False, environ={})
    message = str(info.value)
    assert all(command in message for command in FASHION_COMMANDS)
    assert f"Keras' cache {keras_dir} does not exist" in message
    assert f"Debian's dataset-fashion-mnist {debian_dir} lacks train-images-idx3-ubyte[.gz]" in message
    assert "no download was tried" in message and "KDIFF_FASHION_MNIST_DIR" in message

    def offline():
        raise OSError("no network: cannot resolve its download host example.invalid")

    with pytest.raises(StageError, match=r"TFDS' download failed \(OSError: no network: cannot resolve"):
        data.find_fashion_mnist(keras_dir=keras_dir, debian_dir=debian_dir, tfds_prepared=absent, download=offline, environ={})


def test_fashion_mnist_environment_folder_is_the_only_place_looked_at(tmp_path):
    keras_dir, debian_dir = fashion_copies(tmp_path)
    env = {data.FASHION_MNIST_ENV: str(debian_dir)}
    copy = data.find_fashion_mnist(keras_dir=keras_dir, tfds_prepared=lambda: True, download=False, environ=env)
    assert (copy.kind, copy.folder) == ("idx", str(debian_dir))
    with pytest.raises(StageError, match=rf"\$KDIFF_FASHION_MNIST_DIR names {tmp_path / 'none'}, which does not exist"):
        data.find_fashion_mnist(environ={data.FASHION_MNIST_ENV: str(tmp_path / "none")})


def test_fashion_mnist_plans_its_training_images_with_its_class_names(tmp_path, monkeypatch):
    keras_dir, _ = fashion_copies(tmp_path)
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(keras_dir))
    plan = data.plan_source("fashion_mnist", limit=10, seed=0)
    assert (plan.source.kind, plan.source.spec, plan.source.name) == ("idx", "fashion_mnist", str(keras_dir))
    assert plan.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                "Bag", "Ankle boot"]
    assert (plan.num_classes, plan.default_channels) == (10, 1)
    assert sorted(r[2] for r in plan.records) == list(range(10))  # one per class
    assert all(key.startswith("train/") for key, _, _ in plan.records)  # the training split
    images = idx.read_idx(keras_dir / "train-images-idx3-ubyte.gz")
    reader = data.open_reader(plan.source, plan.options)
    (_, image, _), = reader(plan.records[0])
    np.testing.assert_array_equal(image, images[plan.records[0][1]])
    write_idx(keras_dir / "train-labels-idx1-ubyte.gz", np.full(20, 10, np.uint8))
    with pytest.raises(StageError, match=r"train-labels-idx1-ubyte.gz: expected labels 0\.\.9; received 10\."):
        data.plan_source("fashion_mnist")


def test_fashion_mnist_prepared_in_tfds_is_read_with_tfds(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    keras_dir, debian_dir = fashion_copies(tmp_path)
    monkeypatch.delenv(data.FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(data, "tfds_has_fashion_mnist", lambda: True)
    with tfds.testing.mock_data(num_examples=12):
        plan = data.plan_source("fashion_mnist", limit=5, limit_order="file_number")
    assert (plan.source.kind, plan.source.name, plan.records) == ("tfds", "fashion_mnist", [("train", 5, None)])
    assert plan.class_names == list(data.FASHION_MNIST_CLASSES)
    assert plan.origin == "tensorflow-datasets' prepared fashion_mnist"


def test_run_stops_before_any_stage_when_fashion_mnist_is_nowhere(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(data.FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(data, "find_fashion_mnist", functools.partial(
        data.find_fashion_mnist, keras_dir=tmp_path / "k", debian_dir=tmp_path / "d", tfds_prepared=absent,
        download=False,
    ))
    out = tmp_path / "run"
    code = run_lib.run(["--preset=tiny", f"--output_dir={out}", "--dataset=fashion_mnist"], save_main_session=False)
    err = capsys.readouterr().err
    assert code == 1
    assert "error: Dataset 'fashion_mnist' was found nowhere" in err
    assert all(command in err for command in FASHION_COMMANDS)
    assert sorted(os.listdir(out)) == [".lock", "config.json"]  # no stage ran
    code = run_lib.run(["--preset=tiny", f"--output_dir={out}", f"--dataset=idx:{tmp_path / 'no_idx'}"],
                       save_main_session=False)
    assert code == 1 and "does not exist. Pass --dataset=idx:DIR" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == [".lock", "config.json"]
