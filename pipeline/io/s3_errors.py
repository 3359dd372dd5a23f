"""boto3's and botocore's errors as the ``OSError`` a user reads: the S3 side of the one
mapping from a store's client errors to file errors.

``pipeline.io`` raises, for a failure of a store, an ``OSError`` whose ``filename`` is the
URL it was reading or writing, whose ``strerror`` says what failed in a line (the endpoint
that refused the connection, the bucket that does not exist, the credentials that were
refused) and whose errno says what kind of failure it is, so that Python builds the
matching subclass (``ConnectionRefusedError``, ``PermissionError``, ``FileNotFoundError``,
``TimeoutError``, ``ConnectionResetError``). ``pipeline.errors`` then writes one message with
advice by errno, as for a local disk's errors.
"""

from __future__ import annotations

import errno
import re
import urllib.parse

__all__ = ["os_error"]

# S3's error codes for refused credentials or a refused request
_DENIED = {
    "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "AccountProblem", "403",
}
_NO_OBJECT = {"NoSuchKey", "NotFound", "404"}
# where the run's S3 client takes its endpoint and credentials from (pipeline.run's --s3_* flags set them)
_ENDPOINT_SOURCES = "--s3_endpoint_url, AWS_ENDPOINT_URL_S3"
_CREDENTIAL_SOURCES = (
    "--s3_access_key_id / --s3_secret_access_key, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws "
    "(a Beam worker that a separate service started, as a worker pool's, reads its own environment, not the flags)"
)
# "[Errno 111] Connection refused" in urllib3's message of a failed connection
_SOCKET_ERROR = re.compile(r"\[Errno (-?\d+)\] ([^'\"\])]+)")


def os_error(error, path):
    """The ``OSError`` naming ``path`` for a boto3 or botocore error met while reading or
    writing it, or None for another error (left to propagate as it is).

    Args:
        error: the exception (boto3's transfer errors are read through to the client error
            they wrap).
        path: the ``s3://`` URL being read or written.

    Returns:
        An ``OSError`` (its errno's subclass) with ``filename=path``, or None.
    """
    try:
        from botocore import exceptions as botocore_errors
    except ImportError:
        return None
    error = _wrapped(error)
    if isinstance(error, botocore_errors.ClientError):
        return _client_error(error, path)
    if not isinstance(error, botocore_errors.BotoCoreError):
        return None
    endpoint = _endpoint(getattr(error, "kwargs", {}).get("endpoint_url"))
    if isinstance(error, (botocore_errors.ConnectTimeoutError, botocore_errors.ReadTimeoutError)):
        what = "accept a connection" if isinstance(error, botocore_errors.ConnectTimeoutError) else "answer"
        return OSError(errno.ETIMEDOUT, f"the S3 endpoint {endpoint} did not {what} in time", path)
    if isinstance(error, botocore_errors.EndpointConnectionError):
        code, reason = _socket_error(error)
        return OSError(code, f"could not connect to the S3 endpoint {endpoint} ({_ENDPOINT_SOURCES}): {reason}", path)
    if isinstance(error, (botocore_errors.ConnectionClosedError, botocore_errors.ResponseStreamingError,
                          botocore_errors.IncompleteReadError, botocore_errors.ConnectionError)):
        return OSError(errno.ECONNRESET, f"the connection to the S3 endpoint {endpoint} was lost mid-request", path)
    if isinstance(error, (botocore_errors.NoCredentialsError, botocore_errors.PartialCredentialsError,
                          botocore_errors.CredentialRetrievalError)):
        return OSError(errno.EACCES, f"no usable S3 credentials ({error}); set them with {_CREDENTIAL_SOURCES}", path)
    if isinstance(error, botocore_errors.FlexibleChecksumError):
        return OSError(errno.EIO, f"the object read does not match its checksum ({error})", path)
    return OSError(errno.EIO, f"S3 request failed: {error}", path)


def _wrapped(error):
    """The client or connection error inside boto3's and s3transfer's own errors
    (``S3UploadFailedError`` keeps it as its context, ``RetriesExceededError`` as
    ``last_exception``); any other error as it is."""
    while type(error).__module__.split(".")[0] in ("boto3", "s3transfer"):
        inner = getattr(error, "last_exception", None) or error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    return error


def _client_error(error, path):
    """An error the S3 server answered: the bucket missing, access refused, or another code."""
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    message = details.get("Message") or error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    if code == "NoSuchBucket":
        bucket = urllib.parse.urlsplit(path).netloc
        return OSError(errno.ENOENT, f"the bucket {bucket} does not exist (NoSuchBucket)", path)
    if code in _DENIED:
        return OSError(errno.EACCES, f"S3 refused the request ({code}: {message}); check the credentials "
                       f"({_CREDENTIAL_SOURCES}) and their permissions on the bucket", path)
    if code in _NO_OBJECT:
        return OSError(errno.ENOENT, f"no such object ({code})", path)
    return OSError(errno.EIO, f"S3 answered {code} to {error.operation_name}: {message}", path)


def _endpoint(url):
    """``scheme://host:port`` of a request's URL (the endpoint, without the bucket and key)."""
    if not url:
        return "(unknown)"
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _socket_error(error):
    """The errno and reason of a failed connection (from urllib3's message), else ECONNREFUSED."""
    match = _SOCKET_ERROR.search(str(getattr(error, "kwargs", {}).get("error", "")))
    if match is None:
        return errno.ECONNREFUSED, "connection failed"
    code = int(match.group(1))  # negative: a name-resolution failure (socket.gaierror)
    return (code if code > 0 else errno.EHOSTUNREACH), match.group(2).strip()
