"""Data sources, image preprocessing and the Examples artifact's readers.

Five sources, named by one string (``RunConfig.dataset``):

- ``"digits"``: scikit-learn's 1,797 handwritten 8×8 digits (labels 0–9), pixel values
  0..16 mapped to uint8 0..255 (``kdiff.digits.load_uint8``, the library's own loader).
  Ships inside scikit-learn: no network.
- ``"fashion_mnist"``: Fashion-MNIST's 60,000 *training* images (28×28 grayscale, 10
  classes named as in ``FASHION_MNIST_CLASSES``); its 10,000 test images are not read,
  since ingest holds out its own 10 % for evaluation. Read from the first copy present
  (``find_fashion_mnist``): (a) tensorflow-datasets' prepared ``fashion_mnist`` (in its
  data dir); (b) Keras' cache ``$KERAS_HOME/datasets/fashion-mnist`` (``~/.keras`` without
  ``KERAS_HOME``; what ``keras.datasets.fashion_mnist.load_data()`` writes); (c) Debian's
  package ``dataset-fashion-mnist`` (``FASHION_MNIST_DEBIAN_DIR``). (b) and (c) are IDX
  folders read like ``idx:``. Only when none is present does TFDS try to download it (at
  once skipped when its download host does not resolve, so an offline machine does not
  wait); failing that, the run stops before any stage runs, naming the three ways to get
  it (``FASHION_MNIST_HOWTO``). ``$KDIFF_FASHION_MNIST_DIR``, when set, names the only
  folder looked at (tests, shared copies). The TFDS copy and the IDX copies hold the same
  images in different orders (TFDS shuffles when it prepares), so a ``limit`` or the
  held-out split picks other images from each; keys are ``train/000017`` (IDX index) or
  ``train/000000017`` (TFDS order).
- ``"tfds:NAME[/CONFIG]"``: a TensorFlow Datasets dataset, its ``train`` split (or its
  first split when it has none). tensorflow-datasets downloads and prepares it once, on
  the machine that runs ingest (tensorflow-datasets 4.9.10 needs ``importlib_resources``
  for that, declared in setup.py). Labels come from the dataset's supervised keys
  (``as_supervised``) or a ``label`` class feature; without either they are −1.
- ``"folder:PATH"``: a folder of .png / .jpg / .jpeg / .bmp / .webp images (names
  starting with "." are ignored). Images in two or more immediate subfolders are
  labelled by their subfolder's index among the sorted names (Keras'
  ``image_dataset_from_directory`` convention); images directly in the folder (or in a
  single subfolder) are unlabelled (−1). A mix of loose and foldered images, or images in
  folders below a class folder, fails naming what was found (``folder_classes``).
- ``"idx:DIR"``: a folder of IDX files, MNIST's format (``pipeline.idx``): the images file
  ``PREFIX-images-idx3-ubyte[.gz]`` (uint8 [N, H, W]) and its labels
  ``PREFIX-labels-idx1-ubyte[.gz]`` (uint8 [N]); prefix ``train`` when the folder also has
  ``t10k`` files (or others), else its only prefix. Without a labels file the images are
  unlabelled (−1), and ingest says so; with one, the classes are ``0``..max label. Keys
  are ``PREFIX/INDEX`` (``train/000017``). A bad header, a type other than uint8, a
  truncated file or a label count other than the image count fails naming the file.

A source is planned in the driver (``plan_source``: list the files, prepare the TFDS
data, find the labels) into small picklable records, and read in Beam workers by a
reader opened once per worker (``open_reader``): one record per image for digits, IDX
files and folders (an image's index or path and its label; an IDX reader loads its array
once per worker), one record for a whole TFDS split (read as a stream, never all in memory).

``limit`` keeps N of the source's images, chosen by ``limit_order`` (``select``):

- ``"stratified"`` (the default): a seeded subset — with labels, each class keeps a
  share proportional to its size (largest remainders; at least one image per class when
  N ≥ the number of classes), the images of a class ranked by a hash of the seed and
  their key; without labels, the N smallest hashes. Same seed, same subset; a file
  added to the folder changes the subset only where it ranks.
- ``"file_number"``: the first N in numeric order of the number in the file name
  (``2.jpg`` before ``10.jpg``; the last number in the name; names without one follow,
  by path) — "the first 3,000 CelebA-HQ images by file number"; digits by index, TFDS
  by its split's order; IDX files and Fashion-MNIST by index.

``preprocess`` converts any mode to L or RGB (alpha composited over white), center-crops
to a square and resizes with Pillow's antialiased bicubic filter (Fashion-MNIST's 28×28
with ``image_size=32`` is resized, bicubic, not padded; ``image_size=28`` keeps it as it
is). Examples are
``tf.train.Example`` records with ``image`` (PNG bytes of uint8 H×W×C), ``label`` (int64,
−1 when unlabeled) and ``key`` (the record's stable source id, e.g. ``digits/000017`` or
a path relative to the folder). ``load_examples`` and ``make_dataset`` read them back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import re
from io import BytesIO

import numpy as np

from kdiff import checks
from kdiff import data as kdiff_data
from kdiff import digits as digits_lib
from pipeline import config as config_lib
from pipeline import idx as idx_lib
from pipeline import io
from pipeline.stages.base import StageError

SOURCE_FORMS = ("digits", "fashion_mnist", "tfds:NAME[/CONFIG]", "folder:PATH", "idx:DIR")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
STATS_FILE = "stats.json"
EVAL_FRACTION = 0.1


# ---------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True)
class Source:
    """A parsed dataset spec.

    Attributes:
        spec: the string as given.
        kind: "digits", "fashion_mnist", "tfds", "folder" or "idx".
        name: the TFDS name (with "/CONFIG") or the folder's absolute path; "" for digits
            and fashion_mnist.
    """

    spec: str
    kind: str
    name: str = ""


def parse_source(spec):
    """Parses ``"digits"``, ``"fashion_mnist"``, ``"tfds:NAME[/CONFIG]"``, ``"folder:PATH"`` or ``"idx:DIR"``.

    Args:
        spec: the dataset string.

    Returns:
        A ``Source``.

    Raises:
        StageError: for anything else, naming the spec and the accepted forms.
    """
    forms = ", ".join(repr(form) for form in SOURCE_FORMS)
    if not isinstance(spec, str):
        raise StageError(f"Unknown dataset {spec!r}: expected one of {forms}.")
    text = spec.strip()
    if text in ("digits", "fashion_mnist"):
        return Source(spec=spec, kind=text)
    if text.startswith("tfds:"):
        name = text[len("tfds:") :].strip().strip("/")
        if not name:
            raise StageError(f"Dataset {spec!r} names no TFDS dataset: expected 'tfds:NAME[/CONFIG]', e.g. 'tfds:cifar10'.")
        return Source(spec=spec, kind="tfds", name=name)
    if text.startswith("folder:"):
        path = text[len("folder:") :].strip()
        if not path:
            raise StageError(f"Dataset {spec!r} names no folder: expected 'folder:PATH', a folder of images.")
        return Source(spec=spec, kind="folder", name=io.abspath(os.path.expanduser(path)))  # a URL as it is
    if text.startswith("idx:"):
        path = text[len("idx:") :].strip()
        if not path:
            raise StageError(f"Dataset {spec!r} names no folder: expected 'idx:DIR', a folder of IDX files.")
        return Source(spec=spec, kind="idx", name=io.abspath(os.path.expanduser(path)))
    raise StageError(
        f"Unknown dataset {spec!r}: expected one of {forms} (e.g. 'digits', 'fashion_mnist', 'tfds:mnist', "
        "'folder:/data/faces', 'idx:/data/mnist')."
    )


@dataclasses.dataclass
class SourcePlan:
    """What the driver learned about a source, and the records the workers read.

    Attributes:
        source: the ``Source``.
        records: picklable records, in a deterministic order (digits and idx: ``(key,
            index, label)``; folder: ``(key, path, label)``; tfds: one ``(split, limit,
            indices)``, ``indices`` the sorted split indices of a stratified subset or None).
        num_classes: the source's number of classes, None when unlabeled.
        class_names: the class names or None.
        default_channels: the channels used when ``channels`` is None (digits, idx and
            fashion_mnist 1; tfds: 1 when its image feature is single-channel, else 3;
            folder: 3).
        options: reader options (picklable; tfds: name, split, feature keys; idx: the
            images file). TFDS data live in tensorflow-datasets' data dir
            (``TFDS_DATA_DIR`` or ~/tensorflow_datasets), which the workers share with
            the driver, as they share the paths of folders and IDX files.
        origin: where the data was found, for ingest's log ("" when the spec says it).
    """

    source: Source
    records: list
    num_classes: int | None
    class_names: list | None
    default_channels: int
    options: dict = dataclasses.field(default_factory=dict)
    origin: str = ""


def check_limit(limit):
    """``limit``: None (all) or an integer ≥ 1; ValueError otherwise (``RunConfig``'s check)."""
    return config_lib.check_field("limit", limit)


def subset_hash(seed, key):
    """A stable 64-bit hash of a record key under a seed: the rank of ``limit``'s subset.

    Salted apart from ingest's held-out split (``ingest.split_hash``), so the subset and
    the split are drawn independently.
    """
    return int.from_bytes(hashlib.sha256(f"limit/{int(seed)}/{key}".encode()).digest()[:8], "big")


def file_number(path):
    """The number in a file's name (its last run of digits), or None: ``img_0012.png`` → 12.

    Args:
        path: a file path (only its base name, without extension, is read).

    Returns:
        An int, or None when the name holds no digits.
    """
    stem = os.path.splitext(os.path.basename(str(path)))[0]
    numbers = re.findall(r"\d+", stem)
    return int(numbers[-1]) if numbers else None


def file_number_order(keys):
    """The indices of ``keys`` in numeric order of their file numbers (``2.jpg`` before ``10.jpg``).

    Names without a number follow the numbered ones; ties and those go by key.

    Args:
        keys: file paths (or keys).

    Returns:
        A list of indices into ``keys``.
    """
    def rank(i):
        number = file_number(keys[i])
        return (number is None, number if number is not None else 0, str(keys[i]))

    return sorted(range(len(keys)), key=rank)


def class_quotas(counts, limit):
    """How many of ``limit`` images each class keeps: shares proportional to ``counts``.

    Largest-remainder apportionment (ties by class order); when ``limit`` is at least
    the number of non-empty classes, every non-empty class keeps at least one.

    Args:
        counts: images per class (a sequence of ints ≥ 0).
        limit: the images to keep in all (at most ``sum(counts)``).

    Returns:
        A list of ints, one per class, summing to ``min(limit, sum(counts))``.
    """
    counts = [int(c) for c in counts]
    total = sum(counts)
    limit = min(int(limit), total)
    if total == 0:
        return [0] * len(counts)
    exact = [limit * c / total for c in counts]
    quotas = [int(e) for e in exact]
    by_remainder = sorted(range(len(counts)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in by_remainder[: limit - sum(quotas)]:
        quotas[i] += 1
    present = [i for i, c in enumerate(counts) if c > 0]
    if limit >= len(present):
        for i in present:
            if quotas[i] == 0:  # take one from the class that keeps the most
                donor = max(range(len(counts)), key=lambda j: (quotas[j], -j))
                quotas[donor] -= 1
                quotas[i] += 1
    return quotas


def select(keys, labels, limit, limit_order=config_lib.field_default("limit_order"), seed=config_lib.field_default("seed")):
    """Which records ``limit`` keeps (see the module docstring).

    Args:
        keys: the records' keys (folder: relative paths), in the source's order.
        labels: their int labels (−1: unlabeled), or None.
        limit: None (all) or an integer ≥ 1.
        limit_order: "stratified" or "file_number".
        seed: the seed of the stratified subset.

    Returns:
        A list of indices into ``keys``: the source's order for "stratified", numeric
        file order for "file_number"; every index when ``limit`` is None or ≥ the count.
    """
    limit = check_limit(limit)
    limit_order = config_lib.check_field("limit_order", limit_order)
    seed = config_lib.check_field("seed", seed)
    if limit_order == "file_number":
        order = file_number_order(keys)
        return order if limit is None else order[:limit]
    if limit is None or limit >= len(keys):
        return list(range(len(keys)))
    labels = [-1] * len(keys) if labels is None else [int(label) for label in labels]
    classes = sorted(set(labels))
    members = {c: [i for i, label in enumerate(labels) if label == c] for c in classes}
    quotas = class_quotas([len(members[c]) for c in classes], limit)
    chosen = []
    for c, quota in zip(classes, quotas):
        ranked = sorted(members[c], key=lambda i: (subset_hash(seed, keys[i]), i))
        chosen.extend(ranked[:quota])
    return sorted(chosen)


def describe_limit(limit, limit_order, seed):
    """A few words on what ``limit`` keeps, for the stage's log ("" without a limit)."""
    if limit is None:
        return ""
    if limit_order == "file_number":
        return f" (the first {limit} by file number)"
    return f" (a class-stratified subset of {limit}, seed {seed})"


def plan_source(source, limit=None, limit_order=config_lib.field_default("limit_order"),
                seed=config_lib.field_default("seed")):
    """Enumerates a source in the driver (no image is decoded here).

    ``limit`` keeps ``limit`` records chosen by ``limit_order`` (``select``); the records
    are listed in the source's own deterministic order: digits by index, folder files by
    sorted relative path (by file number for "file_number"), TFDS by its split's order,
    IDX files (and Fashion-MNIST's IDX copies) by index.

    Args:
        source: a ``Source`` or a dataset string.
        limit: None or an integer ≥ 1.
        limit_order: "stratified" or "file_number".
        seed: the seed of the stratified subset.

    Returns:
        A ``SourcePlan``.

    Raises:
        StageError: a missing or empty folder, an unknown or unpreparable TFDS dataset,
            a bad IDX file or folder, Fashion-MNIST found nowhere.
        ValueError: ``limit`` ≤ 0, an unknown ``limit_order``.
    """
    if isinstance(source, str):
        source = parse_source(source)
    limit = check_limit(limit)
    limit_order = config_lib.check_field("limit_order", limit_order)
    seed = config_lib.check_field("seed", seed)
    if source.kind == "digits":
        return _plan_digits(source, limit, limit_order, seed)
    if source.kind == "folder":
        return _plan_folder(source, limit, limit_order, seed)
    if source.kind == "tfds":
        return _plan_tfds(source, limit, limit_order, seed)
    if source.kind == "idx":
        return _plan_idx(source, limit, limit_order, seed)
    if source.kind == "fashion_mnist":
        return _plan_fashion_mnist(source, limit, limit_order, seed)
    raise StageError(f"Unknown source kind {source.kind!r} for dataset {source.spec!r}.")


def check_source(spec):
    """What can be checked about a source in a moment, before any stage runs.

    The form; that a folder or an IDX folder exists and (IDX) holds an images file;
    that Fashion-MNIST is present somewhere (``find_fashion_mnist``, which downloads it
    with TFDS only when no copy is present). TFDS names and the files' contents are
    checked by ``plan_source``, at ingest (before anything is written).

    Args:
        spec: the dataset string.

    Returns:
        The ``Source``.

    Raises:
        StageError: naming the dataset, what was expected and what to do.
    """
    source = parse_source(spec)
    if source.kind == "folder":
        _check_folder(source, "--dataset=folder:PATH with a folder of images")
    elif source.kind == "idx":
        _find_idx_set(source)
    elif source.kind == "fashion_mnist":
        find_fashion_mnist()
    return source


def digits_uint8(images):
    """scikit-learn digits pixel values 0..16 → uint8 0..255 (``kdiff.digits.to_uint8``)."""
    return digits_lib.to_uint8(images)


def _plan_digits(source, limit, limit_order, seed):
    _, labels = digits_lib.load_uint8(return_labels=True)
    keys = [f"digits/{i:06d}" for i in range(len(labels))]  # file number: the index
    records = [(keys[i], i, int(labels[i])) for i in select(keys, labels, limit, limit_order, seed)]
    return SourcePlan(source, records, num_classes=10, class_names=[str(i) for i in range(10)], default_channels=1)


def list_images(root):
    """Image files under ``root`` (recursively, following links once), as sorted relative POSIX paths."""
    found = []
    seen = set()
    for directory, subdirs, files in io.walk(root, follow_links=True):
        # a local folder's links, resolved: the cycle check (an object store has no links)
        real = directory if io.is_remote(directory) else os.path.realpath(directory)
        if real in seen:  # a link cycle
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            relative = os.path.relpath(os.path.join(directory, name), root)
            found.append(relative.replace(os.sep, "/"))
    return sorted(found)


def _check_folder(source, hint):
    """Fails unless ``source.name`` is an existing folder; ``hint`` says what to pass instead."""
    root = source.name
    if not io.exists(root):
        raise StageError(f"Dataset {source.spec!r}: folder {root} does not exist. Pass {hint.replace('a folder', 'an existing folder', 1)}.")
    if not io.isdir(root):
        raise StageError(f"Dataset {source.spec!r}: {root} is not a folder. Pass {hint}.")


def _plan_folder(source, limit, limit_order, seed):
    root = source.name
    _check_folder(source, "--dataset=folder:PATH with a folder of images")
    files = list_images(root)
    if not files:
        raise StageError(
            f"Dataset {source.spec!r}: no images found in {root}; expected {', '.join(IMAGE_EXTENSIONS)} files "
            "(searched recursively; put them in class subfolders for labels)."
        )
    # Labels come from the whole folder, so a limit does not change the class indices.
    class_names = folder_classes(source, root, files)
    labelled = class_names is not None
    index = {name: i for i, name in enumerate(class_names or ())}
    labels = [index[f.split("/", 1)[0]] for f in files] if labelled else [-1] * len(files)
    chosen = select(files, labels, limit, limit_order, seed)
    records = [(files[i], os.path.join(root, files[i]), labels[i]) for i in chosen]
    if labelled:
        return SourcePlan(source, records, num_classes=len(class_names), class_names=class_names, default_channels=3)
    return SourcePlan(source, records, num_classes=None, class_names=None, default_channels=3)


def folder_classes(source, root, files):
    """The class names of a folder source: its immediate subfolders, or None (unlabelled).

    Images directly in ``root`` are unlabelled; images in two or more immediate
    subfolders are labelled by their subfolder (Keras' ``image_dataset_from_directory``
    convention). A single subfolder is one class, so unlabelled too. Anything else is
    ambiguous and fails rather than guessing: images both loose in ``root`` and in
    subfolders, or images in folders below a class folder.

    Args:
        source: the parsed source (for the message).
        root: the folder.
        files: the images' paths relative to ``root`` ("/"-separated).

    Returns:
        The sorted class names, or None.

    Raises:
        StageError: on an ambiguous layout, saying what was found and what to pass.
    """
    loose = [f for f in files if "/" not in f]
    nested = sorted({posix_dirname(f) for f in files if f.count("/") > 1})
    if loose and len(loose) < len(files):
        raise StageError(
            f"Dataset {source.spec!r}: {len(loose)} image(s) lie directly in {root} (e.g. {loose[0]}) and "
            f"{len(files) - len(loose)} in subfolders; expected either class subfolders only (labelled) or "
            "no subfolders (unlabelled). Move the loose images into a class folder, or point --dataset "
            "at a folder of one kind."
        )
    if nested:
        tops = sorted({f.split("/", 1)[0] for f in files if f.count("/") > 1})
        raise StageError(
            f"Dataset {source.spec!r}: images lie in folders below the class folders of {root} "
            f"({', '.join(nested[:3])}{', …' if len(nested) > 3 else ''}); class folders must be the "
            f"immediate subfolders of the dataset folder and hold their images directly. Point "
            f"--dataset at the folder whose subfolders are the classes (e.g. "
            f"--dataset=folder:{os.path.join(root, tops[0])}), or flatten the class folders."
        )
    classes = sorted({f.split("/", 1)[0] for f in files if "/" in f})
    return classes if len(classes) >= 2 else None


def posix_dirname(path):
    return path.rsplit("/", 1)[0] if "/" in path else ""


# ---------------------------------------------------------------------------- IDX files and Fashion-MNIST

IDX_HINT = "--dataset=idx:DIR with a folder of IDX files"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_TFDS_NAME = "fashion_mnist"
FASHION_MNIST_KERAS_SUBDIR = os.path.join("datasets", "fashion-mnist")  # under Keras' home, as load_data writes it
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist (MIT licence)
FASHION_MNIST_ENV = "KDIFF_FASHION_MNIST_DIR"  # set: the only folder looked at
FASHION_MNIST_HOWTO = (
    ("tfds build fashion_mnist", "tensorflow-datasets prepares it in its data dir; downloads once"),
    ('python -c "import keras; keras.datasets.fashion_mnist.load_data()"', "Keras' cache; downloads once"),
    ("apt-get install dataset-fashion-mnist", f"Debian's package, into {FASHION_MNIST_DEBIAN_DIR}; MIT licence"),
)


def _find_idx_set(source):
    """``idx.find_idx_set`` of an idx source's folder, its errors as StageErrors naming the dataset."""
    _check_folder(source, IDX_HINT)
    try:
        return idx_lib.find_idx_set(source.name)
    except idx_lib.IdxError as error:
        raise StageError(f"Dataset {source.spec!r}: {error} Pass {IDX_HINT}.") from None


def read_idx_file(source, path, ndim):
    """``idx.read_idx(path, ndim)``, its errors as StageErrors naming the dataset and the file.

    Args:
        source: the ``Source`` (for the message).
        path: the IDX file.
        ndim: the dimensions expected (3: images, 1: labels).

    Returns:
        The read-only uint8 array.

    Raises:
        StageError: the file cannot be opened or is not a uint8 IDX file of ``ndim``
            dimensions (``idx.read_idx``'s checks).
    """
    try:
        return idx_lib.read_idx(path, ndim)
    except idx_lib.IdxError as error:
        raise StageError(f"Dataset {source.spec!r}: {error}") from None
    except OSError as error:
        raise StageError(f"Dataset {source.spec!r}: cannot read IDX file {path}: {error.strerror or error}.") from None


def idx_key(prefix, index):
    """The key of an IDX image: ``train/000017`` (its prefix and its index in the file)."""
    return f"{prefix}/{int(index):06d}"


def _plan_idx(source, limit, limit_order, seed, class_names=None, origin=None):
    """Plans an IDX folder (``source.name``): one ``(key, index, label)`` record per image.

    The images are read once here (their count, and every check of ``idx.read_idx``,
    before any worker starts) and once per worker by ``IdxReader``.

    Args:
        source: the ``Source`` (kind "idx").
        limit, limit_order, seed: as in ``plan_source``.
        class_names: the names of labels 0, 1, …, which then must be below their count
            (Fashion-MNIST's); None: "0" … the largest label.
        origin: what ingest logs as the data's origin (None: the files read).

    Returns:
        A ``SourcePlan`` (unlabelled, −1, when the folder has no labels file and
        ``class_names`` is None).

    Raises:
        StageError: a bad folder or file (named), a label count other than the image
            count, a label without a class name.
    """
    found = _find_idx_set(source)
    count = len(read_idx_file(source, found.images, 3))  # the array is dropped: workers read their own
    labels_name = f"{found.prefix}{idx_lib.LABELS_SUFFIX}[.gz]"
    labels = None if found.labels is None else read_idx_file(source, found.labels, 1)
    if labels is not None and len(labels) != count:
        raise StageError(
            f"Dataset {source.spec!r}: labels file {found.labels}: expected one label per image of "
            f"{found.images}, {count}; received {len(labels)}."
        )
    if class_names is not None:
        if labels is None:
            raise StageError(
                f"Dataset {source.spec!r}: expected a labels file {labels_name} beside {found.images}; received none."
            )
        if count and int(labels.max()) >= len(class_names):
            raise StageError(
                f"Dataset {source.spec!r}: labels file {found.labels}: expected labels 0..{len(class_names) - 1}; "
                f"received {int(labels.max())}."
            )
        class_names = list(class_names)
    elif labels is not None and count:
        class_names = [str(i) for i in range(int(labels.max()) + 1)]
    keys = [idx_key(found.prefix, i) for i in range(count)]
    label_list = [-1] * count if labels is None else [int(label) for label in labels]
    chosen = select(keys, None if labels is None else label_list, limit, limit_order, seed)
    records = [(keys[i], i, label_list[i]) for i in chosen]
    if origin is None:
        files = [os.path.basename(found.images)]
        files.append(os.path.basename(found.labels) if labels is not None else f"no {labels_name}: unlabelled")
        origin = ", ".join(files)
    num_classes = None if class_names is None else len(class_names)
    return SourcePlan(
        source, records, num_classes, class_names, default_channels=1, options={"images": found.images}, origin=origin
    )


def keras_fashion_mnist_dir(environ=None):
    """Keras' cache of Fashion-MNIST: ``$KERAS_HOME/datasets/fashion-mnist``, or
    ``~/.keras/datasets/fashion-mnist`` without ``KERAS_HOME`` (where Keras'
    ``get_file`` puts ``fashion_mnist.load_data()``'s files).

    Args:
        environ: the environment (None: ``os.environ``).

    Returns:
        The folder's path (it may not exist).
    """
    environ = os.environ if environ is None else environ
    home = environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, FASHION_MNIST_KERAS_SUBDIR)


@dataclasses.dataclass(frozen=True)
class FashionMnistCopy:
    """Where Fashion-MNIST was found (``find_fashion_mnist``).

    Attributes:
        kind: "tfds" (tensorflow-datasets' prepared copy) or "idx" (a folder of IDX files).
        folder: the IDX folder; "" for "tfds".
        description: which copy, for the log, e.g. "Debian's dataset-fashion-mnist at /usr/share/…".
    """

    kind: str
    folder: str
    description: str


def tfds_has_fashion_mnist():
    """Whether tensorflow-datasets' data dir holds a prepared ``fashion_mnist`` (it only looks: no network).

    Returns:
        A bool; False too when tensorflow-datasets is not installed or cannot read its data dir.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:  # pragma: no cover - a dependency
        return False
    try:
        return bool(tfds.builder(FASHION_MNIST_TFDS_NAME).is_prepared())
    except Exception:  # noqa: BLE001 (an unreadable data dir is no copy: the next place is looked at)
        return False


def download_fashion_mnist():
    """Downloads and prepares tensorflow-datasets' ``fashion_mnist`` in its data dir.

    Its download host is resolved first: offline, that fails at once, where TFDS' own
    download retries for minutes.

    Raises:
        OSError: the host does not resolve, or the download fails; TFDS' own errors.
    """
    import socket
    import urllib.parse

    import tensorflow_datasets as tfds

    url = getattr(tfds.builder_cls(FASHION_MNIST_TFDS_NAME), "URL", None)
    host = urllib.parse.urlparse(url).hostname if isinstance(url, str) else None
    if host:
        try:
            socket.getaddrinfo(host, None)
        except OSError as error:
            raise OSError(f"no network: cannot resolve its download host {host} ({error})") from None
    tfds.builder(FASHION_MNIST_TFDS_NAME).download_and_prepare()


def _fashion_mnist_files(folder):
    """A folder's state as a Fashion-MNIST copy: "" when it holds the training images and
    labels (IDX, gzipped or not), else what is wrong with it."""
    if not io.isdir(folder):
        return "does not exist"
    try:
        found = idx_lib.find_idx_set(folder)
    except (idx_lib.IdxError, OSError):
        found = None
    if found is None or found.prefix != "train" or found.labels is None:
        return f"lacks train{idx_lib.IMAGES_SUFFIX}[.gz] and train{idx_lib.LABELS_SUFFIX}[.gz]"
    return ""


def fashion_mnist_howto():
    """The message's lines on the three ways to get Fashion-MNIST (``FASHION_MNIST_HOWTO``)."""
    width = max(len(command) for command, _ in FASHION_MNIST_HOWTO)
    return "\n".join(f"  {command:<{width}}  ({what})" for command, what in FASHION_MNIST_HOWTO)


def find_fashion_mnist(keras_dir=None, debian_dir=None, tfds_prepared=None, download=True, environ=None):
    """The first copy of Fashion-MNIST present (see the module docstring for the order).

    With ``$KDIFF_FASHION_MNIST_DIR`` set, that folder is the only place looked at.
    Otherwise: TFDS' prepared copy, Keras' cache, Debian's folder; only when none is
    present, TFDS' download (``download``).

    Args:
        keras_dir: Keras' cache folder (None: ``keras_fashion_mnist_dir()``).
        debian_dir: Debian's folder (None: ``FASHION_MNIST_DEBIAN_DIR``).
        tfds_prepared: a callable () → bool, whether TFDS has a prepared copy (None:
            ``tfds_has_fashion_mnist``).
        download: True: ``download_fashion_mnist``; a callable () → None that downloads
            and prepares TFDS' copy, raising on failure; False: never download.
        environ: the environment (None: ``os.environ``).

    Returns:
        A ``FashionMnistCopy``.

    Raises:
        StageError: no copy anywhere (and no download), naming where it looked and the
            three ways to get it; or ``$KDIFF_FASHION_MNIST_DIR``'s folder lacks the files.
    """
    environ = os.environ if environ is None else environ
    override = environ.get(FASHION_MNIST_ENV, "").strip()
    if override:
        folder = os.path.abspath(os.path.expanduser(override))
        problem = _fashion_mnist_files(folder)
        if problem:
            raise StageError(
                f"Dataset 'fashion_mnist': ${FASHION_MNIST_ENV} names {folder}, which {problem}. Point it at a "
                f"folder of Fashion-MNIST's IDX files, or unset it to look in TFDS, Keras' cache and Debian's package."
            )
        return FashionMnistCopy("idx", folder, f"${FASHION_MNIST_ENV} at {folder}")
    tfds_prepared = tfds_has_fashion_mnist if tfds_prepared is None else tfds_prepared
    if tfds_prepared():
        return FashionMnistCopy("tfds", "", "tensorflow-datasets' prepared fashion_mnist")
    places = (
        ("Keras' cache", keras_fashion_mnist_dir(environ) if keras_dir is None else os.fspath(keras_dir)),
        ("Debian's dataset-fashion-mnist", FASHION_MNIST_DEBIAN_DIR if debian_dir is None else os.fspath(debian_dir)),
    )
    states = []
    for what, folder in places:
        problem = _fashion_mnist_files(folder)
        if not problem:
            return FashionMnistCopy("idx", folder, f"{what} at {folder}")
        states.append(f"{what} {folder} {problem}")
    download = download_fashion_mnist if download is True else download
    if download:
        try:
            download()
            return FashionMnistCopy("tfds", "", "tensorflow-datasets' fashion_mnist, downloaded now")
        except Exception as error:  # noqa: BLE001 (any failure: the message says how to get it)
            detail = (str(error).strip().splitlines() or [""])[0][:300]
            tried = f"TFDS' download failed ({type(error).__name__}: {detail})"
    else:
        tried = "no download was tried"
    raise StageError(
        f"Dataset 'fashion_mnist' was found nowhere: tensorflow-datasets has no prepared fashion_mnist, "
        f"{'; '.join(states)}; {tried}. Get it in one of three ways, then run again:\n{fashion_mnist_howto()}\n"
        f"(or set ${FASHION_MNIST_ENV} to a folder of its IDX files)."
    )


def _plan_fashion_mnist(source, limit, limit_order, seed):
    copy = find_fashion_mnist()
    if copy.kind == "tfds":
        tfds_source = Source(spec=source.spec, kind="tfds", name=FASHION_MNIST_TFDS_NAME)
        return dataclasses.replace(_plan_tfds(tfds_source, limit, limit_order, seed), origin=copy.description)
    idx_source = Source(spec=source.spec, kind="idx", name=copy.folder)
    return _plan_idx(idx_source, limit, limit_order, seed, class_names=FASHION_MNIST_CLASSES, origin=copy.description)


def _tfds_error(source, error, what):
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if len(detail) > 300:
        detail = detail[:300] + "…"
    return StageError(
        f"Dataset {source.spec!r}: {what}: {type(error).__name__}: {detail}. TFDS datasets download on first use "
        "(network access needed once; set TFDS_DATA_DIR for a prepared copy); see tfds.list_builders() for names."
    )


def _plan_tfds(source, limit, limit_order, seed):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # pragma: no cover - a dependency
        raise StageError(f"Dataset {source.spec!r} needs tensorflow-datasets: pip install tensorflow-datasets importlib_resources") from error
    try:
        builder = tfds.builder(source.name)
    except Exception as error:  # DatasetNotFoundError, config errors
        raise _tfds_error(source, error, "unknown TFDS dataset or config") from error
    try:
        builder.download_and_prepare()
    except Exception as error:
        raise _tfds_error(source, error, "could not download and prepare it") from error
    info = builder.info
    features = dict(info.features.items())
    image_features = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if not image_features:
        raise StageError(f"Dataset {source.spec!r} has no image feature (features: {sorted(features.keys())}); ingest needs images.")
    supervised = tuple(info.supervised_keys or ())
    as_supervised = (
        len(supervised) == 2
        and all(isinstance(k, str) for k in supervised)
        and isinstance(features[supervised[0]], tfds.features.Image)
        and isinstance(features.get(supervised[1]), tfds.features.ClassLabel)
    )
    if as_supervised:
        image_key, label_key = supervised
    else:
        image_key = "image" if "image" in image_features else image_features[0]
        label_key = "label" if isinstance(features.get("label"), tfds.features.ClassLabel) else None
    num_classes = class_names = None
    if label_key is not None:
        num_classes = int(features[label_key].num_classes)
        class_names = list(features[label_key].names)
    splits = list(info.splits.keys()) if info.splits else []
    split = "train" if ("train" in splits or not splits) else splits[0]
    shape = features[image_key].shape
    default_channels = 1 if (shape and shape[-1] == 1) else 3
    options = {
        "name": source.name,
        "split": split,
        "as_supervised": as_supervised,
        "image_key": image_key,
        "label_key": label_key,
    }
    indices = None
    if limit is not None and limit_order == "stratified":
        labels = _tfds_labels(source, options)
        indices = tuple(select([_tfds_key(split, i) for i in range(len(labels))], labels, limit, limit_order, seed))
    return SourcePlan(source, [(split, limit, indices)], num_classes, class_names, default_channels, options)


def _tfds_key(split, index):
    return f"{split}/{index:09d}"


def _tfds_load(source, options, split, skip_image_decoding=False):
    import tensorflow_datasets as tfds

    kwargs = {"split": split, "download": False}
    if skip_image_decoding:
        kwargs["decoders"] = {options["image_key"]: tfds.decode.SkipDecoding()}
    else:
        kwargs["as_supervised"] = options.get("as_supervised", False)
    try:
        return tfds.load(options.get("name", source.name), **kwargs)
    except Exception as error:
        raise _tfds_error(source, error, f"could not read split {split!r}") from error


def _tfds_labels(source, options):
    """Every label of the TFDS split, in its order (−1 without labels), images left undecoded."""
    import tensorflow_datasets as tfds

    label_key = options.get("label_key")
    dataset = _tfds_load(source, options, options["split"], skip_image_decoding=True)
    return [int(example[label_key]) if label_key else -1 for example in tfds.as_numpy(dataset)]


# ---------------------------------------------------------------------------- readers


def open_reader(source, options=None):
    """A reader for a source's records, opened once per Beam worker (``DoFn.setup``).

    Args:
        source: the plan's ``Source`` (``SourcePlan.source``: for fashion_mnist, the
            "idx" or "tfds" source of the copy found).
        options: ``SourcePlan.options``.

    Returns:
        A callable: record → iterator of ``(key, image, label)``, ``image`` a PIL image
        or a uint8 array.

    Raises:
        StageError: an unknown source kind; an IDX images file that cannot be read.
    """
    if source.kind == "digits":
        return DigitsReader()
    if source.kind == "folder":
        return FolderReader()
    if source.kind == "tfds":
        return TfdsReader(source, options or {})
    if source.kind == "idx":
        return IdxReader(source, options or {})
    raise StageError(f"Unknown source kind {source.kind!r} for dataset {source.spec!r}.")


class DigitsReader:
    """Reads digits by index (the 1,797 images load once, from scikit-learn)."""

    def __init__(self):
        self.images = digits_lib.load_uint8()

    def __call__(self, record):
        key, index, label = record
        yield key, self.images[index], label


class IdxReader:
    """Reads IDX images by index: the images file (``options["images"]``) loads once, here."""

    def __init__(self, source, options):
        self.images = read_idx_file(source, options["images"], 3)

    def __call__(self, record):
        key, index, label = record
        yield key, self.images[index], label


class FolderReader:
    """Reads image files; any unreadable file fails the run, naming it (data is never skipped)."""

    def __call__(self, record):
        key, path, label = record
        yield key, read_image_file(path), label


def read_image_file(path):
    """Opens an image file fully (EXIF orientation applied).

    Raises:
        StageError: the file is missing, truncated, corrupt or not an image.
    """
    from PIL import Image, ImageOps

    try:
        with io.local_copy(path) as local, Image.open(local) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            image.load()
            return image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise StageError(
            f"Cannot read image {path}: {type(error).__name__}: {error}. Fix or remove the file and run again "
            "(ingest never skips data silently)."
        ) from None


class TfdsReader:
    """Streams one TFDS split with tf.data, one example at a time: all of it, its first
    ``limit`` examples, or the members of a stratified subset (read up to the last one)."""

    def __init__(self, source, options):
        self.source = source
        self.options = dict(options)

    def __call__(self, record):
        import tensorflow_datasets as tfds

        split, limit, indices = record
        opts = self.options
        if indices is not None:  # a stratified subset: read up to its last index, keep its members
            wanted = frozenset(indices)
            read_split = f"{split}[:{max(indices) + 1}]" if indices else f"{split}[:0]"
        else:  # everything, or the first `limit`
            wanted = None
            read_split = split if limit is None else f"{split}[:{limit}]"
        dataset = _tfds_load(self.source, opts, read_split)
        if limit is not None and wanted is None:
            dataset = dataset.take(limit)
        for index, example in enumerate(tfds.as_numpy(dataset)):
            if wanted is not None and index not in wanted:
                continue
            if opts.get("as_supervised"):
                image, label = example
            else:
                image = example[opts["image_key"]]
                label = example[opts["label_key"]] if opts.get("label_key") else -1
            yield _tfds_key(split, index), np.asarray(image), int(label)


# ---------------------------------------------------------------------------- preprocessing


def _array_to_pil(array):
    from PIL import Image

    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 image. Received dtype={array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return Image.fromarray(array, "L")
    if array.ndim == 3 and array.shape[-1] in (2, 3, 4):
        mode = {2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[-1]]
        return Image.fromarray(np.ascontiguousarray(array), mode)
    raise ValueError(f"Expected an image of shape [H, W] or [H, W, C] with C in 1..4. Received shape={array.shape}")


def _to_l_or_rgb(image):
    """Any PIL mode → "L" or "RGB": palettes expanded, alpha composited over white, 16-bit scaled."""
    from PIL import Image

    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float grayscale
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0  # 0..65535 → 0..255
        elif mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        if not has_alpha:
            return image
        mode = "RGBA"
    if mode in ("LA", "La", "RGBa", "RGBA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def preprocess(image, image_size, channels, crop_size=None):
    """One image → uint8 [image_size, image_size, channels].

    Mode conversion: palette images are expanded; transparency (RGBA, LA, palettes with
    transparency) is composited over a white background; 16-bit grayscale is scaled to
    8 bits; CMYK / YCbCr convert to RGB; RGB → grayscale uses ITU-R 601 luma (Pillow's
    "L"), grayscale → RGB repeats the channel. Then the central square (side = the
    shorter side, or ``crop_size``) is cropped and resized to ``image_size`` with Pillow's
    bicubic filter, which is antialiased when shrinking; an image already of that size is
    unchanged. ``crop_size=140`` on CelebA's 178×218 images is NCSN's preprocessing (a
    centered 140×140 square, then 32×32 in the survey's 5.4.3).

    Args:
        image: a PIL image (any mode) or a uint8 array [H, W], [H, W, 1], [H, W, 3] or
            [H, W, 4].
        image_size: the output height and width.
        channels: 1 (grayscale) or 3 (RGB).
        crop_size: the side of the central square to crop (None: the shorter side); at
            most the shorter side.

    Returns:
        A uint8 array [image_size, image_size, channels].

    Raises:
        ValueError: an empty image, or a ``crop_size`` larger than its shorter side.
    """
    from PIL import Image

    checks.one_of(channels, "channels", (1, 3))
    image_size = checks.positive_int(image_size, "image_size")
    if not isinstance(image, Image.Image):
        image = _array_to_pil(image)
    image = _to_l_or_rgb(image)
    image = image.convert("L" if channels == 1 else "RGB")
    width, height = image.size
    side = min(width, height)
    if side < 1:
        raise ValueError(f"Expected a non-empty image. Received size={image.size}")
    if crop_size is not None:
        crop_size = checks.positive_int(crop_size, "crop_size")
        if crop_size > side:
            raise ValueError(
                f"Expected `crop_size` at most the image's shorter side ({side}). Received: crop_size={crop_size} "
                f"for an image of size {image.size}"
            )
        side = crop_size
    if (width, height) != (side, side):
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side != image_size:
        image = image.resize((int(image_size), int(image_size)), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    return np.ascontiguousarray(array)


# ---------------------------------------------------------------------------- examples


def encode_png(image):
    """uint8 [H, W, C] (C = 1 or 3) → PNG bytes."""
    from PIL import Image

    image = np.asarray(image, np.uint8)
    pil = Image.fromarray(image[..., 0], "L") if image.shape[-1] == 1 else Image.fromarray(image, "RGB")
    buffer = BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_example(key, image, label):
    """A serialized ``tf.train.Example``: ``image`` (PNG bytes), ``label`` (int64), ``key`` (bytes)."""
    import tensorflow as tf

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encode_png(image)])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "key": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(key).encode("utf-8")])),
    }
    # deterministic: the feature map in key order, the same bytes in every process (its order
    # otherwise follows the process's hashing)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def write_tfrecord(path, records):
    """Writes serialized records to one uncompressed TFRecord file (what ``tf.data.TFRecordDataset``
    and Beam's TFRecord sink read and write), through ``pipeline.io``: a URL's file too.

    Args:
        path: the file to produce (replaced whole, or left as it was when writing fails).
        records: the records' bytes, in the order to write them.

    Returns:
        How many records were written.
    """
    import tensorflow as tf

    count = 0
    with io.local_output(path) as local, tf.io.TFRecordWriter(local) as writer:
        for record in records:
            writer.write(record)
            count += 1
    return count


