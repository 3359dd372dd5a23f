"""Google Cloud Storage's side of ``pipeline.io``: ``gs://bucket/key`` URLs, through
google-cloud-storage.

The store-agnostic part (prefixes as directories, whole writes, commits, the lease) is
``pipeline.io.objects``; this module holds GCS's primitives. The run lock's conditional
writes are GCS's preconditions on an object's generation: ``ifGenerationMatch=0`` creates
an object only where there is none, ``ifGenerationMatch=<generation>`` replaces or deletes
exactly that version.

The client is google-cloud-storage's with its standard configuration: credentials from
Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth
application-default login``, or the metadata server on Google Cloud), the project from
``GOOGLE_CLOUD_PROJECT``; ``STORAGE_EMULATOR_HOST`` points it at an emulator, which it
then reaches with anonymous credentials.
"""

from __future__ import annotations

import errno
import os

from pipeline.io.objects import ObjectStore

__all__ = ["GCSStore", "STORE"]


def _errors():
    """google-api-core's ``(NotFound, PreconditionFailed)``."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    return NotFound, PreconditionFailed


class GCSStore(ObjectStore):
    """``pipeline.io``'s functions for ``gs://`` URLs (``pipeline.io.objects``), through
    google-cloud-storage."""

    scheme = "gs"
    client_environment = (
        "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS", "API_ENDPOINT_OVERRIDE",
    )

    def new_client(self):
        """google-cloud-storage's client, configured from the environment.

        Raises:
            ImportError: google-cloud-storage is not installed, naming the extra that installs it.
        """
        try:
            from google.cloud import storage
        except ImportError:
            raise ImportError(
                "Expected google-cloud-storage for a gs:// path (pip install 'kdiff[gcp]'). Received: it is not "
                "installed."
            ) from None
        return storage.Client()

    def os_error(self, error, path):
        """The ``OSError`` naming ``path`` for a google-cloud-storage error: a missing object
        or bucket, refused credentials, an endpoint that cannot be reached; None otherwise."""
        try:
            from google.api_core import exceptions
            from google.auth.exceptions import DefaultCredentialsError
            from requests.exceptions import ConnectionError as RequestsConnectionError
        except ImportError:
            return None
        if isinstance(error, exceptions.NotFound):
            return FileNotFoundError(errno.ENOENT, f"not found in Google Cloud Storage ({error.message})", path)
        if isinstance(error, (exceptions.Forbidden, exceptions.Unauthorized, DefaultCredentialsError)):
            return PermissionError(
                errno.EACCES, f"Google Cloud Storage refused the credentials ({error}); set "
                "GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`", path,
            )
        if isinstance(error, RequestsConnectionError):
            where = os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com"
            return ConnectionRefusedError(errno.ECONNREFUSED, f"could not connect to {where} ({error})", path)
        return None

    def _blob(self, bucket, key):
        return self.client().bucket(bucket).blob(key)

    def list_objects(self, bucket, prefix, limit=None):
        """``(key, size)`` of the objects whose keys start with ``prefix`` (at most ``limit``),
        page by page."""
        yield from ((blob.name, blob.size) for blob in self.client().list_blobs(bucket, prefix=prefix, max_results=limit))

    def list_children(self, bucket, prefix):
        """The keys and sub-prefixes one level under ``prefix`` (``delimiter="/"``)."""
        blobs = self.client().list_blobs(bucket, prefix=prefix, delimiter="/")
        yield from (blob.name for blob in blobs)
        yield from blobs.prefixes  # filled in as the pages were read

    def size(self, bucket, key):
        """The object's size (its metadata), or None when it is missing."""
        blob = self.client().bucket(bucket).get_blob(key)
        return None if blob is None else blob.size

    def read_into(self, bucket, key, handle):
        """Streams the object into ``handle``; False when it is missing."""
        not_found, _ = _errors()
        try:
            self._blob(bucket, key).download_to_file(handle)
        except not_found:
            return False
        return True

    def upload(self, local, bucket, key):
        """One upload of the file (resumable in chunks when it is large)."""
        self._blob(bucket, key).upload_from_filename(local)

    def download(self, bucket, key, local):
        """Downloads the object to ``local``."""
        self._blob(bucket, key).download_to_filename(local)

    def copy_object(self, source_bucket, source_key, bucket, key):
        """A server-side copy: ``rewrite`` calls until the server says it is done (one for all
        but very large objects)."""
        source = self._blob(source_bucket, source_key)
        target = self._blob(bucket, key)
        token, _, _ = target.rewrite(source)
        while token is not None:
            token, _, _ = target.rewrite(source, token=token)

    def delete_keys(self, bucket, keys):
        """Deletes each object (a missing one is skipped)."""
        self.client().bucket(bucket).delete_blobs(list(keys), on_error=lambda blob: None)

    # ----------------------------------------------------------------------- conditional writes

    def put_if_absent(self, path, data):
        """An upload with ``ifGenerationMatch=0``; the new generation, or None when an object
        is there (a missing bucket raises ``NotFound``)."""
        _, precondition_failed = _errors()
        blob = self._blob(*self.split(path))
        try:
            blob.upload_from_string(data, if_generation_match=0)
        except precondition_failed:
            return None
        return blob.generation

    def put_if_match(self, path, data, etag):
        """An upload with ``ifGenerationMatch=etag`` (the generation); the new generation, or
        None when the object changed or is gone."""
        not_found, precondition_failed = _errors()
        blob = self._blob(*self.split(path))
        try:
            blob.upload_from_string(data, if_generation_match=etag)
        except (precondition_failed, not_found):
            return None
        return blob.generation

    def read_with_etag(self, path):
        """The object's bytes and generation (one download), or None when it does not exist."""
        not_found, _ = _errors()
        blob = self._blob(*self.split(path))
        try:
            data = blob.download_as_bytes()
        except not_found:
            return None
        return data, blob.generation  # the download's x-goog-generation

    def delete_if_match(self, path, etag):
        """A delete with ``ifGenerationMatch=etag``; True when this call deleted it."""
        not_found, precondition_failed = _errors()
        try:
            self._blob(*self.split(path)).delete(if_generation_match=etag)
        except (precondition_failed, not_found):
            return False
        return True


# the store pipeline.io dispatches gs:// URLs to
STORE = GCSStore()
