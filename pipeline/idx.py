"""IDX files, the format of MNIST and Fashion-MNIST: one reader and the folder convention.

An IDX file is a header and then the array's values, big-endian, in C order:

- 2 zero bytes (the magic number's first half);
- 1 byte: the values' type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
  0x0E float64 (only 0x08, the type of MNIST's and Fashion-MNIST's images and labels,
  is read here);
- 1 byte: the number of dimensions D (3 for images [N, H, W], 1 for labels [N]);
- D unsigned 32-bit big-endian integers: the sizes of the dimensions;
- the values, exactly as many as the sizes multiply to.

A file may be gzipped (told by its first bytes, 1f 8b, not by its name). MNIST's
``train-images-idx3-ubyte`` starts ``00 00 08 03 00 00 ea 60 00 00 00 1c 00 00 00 1c``:
uint8, 3 dimensions, 60,000 × 28 × 28.

A folder of IDX files (``find_idx_set``) holds an images file
``PREFIX-images-idx3-ubyte`` and its labels ``PREFIX-labels-idx1-ubyte`` (each
optionally ``.gz``; when both a file and its ``.gz`` exist, the uncompressed one is
read), the layout of MNIST, Fashion-MNIST and Keras' cache of them: prefixes ``train``
and ``t10k``. The set read is ``train`` when there is one, else the only prefix; several
prefixes without ``train`` are an error naming them. Labels are optional here: a set
without its labels file has ``labels`` None, which the pipeline reads as unlabelled.

Errors are ``IdxError`` (a ``ValueError``) naming the file, what was expected and what
was found; a missing file is the ``OSError`` that opening it raises.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import zlib

import numpy as np

from pipeline import io

GZIP_MAGIC = b"\x1f\x8b"
UINT8 = 0x08
DTYPE_NAMES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
IMAGES_SUFFIX = "-images-idx3-ubyte"
LABELS_SUFFIX = "-labels-idx1-ubyte"
PREFERRED_PREFIX = "train"
_IMAGES_NAME = re.compile(r"^(?P<prefix>.+)" + re.escape(IMAGES_SUFFIX) + r"(?:\.gz)?$")


class IdxError(ValueError):
    """An IDX file or folder that cannot be read: the message names it, what was expected
    and what was found."""


def _read_bytes(path):
    """The file's bytes, decompressed when it starts with gzip's magic number."""
    raw = io.read_bytes(path)
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:  # a cut or damaged gzip stream
        raise IdxError(
            f"IDX file {path}: expected a complete gzip stream (it starts with gzip's magic number 1f 8b); "
            f"received a truncated or corrupt one ({type(error).__name__}: {error})."
        ) from None


def read_idx(path, ndim=None):
    """Reads a uint8 IDX file (gzipped or not) into an array of its header's shape.

    Args:
        path: the file.
        ndim: the number of dimensions expected (3 for images, 1 for labels); None: any.

    Returns:
        A read-only uint8 ``np.ndarray`` of the shape the header gives (e.g.
        [60000, 28, 28] for Fashion-MNIST's training images).

    Raises:
        IdxError: a file shorter than its header, a magic number that is not IDX's, a
            type other than uint8 (0x08), other than ``ndim`` dimensions, fewer values
            than the sizes multiply to (a truncated file) or more, a damaged gzip stream.
        OSError: the file cannot be opened.
    """
    path = os.fspath(path)
    content = _read_bytes(path)
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[3] == 0:
        seen = content[:4].hex(" ") if content else "an empty file"
        raise IdxError(
            f"IDX file {path}: expected an IDX header (00 00, a type code, the number of dimensions ≥ 1; "
            f"e.g. 00 00 08 03 for uint8 images); received {seen}."
        )
    code, dims = content[2], content[3]
    if code != UINT8:
        name = DTYPE_NAMES.get(code, "an unknown type")
        raise IdxError(f"IDX file {path}: expected type code 0x08 (uint8); received 0x{code:02X} ({name}).")
    if ndim is not None and dims != ndim:
        raise IdxError(f"IDX file {path}: expected {ndim} dimension(s); received {dims}.")
    header = 4 + 4 * dims
    if len(content) < header:
        raise IdxError(
            f"IDX file {path}: expected a {header}-byte header for {dims} dimension(s); received {len(content)} bytes."
        )
    shape = tuple(int(size) for size in np.frombuffer(content, ">u4", count=dims, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    received = len(content) - header
    if received != expected:
        what = "truncated" if received < expected else "longer than its header says"
        raise IdxError(
            f"IDX file {path}: expected {expected} bytes of values after the header (shape "
            f"{' × '.join(str(s) for s in shape)}); received {received} ({what})."
        )
    return np.frombuffer(content, np.uint8, offset=header).reshape(shape)


@dataclasses.dataclass(frozen=True)
class IdxSet:
    """One images file of an IDX folder and its labels file.

    Attributes:
        prefix: the files' common prefix, e.g. "train".
        images: the images file's path.
        labels: the labels file's path, or None when the folder has none for ``prefix``.
    """

    prefix: str
    images: str
    labels: str | None


def _pick(folder, stem):
    """``stem`` in ``folder``, else ``stem.gz``, else None (the uncompressed file first)."""
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if io.isfile(path):
            return path
    return None


def find_idx_set(folder):
    """The images file and labels file of an IDX folder (see the module docstring).

    Args:
        folder: the folder.

    Returns:
        An ``IdxSet``: prefix "train" when the folder has it, else its only prefix.

    Names starting with "." and folders are ignored.

    Raises:
        IdxError: no ``*-images-idx3-ubyte[.gz]`` file, or several prefixes none of
            which is "train" (the message names them).
        OSError: the folder cannot be listed (e.g. it does not exist).
    """
    folder = os.fspath(folder)
    names = [n for n in io.listdir(folder) if not n.startswith(".") and io.isfile(os.path.join(folder, n))]
    prefixes = sorted({m.group("prefix") for m in map(_IMAGES_NAME.match, names) if m})
    if not prefixes:
        near = [name for name in names if "idx" in name.lower()]
        seen = f"; found {', '.join(near[:5])}, which do not match" if near else ""
        raise IdxError(
            f"IDX folder {folder}: expected an images file PREFIX{IMAGES_SUFFIX}[.gz] (e.g. "
            f"train{IMAGES_SUFFIX}.gz) and its labels PREFIX{LABELS_SUFFIX}[.gz]; received no such file{seen}."
        )
    if PREFERRED_PREFIX in prefixes:
        prefix = PREFERRED_PREFIX
    elif len(prefixes) == 1:
        prefix = prefixes[0]
    else:
        raise IdxError(
            f"IDX folder {folder}: expected one set of images (or one named '{PREFERRED_PREFIX}'); received "
            f"{len(prefixes)}: {', '.join(p + IMAGES_SUFFIX for p in prefixes)}. Keep one set in the folder."
        )
    return IdxSet(prefix, _pick(folder, prefix + IMAGES_SUFFIX), _pick(folder, prefix + LABELS_SUFFIX))