def decode_example(serialized):
    """The inverse of ``encode_example`` in plain Python: ``(key, uint8 image [H, W, C], label)``."""
    import tensorflow as tf
    from PIL import Image

    example = tf.train.Example.FromString(serialized)
    features = example.features.feature
    with Image.open(BytesIO(features["image"].bytes_list.value[0])) as pil:
        image = np.asarray(pil.convert("L") if pil.mode in ("L", "1", "P") else pil.convert("RGB"), np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    key = features["key"].bytes_list.value[0].decode("utf-8") if "key" in features else ""
    return key, image, int(features["label"].int64_list.value[0])


def example_files(examples_dir, split="train"):
    """The sorted ``<split>-*.tfrecord`` shards of an Examples directory."""
    if split not in ("train", "eval"):
        raise ValueError(f"Expected `split` in ('train', 'eval'). Received: split={split!r}")
    if not io.isdir(examples_dir):
        raise StageError(f"Examples directory {examples_dir} does not exist; run the ingest stage first.")
    files = io.glob(examples_dir, f"{split}-*.tfrecord")
    if not files:
        raise StageError(f"No {split}-*.tfrecord shards in {examples_dir}; run the ingest stage (again).")
    return files


def _read_stats(examples_dir):
    path = os.path.join(examples_dir, STATS_FILE)
    return io.read_json(path) if io.exists(path) else None


def _parse_fn(channels, image_size):
    import tensorflow as tf

    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "key": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, spec)
        image = tf.io.decode_png(example["image"], channels=channels or 0, dtype=tf.uint8)
        if channels and image_size:
            image = tf.ensure_shape(image, [image_size, image_size, channels])
        return image, example["label"], example["key"]

    return parse


