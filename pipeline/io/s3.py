"""Amazon S3's side of ``pipeline.io``: ``s3://bucket/key`` URLs, through boto3.

A "directory" is a key prefix: it exists when some key starts with ``<path>/``. A write is
one upload made after the local write it stages has succeeded, so an object appears
complete or not at all (Beam's own S3 file system commits a partial object when the writer
raises, and fails on an empty one). A rename is a copy and a delete; a stage's commit
uploads its local directory in place of the old tree — not atomic, which is safe because
readers trust an output only with its ``_DONE.json``, written last. The run lock is a lease
taken with conditional puts (``pipeline.io.locks``).

The client is boto3's: credentials and region from the environment or ``~/.aws``, the
endpoint from ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) for an S3-compatible server.
``pipeline.run`` sets those from Beam's ``--s3_*`` flags when they are given
(``environment_from_beam_flags``). Its timeouts and retries are bounded (``CLIENT_CONFIG``),
so that a dead endpoint fails a run in seconds rather than botocore's minutes; its errors
become ``OSError`` exceptions naming the URL (``os_error``, from ``pipeline.io.s3_errors``).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import io as stdio
import os
import posixpath
import shutil
import tempfile

from pipeline.io import locks
from pipeline.io.s3_errors import os_error

__all__ = [
    "atomic_directory", "copy", "copy_tree", "delete_if_match", "environment_from_beam_flags",
    "exclusive_lock", "exists", "file_sizes", "getsize", "glob", "isdir", "isfile", "listdir", "local_copy",
    "local_mirror", "local_output", "makedirs", "open_read", "os_error", "put_if_absent", "put_if_match",
    "read_with_etag", "remove", "remove_leftovers", "remove_tree", "replace", "shared_directory", "walk",
]

SCHEME = "s3://"
# the environment that configures boto3's client: a change makes a new client
_CLIENT_ENVIRONMENT = (
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
)
# botocore's client configuration: a connection is given 5 s, a read 30 s, a request 3
# attempts (botocore's defaults, 60 s, 60 s and 5 legacy attempts, keep a run on a dead or
# unreachable endpoint waiting for minutes before it fails)
CLIENT_CONFIG = {"connect_timeout": 5, "read_timeout": 30, "retries": {"mode": "standard", "max_attempts": 3}}
_MISSING = ("404", "NoSuchKey", "NotFound")
_CONFLICT = ("412", "PreconditionFailed", "409", "ConditionalRequestConflict")


# Beam's S3 flags (apache_beam.options.pipeline_options.S3Options) → boto3's variables
_BEAM_FLAGS = {
    "s3_endpoint_url": "AWS_ENDPOINT_URL_S3",
    "s3_access_key_id": "AWS_ACCESS_KEY_ID",
    "s3_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "s3_session_token": "AWS_SESSION_TOKEN",
    "s3_region_name": "AWS_DEFAULT_REGION",
}


def environment_from_beam_flags(beam_args):
    """The environment that points boto3 where Beam's ``--s3_*`` flags point Beam's S3 file
    system, so that one set of flags configures both (the pipeline sets it before a run;
    Beam's local workers inherit it).

    Args:
        beam_args: Beam's command-line flags.

    Returns:
        A dict variable → value, for the flags given (empty when none is).
    """
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options

    options = PipelineOptions(list(beam_args)).view_as(S3Options).get_all_options()
    return {variable: str(options[flag]) for flag, variable in _BEAM_FLAGS.items() if options.get(flag)}


def split(path):
    """``s3://bucket/a/b`` → ``("bucket", "a/b")`` (the key without a trailing ``/``).

    Raises:
        ValueError: not an ``s3://`` URL with a bucket.
    """
    path = os.fspath(path)
    if not path.startswith(SCHEME) or not path[len(SCHEME):].split("/", 1)[0]:
        raise ValueError(f"Expected an s3://bucket/key URL. Received: {path!r}")
    bucket, _, key = path[len(SCHEME):].partition("/")
    return bucket, key.strip("/")


def client():
    """boto3's S3 client for the current environment (one per configuration, reused: making
    one costs about 0.1 s)."""
    return _client(tuple(os.environ.get(name) for name in _CLIENT_ENVIRONMENT))


@functools.lru_cache(maxsize=4)
def _client(environment):
    del environment  # the cache key: boto3 reads the same variables itself
    try:
        import boto3
    except ImportError:
        raise ImportError(
            "Expected boto3 for an s3:// path (pip install 'kdiff[s3]'). Received: it is not installed."
        ) from None
    from botocore.config import Config

    return boto3.session.Session().client("s3", config=Config(**CLIENT_CONFIG))


def _code(error):
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def _client_error():
    from botocore.exceptions import ClientError

    return ClientError


def _not_found(path):
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


def _prefix(key):
    return f"{key}/" if key else ""


def _keys(path):
    """Every (key, size) under the "directory" ``path``."""
    bucket, key = split(path)
    pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=_prefix(key))
    for page in pages:
        for entry in page.get("Contents", ()):
            yield entry["Key"], entry["Size"]


# --------------------------------------------------------------------------- queries


def _head(path):
    bucket, key = split(path)
    if not key:
        return None
    try:
        return client().head_object(Bucket=bucket, Key=key)
    except _client_error() as error:
        if _code(error) in _MISSING:
            return None
        raise


def isfile(path):
    """Whether an object has the key ``path``."""
    return _head(path) is not None


def isdir(path):
    """Whether some key starts with ``<path>/`` (the bucket itself: whether it holds any)."""
    bucket, key = split(path)
    response = client().list_objects_v2(Bucket=bucket, Prefix=_prefix(key), MaxKeys=1)
    return response.get("KeyCount", 0) > 0


def exists(path):
    """Whether ``path`` is an object or a non-empty prefix."""
    return isfile(path) or isdir(path)


def file_sizes(top):
    """Every object under the "directory" ``top`` and its size, from one listing (a request
    per 1,000 keys).

    Returns:
        A dict relative path (``/``-separated) → bytes; empty when no key is there.
    """
    _, key = split(top)
    return {name[len(_prefix(key)):]: size for name, size in _keys(top)}


def getsize(path):
    """The size of the object ``path``, in bytes."""
    head = _head(path)
    if head is None:
        raise _not_found(path)
    return head["ContentLength"]


def listdir(path):
    """The names one level under ``path``, sorted.

    Raises:
        FileNotFoundError: no key starts with ``<path>/``.
    """
    bucket, key = split(path)
    prefix, names = _prefix(key), set()
    pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
    for page in pages:
        names.update(entry["Prefix"][len(prefix):].rstrip("/") for entry in page.get("CommonPrefixes", ()))
        names.update(entry["Key"][len(prefix):] for entry in page.get("Contents", ()))
    names.discard("")
    if not names:
        raise _not_found(path)
    return sorted(names)


def glob(directory, pattern):
    """The entries of ``directory`` whose names match ``pattern``, sorted."""
    try:
        names = listdir(directory)
    except FileNotFoundError:
        return []
    return [posixpath.join(directory, name) for name in names if fnmatch.fnmatchcase(name, pattern)]


def walk(top, follow_links=False):
    """The tree under ``top`` as ``os.walk`` yields it, top-down (prune in place).

    Args:
        top: the "directory".
        follow_links: unused (an object store has no links).

    Yields:
        ``(directory, subdirectory names, file names)``.
    """
    del follow_links
    bucket, key = split(top)
    tree = {}
    for name, _ in _keys(top):
        node = tree
        parts = name[len(_prefix(key)):].split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = None
    yield from _walk(top.rstrip("/"), tree)


def _walk(directory, node):
    subdirectories = sorted(name for name, child in node.items() if child is not None)
    files = sorted(name for name, child in node.items() if child is None)
    yield directory, subdirectories, files
    for name in subdirectories:
        yield from _walk(posixpath.join(directory, name), node[name])


# --------------------------------------------------------------------------- changes


def makedirs(path, exist_ok=True):
    """Nothing to create: a prefix exists once a key is written under it.

    Raises:
        FileExistsError: ``exist_ok`` is False and ``path`` exists.
    """
    if not exist_ok and exists(path):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)


def remove(path, missing_ok=False):
    """Deletes the object ``path``."""
    if not isfile(path):
        if missing_ok:
            return
        raise _not_found(path)
    bucket, key = split(path)
    client().delete_object(Bucket=bucket, Key=key)


def remove_tree(path, ignore_errors=False):
    """Deletes every object under ``<path>/``."""
    bucket, _ = split(path)
    keys = [name for name, _ in _keys(path)]
    if not keys and not ignore_errors:
        raise _not_found(path)
    for start in range(0, len(keys), 1000):
        batch = [{"Key": name} for name in keys[start:start + 1000]]
        client().delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


def copy(source, target):
    """Copies the object ``source`` to ``target`` (both in S3; the server copies)."""
    source_bucket, source_key = split(source)
    bucket, key = split(target)
    if not isfile(source):
        raise _not_found(source)
    client().copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": source_bucket, "Key": source_key})


def replace(source, target):
    """Moves the object ``source`` to ``target``: a copy, then a delete."""
    copy(source, target)
    remove(source)


def copy_tree(source, target):
    """Copies every object under ``source`` to the same key under ``target``."""
    _, source_key = split(source)
    keys = [name for name, _ in _keys(source)]
    if not keys:
        raise _not_found(source)
    bucket, _ = split(source)
    for name in keys:
        copy(f"{SCHEME}{bucket}/{name}", posixpath.join(target, name[len(_prefix(source_key)):]))


# --------------------------------------------------------------------------- reads and writes


# objects up to this size are read into memory; larger ones spill to a temporary file
SPOOL_BYTES = 64 << 20


def open_read(path, mode="rb"):
    """The object ``path`` as a seekable file: downloaded in 1 MiB chunks into memory, or
    into a temporary file past ``SPOOL_BYTES`` (a manifest hashes multi-gigabyte TFRecords).

    Args:
        path: the object.
        mode: ``"rb"``, or ``"r"`` for UTF-8 text.

    Returns:
        A file positioned at its start (a text wrapper for ``"r"``).
    """
    bucket, key = split(path)
    try:
        body = client().get_object(Bucket=bucket, Key=key)["Body"]
    except _client_error() as error:
        if _code(error) in _MISSING:
            raise _not_found(path) from None
        raise
    handle = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    for chunk in body.iter_chunks(1 << 20):
        handle.write(chunk)
    handle.seek(0)
    return handle if "b" in mode else stdio.TextIOWrapper(handle, encoding="utf-8")


def _upload(local, target):
    """Uploads the local file or tree ``local`` to ``target``."""
    bucket, key = split(target)
    if os.path.isdir(local):
        for root, _, names in os.walk(local):
            for name in names:
                relative = os.path.relpath(os.path.join(root, name), local).replace(os.sep, "/")
                client().upload_file(os.path.join(root, name), bucket, posixpath.join(key, relative))
    else:
        client().upload_file(local, bucket, key)


def _download(source, local):
    """Downloads the object or tree ``source`` to ``local``."""
    bucket, key = split(source)
    if isfile(source):
        client().download_file(bucket, key, local)
        return
    keys = [name for name, _ in _keys(source)]
    if not keys:
        raise _not_found(source)
    for name in keys:
        destination = os.path.join(local, *name[len(_prefix(key)):].split("/"))
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        client().download_file(bucket, name, destination)


@contextlib.contextmanager
def _scratch(path):
    """A temporary local folder, removed after the block, and the local name of ``path`` in it."""
    folder = tempfile.mkdtemp(prefix="kdiff-s3-")
    try:
        yield os.path.join(folder, posixpath.basename(os.fspath(path).rstrip("/")) or "root")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def local_copy(path):
    """A local copy of the object or tree ``path``, for libraries that read by name; removed
    after the block.

    Yields:
        The local path.
    """
    with _scratch(path) as local:
        _download(path, local)
        yield local


@contextlib.contextmanager
def local_output(path):
    """A local path whose file (or tree) is uploaded to ``path`` when the block ends;
    nothing is uploaded when it raises.

    Yields:
        The local path.
    """
    with _scratch(path) as local:
        yield local
        if os.path.lexists(local):
            _upload(local, path)


@contextlib.contextmanager
def atomic_directory(final_path):
    """A stage's commit: a local directory whose tree replaces ``final_path``'s when the
    block ends (the old objects deleted, the new uploaded); nothing changes when it raises.

    Yields:
        The local directory.
    """
    with _scratch(final_path) as local:
        os.makedirs(local)
        yield local
        remove_tree(final_path, ignore_errors=True)
        _upload(local, final_path)


@contextlib.contextmanager
def local_mirror(path):
    """A local copy of the tree at ``path`` (empty when there is none) that is written back
    when the block ends: every local file uploaded, every object no longer there locally
    deleted. Nothing is written back when the block raises.

    Yields:
        The local directory.
    """
    with _scratch(path) as local:
        os.makedirs(local)
        if isdir(path):
            _download(path, local)
        yield local
        bucket, key = split(path)
        kept = set()
        for root, _, names in os.walk(local):
            for name in names:
                kept.add(posixpath.join(key, os.path.relpath(os.path.join(root, name), local).replace(os.sep, "/")))
        stale = [{"Key": name} for name, _ in _keys(path) if name not in kept]
        for start in range(0, len(stale), 1000):
            client().delete_objects(Bucket=bucket, Delete={"Objects": stale[start:start + 1000], "Quiet": True})
        _upload(local, path)


@contextlib.contextmanager
def shared_directory(final_path):
    """``pipeline.io.shared_directory`` in S3: ``final_path`` itself, emptied first.

    Yields:
        ``final_path``.
    """
    remove_tree(final_path, ignore_errors=True)
    yield final_path


def remove_leftovers(final_path):
    """Nothing to remove: a commit leaves no hidden objects (it stages locally)."""
    del final_path


# --------------------------------------------------------------------------- conditional writes


def put_if_absent(path, data):
    """Creates the object ``path`` unless it exists (``If-None-Match: *``).

    Returns:
        The new object's ETag, or None when another object is there.
    """
    bucket, key = split(path)
    try:
        return client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")["ETag"]
    except _client_error() as error:
        if _code(error) in _CONFLICT:
            return None
        raise


def put_if_match(path, data, etag):
    """Replaces the object ``path`` if it is still the version ``etag`` (``If-Match``).

    Returns:
        The new ETag, or None when the object changed or is gone.
    """
    bucket, key = split(path)
    try:
        return client().put_object(Bucket=bucket, Key=key, Body=data, IfMatch=etag)["ETag"]
    except _client_error() as error:
        if _code(error) in _CONFLICT + _MISSING:
            return None
        raise


def read_with_etag(path):
    """The object's bytes and ETag, or None when it does not exist."""
    bucket, key = split(path)
    try:
        response = client().get_object(Bucket=bucket, Key=key)
    except _client_error() as error:
        if _code(error) in _MISSING:
            return None
        raise
    return response["Body"].read(), response["ETag"]


def delete_if_match(path, etag):
    """Deletes the object ``path`` if it is still the version ``etag``.

    Returns:
        True when this call deleted it.
    """
    bucket, key = split(path)
    try:
        client().delete_object(Bucket=bucket, Key=key, IfMatch=etag)
        return True
    except _client_error() as error:
        if _code(error) in _CONFLICT + _MISSING:
            return False
        raise


def exclusive_lock(path, record, seconds=locks.LEASE_SECONDS):
    """A lease on the lock object ``path`` (``pipeline.io.locks.lease``)."""
    return locks.lease(_this_module(), path, record, seconds)


def _this_module():
    import sys

    return sys.modules[__name__]
