"""Amazon S3's side of ``pipeline.io``: ``s3://bucket/key`` URLs, through boto3.

The store-agnostic part (prefixes as directories, whole writes, commits, the lease) is
``pipeline.io.objects``; this module holds S3's primitives. The run lock's conditional
writes are S3's ``If-None-Match: *`` and ``If-Match`` on the ETag.

The client is boto3's with its standard configuration: credentials and region from the
environment or ``~/.aws``, the endpoint from ``AWS_ENDPOINT_URL_S3`` (or
``AWS_ENDPOINT_URL``) for an S3-compatible server. ``pipeline.run`` sets those from Beam's
``--s3_*`` flags when they are given (``environment_from_beam_flags``).
"""

from __future__ import annotations

from pipeline.io.objects import ObjectStore
from pipeline.io.s3_errors import os_error

__all__ = ["CLIENT_CONFIG", "STORE", "S3Store", "environment_from_beam_flags"]

# botocore's client configuration: a connection is given 5 s, a read 30 s, a request 3
# attempts (botocore's defaults, 60 s, 60 s and 5 legacy attempts, keep a run on a dead or
# unreachable endpoint waiting for minutes before it fails)
CLIENT_CONFIG = {"connect_timeout": 5, "read_timeout": 30, "retries": {"mode": "standard", "max_attempts": 3}}
_MISSING = ("404", "NoSuchKey", "NotFound")
_CONFLICT = ("412", "PreconditionFailed", "409", "ConditionalRequestConflict")
# S3's DeleteObjects takes at most this many keys a request
_DELETE_BATCH = 1000

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


def _code(error):
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def _client_error():
    from botocore.exceptions import ClientError

    return ClientError


class S3Store(ObjectStore):
    """``pipeline.io``'s functions for ``s3://`` URLs (``pipeline.io.objects``), through boto3."""

    scheme = "s3"
    client_environment = (
        "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
    )

    def new_client(self):
        """boto3's S3 client, configured from the environment (boto3's own variables).

        Raises:
            ImportError: boto3 is not installed, naming the extra that installs it.
        """
        try:
            import boto3
        except ImportError:
            raise ImportError(
                "Expected boto3 for an s3:// path (pip install 'kdiff[aws]'). Received: it is not installed."
            ) from None
        from botocore.config import Config

        return boto3.session.Session().client("s3", config=Config(**CLIENT_CONFIG))

    def os_error(self, error, path):
        """The ``OSError`` naming ``path`` for a boto3 / botocore error (``pipeline.io.s3_errors``)."""
        return os_error(error, path)

    def list_objects(self, bucket, prefix, limit=None):
        """``(key, size)`` of the objects whose keys start with ``prefix`` (at most ``limit``),
        page by page."""
        pagination = {"MaxItems": limit, "PageSize": limit} if limit else {}
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig=pagination)
        for page in pages:
            for entry in page.get("Contents", ()):
                yield entry["Key"], entry["Size"]

    def list_children(self, bucket, prefix):
        """The keys and sub-prefixes one level under ``prefix`` (``Delimiter="/"``)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        for page in pages:
            yield from (entry["Prefix"] for entry in page.get("CommonPrefixes", ()))
            yield from (entry["Key"] for entry in page.get("Contents", ()))

    def size(self, bucket, key):
        """The object's ``ContentLength`` (a HEAD request), or None when it is missing."""
        try:
            return self.client().head_object(Bucket=bucket, Key=key)["ContentLength"]
        except _client_error() as error:
            if _code(error) in _MISSING:
                return None
            raise

    def read_into(self, bucket, key, handle):
        """Writes the object into ``handle`` in 1 MiB chunks; False when it is missing."""
        try:
            body = self.client().get_object(Bucket=bucket, Key=key)["Body"]
        except _client_error() as error:
            if _code(error) in _MISSING:
                return False
            raise
        for chunk in body.iter_chunks(1 << 20):
            handle.write(chunk)
        return True

    def upload(self, local, bucket, key):
        """boto3's managed upload (multipart for large files)."""
        self.client().upload_file(local, bucket, key)

    def download(self, bucket, key, local):
        """boto3's managed download."""
        self.client().download_file(bucket, key, local)

    def copy_object(self, source_bucket, source_key, bucket, key):
        """A server-side copy (``CopyObject``)."""
        self.client().copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": source_bucket, "Key": source_key})

    def delete_keys(self, bucket, keys):
        """``DeleteObjects``, a thousand keys a request."""
        keys = list(keys)
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": name} for name in keys[start:start + _DELETE_BATCH]]
            self.client().delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})

    # ----------------------------------------------------------------------- conditional writes

    def put_if_absent(self, path, data):
        """``PutObject`` with ``If-None-Match: *``; the new ETag, or None when an object is there."""
        bucket, key = self.split(path)
        try:
            return self.client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")["ETag"]
        except _client_error() as error:
            if _code(error) in _CONFLICT:
                return None
            raise

    def put_if_match(self, path, data, etag):
        """``PutObject`` with ``If-Match: etag``; the new ETag, or None when it changed or is gone."""
        bucket, key = self.split(path)
        try:
            return self.client().put_object(Bucket=bucket, Key=key, Body=data, IfMatch=etag)["ETag"]
        except _client_error() as error:
            if _code(error) in _CONFLICT + _MISSING:
                return None
            raise

    def read_with_etag(self, path):
        """The object's bytes and ETag (one ``GetObject``), or None when it does not exist."""
        bucket, key = self.split(path)
        try:
            response = self.client().get_object(Bucket=bucket, Key=key)
        except _client_error() as error:
            if _code(error) in _MISSING:
                return None
            raise
        return response["Body"].read(), response["ETag"]

    def delete_if_match(self, path, etag):
        """``DeleteObject`` with ``If-Match: etag``; True when this call deleted it."""
        bucket, key = self.split(path)
        try:
            self.client().delete_object(Bucket=bucket, Key=key, IfMatch=etag)
            return True
        except _client_error() as error:
            if _code(error) in _CONFLICT + _MISSING:
                return False
            raise


# the store pipeline.io dispatches s3:// URLs to
STORE = S3Store()