def load_examples(examples_dir, split="train", return_keys=False):
    """All examples of a split, in memory, sorted by their source key (deterministic order).

    Args:
        examples_dir: an Examples artifact directory (ingest's output).
        split: "train" or "eval".
        return_keys: also return the source keys (str [N]).

    Returns:
        ``(images, labels)``: uint8 [N, H, W, C] and int64 [N] (and keys).
    """
    import tensorflow as tf

    files = example_files(examples_dir, split)
    stats = _read_stats(examples_dir) or {}
    channels, image_size = stats.get("channels"), stats.get("image_size")
    images, labels, keys = [], [], []
    try:
        with contextlib.ExitStack() as copies:  # TensorFlow reads local files (an object store's: copied)
            local = [copies.enter_context(io.local_copy(path)) for path in files]
            dataset = tf.data.TFRecordDataset(local).map(_parse_fn(channels, image_size), num_parallel_calls=tf.data.AUTOTUNE)
            for image, label, key in dataset.batch(1024).as_numpy_iterator():
                images.append(image)
                labels.append(label)
                keys.extend(k.decode("utf-8") for k in key)
    except tf.errors.OpError as error:  # a truncated shard, a bad PNG, a size that is not stats.json's
        raise StageError(
            f"Cannot read the {split} examples in {examples_dir}: {type(error).__name__}: {error.message.splitlines()[0]}. "
            "Rerun the ingest stage (--force)."
        ) from None
    if not keys:
        raise StageError(f"The {split} shards in {examples_dir} hold no examples; run the ingest stage (again).")
    images = np.concatenate(images)
    labels = np.concatenate(labels).astype(np.int64)
    order = np.argsort(np.asarray(keys, dtype=object), kind="stable")
    images, labels = images[order], labels[order]
    if return_keys:
        return images, labels, [keys[i] for i in order]
    return images, labels


