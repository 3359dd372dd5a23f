"""What every stage shares: its spec, artifact directories written atomically, fingerprints.

A stage is a ``StageSpec`` — typed inputs and outputs; its parameters, the config fields
that name it — plus an executor with ``Do(inputs, outputs, params)``, the shape of a TFX
component and executor, without TFX's channel machinery. ``inputs`` and ``outputs`` map
artifact names to directories; ``params`` is a dict: the orchestrator's is resolved once
(``pipeline.config.RunConfig.resolved``), a plain one (a test's) the stage resolves itself.
Tests call ``Do`` directly; ``pipeline.orchestrator`` runs them in order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from pipeline import config, io

# Artifact types: what a directory of each kind holds.
EXAMPLES = "Examples"  # data-*.tfrecord shards (image bytes + label) and stats.json
MODEL = "Model"  # export/ (SavedModel + config.json), checkpoint, history.json, logs/
SAMPLES = "Samples"  # <sampler>/samples.npz, grid.png, trajectory.png; timings.json
METRICS = "Metrics"  # metrics.json (FID, KID, classifier statistics), features.npz
RETRIEVAL = "Retrieval"  # retrieval.json, panels/*.png
REPORT = "Report"  # report.md, report.html, metrics.json, pictures

DONE_FILE = "_DONE.json"


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """A stage's interface.

    Attributes:
        name: the stage name, also its output directory under the run's output_dir.
        inputs: artifact name → artifact type read by the stage.
        outputs: artifact name → artifact type written by the stage.
        reads_urls: its executor reads and writes its inputs and outputs only through
            ``pipeline.io`` (its Beam workers too), so a run on an object store passes it
            the store's URLs; the others run on local folders the orchestrator stages.
    """

    name: str
    inputs: dict
    outputs: dict
    reads_urls: bool = False

    @property
    def parameters(self):
        """Names of the config fields the stage reads (its fingerprint): the ``RunConfig``
        fields that name this stage, so that a field declared for it needs no other edit.

        Returns:
            A tuple of field names (``pipeline.config.stage_parameters``).
        """
        return config.stage_parameters(self.name)


class StageError(RuntimeError):
    """A stage failed on bad input: the message says which source or file, and what to do."""


def fingerprint(spec, params, input_fingerprints):
    """A hash of a stage's parameters and its inputs' fingerprints (TFX-style caching).

    Args:
        spec: the ``StageSpec``.
        params: the stage's parameter values (JSON-serializable).
        input_fingerprints: fingerprints of the artifacts it reads.

    Returns:
        A hex string.
    """
    payload = json.dumps(
        {"stage": spec.name, "params": params, "inputs": input_fingerprints}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_done(directory):
    """The ``_DONE.json`` record of a completed stage output, or None."""
    path = io.join(directory, DONE_FILE)
    if not io.exists(path):
        return None
    return io.read_json(path)


def manifest(outputs):
    """What a stage wrote: every file of its output directories with its size and SHA-256,
    and for record files their record count (a TFRecord file's records, an ``.npz``
    file's rows: samples, features).

    Args:
        outputs: artifact name → directory.

    Returns:
        A dict artifact → {relative path → {"size": bytes, "sha256": hex[, "records": n]}}.
    """
    return {artifact: _files(directory) for artifact, directory in outputs.items()}


def _files(directory):
    files = {}
    for root, dirs, names in io.walk(directory):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            entry = {"size": io.getsize(path), "sha256": _sha256(path)}
            records = record_count(path)
            if records is not None:
                entry["records"] = records
            files[os.path.relpath(path, directory)] = entry
    return files


def record_count(path):
    """How many records a file holds: a ``.tfrecord`` file's records, an ``.npz`` file's
    rows (the first dimension its arrays share), else None.

    Args:
        path: the file.

    Returns:
        The count, or None for other files (and for an ``.npz`` whose arrays disagree).

    Raises:
        ValueError: a TFRecord file whose framing is cut short (a truncated file).
    """
    if path.endswith(".tfrecord"):
        return _tfrecord_count(path)
    if path.endswith(".npz"):
        arrays = io.read_npz(path)
        rows = {array.shape[0] if array.ndim else None for array in arrays.values()}
        return rows.pop() if len(rows) == 1 else None
    return None


def _tfrecord_count(path):
    """Counts a TFRecord file's records by its framing (each record: a little-endian uint64
    length, a 4-byte CRC, the data, a 4-byte CRC), seeking past the data."""
    import struct

    count, size = 0, io.getsize(path)
    with io.open_read(path) as f:
        while f.tell() < size:
            header = f.read(12)
            if len(header) < 12:
                raise ValueError(f"{path}: a TFRecord header is cut short at byte {size - len(header)}")
            (length,) = struct.unpack("<Q", header[:8])
            end = f.tell() + length + 4
            if end > size:
                raise ValueError(f"{path}: record {count} runs past the end of the file (truncated)")
            f.seek(end)
            count += 1
    return count


def _sha256(path):
    digest = hashlib.sha256()
    with io.open_read(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unwritten_file(recorded, outputs):
    """The first file of a fresh ``manifest`` that is not where the stage wrote it, or None:
    checked before the stage's ``_DONE.json`` is written, against a runner or an upload that
    lost a file without an error.

    Sizes only, from one listing per output directory (``pipeline.io.file_sizes``): the
    content was hashed moments ago, and reading it back from an object store would cost
    another download of every output.

    Args:
        recorded: ``manifest(outputs)`` as the stage's run computed it (on the folders it
            wrote, which are local ones for a stage staged through them).
        outputs: artifact name → directory in the run's store.

    Returns:
        None when every file is there with its size; else a message naming the file.
    """
    for artifact, directory in outputs.items():
        present = io.file_sizes(directory)
        for relative, record in recorded.get(artifact, {}).items():
            size = present.get(relative.replace(os.sep, "/"))
            if size is None:
                return f"{io.join(directory, relative)} is missing"
            if size != record["size"]:
                return f"{io.join(directory, relative)} has {size} bytes, {record['size']} in the stage's manifest"
    return None


def changed_file(recorded, outputs):
    """The first way the files on disk differ from a ``manifest`` record, or None.

    Args:
        recorded: ``manifest(outputs)`` as written when the stage completed (None: a record
            from before manifests, not checked).
        outputs: artifact name → directory.

    Returns:
        None when every recorded file is there with its size and checksum, and no file was
        added; else a message naming the file and what differs.
    """
    if recorded is None:
        return None
    for artifact, directory in outputs.items():
        expected = recorded.get(artifact, {})
        if not io.isdir(directory):
            return f"{directory} is missing"
        for relative, record in expected.items():
            path = os.path.join(directory, relative)
            if not io.isfile(path):
                return f"{path} is missing"
            size = io.getsize(path)
            if size != record["size"]:
                return f"{path} has {size} bytes, {record['size']} when it was written"
            if _sha256(path) != record["sha256"]:
                return f"{path} has changed since it was written (its SHA-256 differs)"
        for root, _, names in io.walk(directory):
            for name in names:
                relative = os.path.relpath(os.path.join(root, name), directory)
                if relative not in expected:
                    return f"{os.path.join(root, name)} was not written by the stage"
    return None