def make_dataset(examples_dir, data_range, batch_size, split="train", shuffle_seed=None, with_labels=False, drop_remainder=False):
    """A ``tf.data.Dataset`` of float32 image batches scaled to ``data_range``.

    Args:
        examples_dir: an Examples artifact directory.
        data_range: ``(low, high)``: uint8 0 → low, 255 → high.
        batch_size: the batch size.
        split: "train" or "eval".
        shuffle_seed: None: the files' order; an int: a permutation of the whole split
            drawn by NumPy from this seed alone — the same order in every process,
            whatever TensorFlow's global seed (``Dataset.shuffle`` would mix its seed
            with it); a list of ints: one such permutation per seed, one after the
            other, each batched on its own (an epoch per seed: a partial last batch
            ends each epoch, so every epoch has the same batches as with its one seed).
            The split's serialized records are held in memory once for it, as a full
            shuffle buffer would hold them; the permutations are drawn as the dataset
            reaches them.
        with_labels: yield ``(images, labels)`` (int64) instead of images.
        drop_remainder: drop a last partial batch (of each epoch).

    Returns:
        The dataset (with a known cardinality when stats.json gives the split's size), with
        tf.data's autotuning off (``kdiff.data.without_autotuning``: its iterators end
        without waiting for the autotuner).
    """
    import tensorflow as tf

    batch_size = int(checks.positive_int(batch_size, "batch_size"))
    low, high = (float(v) for v in data_range)
    files = example_files(examples_dir, split)
    stats = _read_stats(examples_dir) or {}
    channels, image_size = stats.get("channels"), stats.get("image_size")
    count = stats.get(f"num_{split}")
    parse = _parse_fn(channels, image_size)
    scale = (high - low) / 255.0

    def convert(serialized):
        image, label, _ = parse(serialized)
        image = tf.cast(image, tf.float32) * scale + low
        return (image, label) if with_labels else image

    def batches(records):
        records = records.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
        return records.batch(batch_size, drop_remainder=drop_remainder)

    def finished(dataset):  # prefetched, its iterators ending without the autotuner's wait
        return kdiff_data.without_autotuning(dataset.prefetch(tf.data.AUTOTUNE))

    dataset = tf.data.TFRecordDataset(files)
    if count:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(int(count)))
    if shuffle_seed is None:
        return finished(batches(dataset))
    seeds = [int(shuffle_seed)] if np.ndim(shuffle_seed) == 0 else [int(seed) for seed in shuffle_seed]
    chunks = list(dataset.batch(4096))
    if not chunks:
        return finished(batches(dataset))
    records = tf.concat(chunks, axis=0)
    num_records = int(records.shape[0])

    def permutation(seed):
        return np.random.default_rng(int(seed)).permutation(num_records).astype(np.int64)

    def epoch(seed):
        order = tf.numpy_function(permutation, [seed], tf.int64, stateful=False)
        order = tf.ensure_shape(order, [num_records])
        return batches(tf.data.Dataset.from_tensor_slices(order).map(lambda index: tf.gather(records, index)))

    per_epoch = math.ceil(num_records / batch_size) if not drop_remainder else num_records // batch_size
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(seeds, tf.int64)).flat_map(epoch)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(per_epoch * len(seeds)))
    return finished(dataset)
