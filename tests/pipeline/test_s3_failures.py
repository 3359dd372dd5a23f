"""A run on S3 (moto_server on 127.0.0.1) under failures: a store that cannot be used fails
the run before any stage, in seconds, naming the endpoint or bucket and what failed; an
object truncated or deleted after a run is named and its stage rerun with the stages after
it (the manifest hashes the objects' content); a store that goes away mid-stage fails the
run with one message naming the URL and commits nothing of the stage; a stage whose files
did not all reach the store is not recorded as done."""

import contextlib
import errno
import hashlib
import os
import io as stdio
import socket
import threading
import time
import uuid

import pytest
from conftest import MotoServer, TcpRelay
from ports import free_ports

from pipeline import io
from pipeline import run as run_lib
from pipeline.io import s3_errors
from pipeline.stages import base


def _run(output_dir, *args):
    """The command line in this process: (exit code, stdout)."""
    out = stdio.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_lib.run(["--preset=tiny", f"--output_dir={output_dir}", "--runner=DirectRunner", *args])
    return status, out.getvalue()


def _refused(output_dir, *args):
    """A run that must fail before any stage, with exit code 2: the seconds it took."""
    out, start = stdio.StringIO(), time.monotonic()
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stdout(out):
        run_lib.run(["--preset=tiny", f"--output_dir={output_dir}", "--runner=DirectRunner", *args])
    assert exit_info.value.code == 2 and "[ingest]" not in out.getvalue(), out.getvalue()
    return time.monotonic() - start


# ----------------------------------------------------------------------------- before any stage


def test_an_unreachable_endpoint_fails_before_any_stage_in_seconds(s3_server, monkeypatch, capsys):
    port = free_ports()[0]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", os.environ["AWS_ENDPOINT_URL_S3"])  # restored after the flag's
    output_dir = f"{s3_server}/unreachable"
    seconds = _refused(output_dir, f"--s3_endpoint_url=http://127.0.0.1:{port}")
    captured = capsys.readouterr()
    assert seconds < 20, seconds
    assert (
        f"error: --output_dir={output_dir}: cannot read or write {output_dir}: could not connect to the S3 endpoint "
        f"http://127.0.0.1:{port} (--s3_endpoint_url, AWS_ENDPOINT_URL_S3): Connection refused; the store cannot "
        "be reached" in captured.err
    ), captured.err
    assert "Traceback" not in captured.err


@pytest.mark.slow
def test_an_endpoint_that_drops_connections_fails_within_the_client_timeouts(s3_server, monkeypatch):
    """A listening socket whose backlog is full drops new connections, as a firewall does:
    botocore's defaults (60 s to connect, 5 attempts) would wait 5 minutes, the client's
    configuration (here with a 1 s connect timeout) a few seconds."""
    monkeypatch.setitem(io.s3.CLIENT_CONFIG, "connect_timeout", 1)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.create_server(("127.0.0.1", 0), backlog=0))
        port = server.getsockname()[1]
        for _ in range(3):  # fill the backlog; nothing is ever accepted
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
        start = time.monotonic()
        with pytest.raises(TimeoutError) as error:
            io.check_writable(f"{s3_server}/dropped")
        seconds = time.monotonic() - start
    assert seconds < 20, seconds  # 3 attempts of 1 s, and the backoff between them
    assert error.value.filename == f"{s3_server}/dropped"
    assert error.value.strerror == f"the S3 endpoint http://127.0.0.1:{port} did not accept a connection in time"


def test_a_missing_bucket_fails_before_any_stage(s3_server, capsys):
    _refused("s3://kdiff-no-such-bucket/run")
    err = capsys.readouterr().err
    assert (
        "error: --output_dir=s3://kdiff-no-such-bucket/run: cannot read or write s3://kdiff-no-such-bucket/run: "
        "the bucket kdiff-no-such-bucket does not exist (NoSuchBucket)" in err
    ), err
    assert "Traceback" not in err


def test_refused_and_missing_credentials_fail_before_any_stage(s3_server, monkeypatch, tmp_path, capsys):
    with MotoServer(INITIAL_NO_AUTH_ACTION_COUNT="0") as checking:  # checks every request's credentials
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", checking.endpoint)
        _refused(f"{s3_server}/refused")
    err = capsys.readouterr().err
    assert (
        f"--output_dir={s3_server}/refused: cannot read or write {s3_server}/refused: S3 refused the request "
        "(InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records.); check the "
        "credentials" in err
    ), err
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    _refused(f"{s3_server}/anonymous")
    err = capsys.readouterr().err
    assert "no usable S3 credentials (Unable to locate credentials); set them with --s3_access_key_id" in err, err


def test_client_errors_become_os_errors_naming_the_url():
    """The mapping itself, for the errors a store that goes away mid-request raises."""
    from boto3.exceptions import S3UploadFailedError
    from botocore import exceptions

    url, endpoint = "s3://b/run/train/model/x.h5", "http://127.0.0.1:9/b/run/train/model/x.h5?uploads"
    cases = [
        (exceptions.ReadTimeoutError(endpoint_url=endpoint), TimeoutError, "did not answer in time"),
        (exceptions.ConnectTimeoutError(endpoint_url=endpoint), TimeoutError, "did not accept a connection"),
        (exceptions.ConnectionClosedError(endpoint_url=endpoint), ConnectionResetError, "lost mid-request"),
        (exceptions.ResponseStreamingError(error="broken"), ConnectionResetError, "lost mid-request"),
        (exceptions.FlexibleChecksumError(error_msg="Expected checksum a did not match"), OSError, "its checksum"),
    ]
    for error, kind, text in cases:
        failure = s3_errors.os_error(error, url)
        assert isinstance(failure, kind) and failure.filename == url and text in failure.strerror, (error, failure)
    assert "http://127.0.0.1:9 did not" in s3_errors.os_error(cases[0][0], url).strerror  # the endpoint alone
    denied = exceptions.ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")
    try:
        try:
            raise denied
        except exceptions.ClientError as error:
            raise S3UploadFailedError(f"Failed to upload x to b/k: {error}")  # as boto3's upload_file does
    except S3UploadFailedError as error:
        failure = s3_errors.os_error(error, url)
    assert isinstance(failure, PermissionError)
    assert "S3 refused the request (AccessDenied: Access Denied)" in str(failure)
    other = exceptions.ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your rate"}}, "PutObject")
    assert s3_errors.os_error(other, url).errno == errno.EIO
    assert s3_errors.os_error(ValueError("not the store's"), url) is None
    assert s3_errors.os_error(FileNotFoundError(url), url) is None


def test_a_store_outage_reading_the_checkpoint_state_keeps_the_checkpoints(s3_server, monkeypatch):
    """An unreadable state.json is discarded with its checkpoints; one the store could not be
    asked for (a connection error) is not: the error propagates and the checkpoints stay."""
    from pipeline.stages.train import Checkpoints

    directory = f"{s3_server}/{uuid.uuid4().hex[:12]}/checkpoints"
    io.write_json(io.join(directory, "state.json"), {"weights": "ckpt-000000002.weights.h5", "key": "k"})
    io.write_bytes(io.join(directory, "ckpt-000000002.weights.h5"), b"weights")
    checkpoints = Checkpoints(directory, "k")
    assert checkpoints.read()["weights"] == "ckpt-000000002.weights.h5"

    def unreachable(path):
        raise OSError(errno.ECONNREFUSED, "could not connect to the S3 endpoint", path)

    monkeypatch.setattr(io, "read_json", unreachable)
    with pytest.raises(ConnectionRefusedError):
        checkpoints.read()
    assert io.listdir(directory) == ["ckpt-000000002.weights.h5", "state.json"]


# ----------------------------------------------------------------------------- manifests


def test_the_manifest_hashes_the_content_not_the_etag(s3_server, tmp_path):
    """A multipart upload's ETag is no content hash: the manifest streams the object."""
    from boto3.s3.transfer import TransferConfig

    directory = f"{s3_server}/{uuid.uuid4().hex[:12]}"
    data = bytes(range(256)) * (6 * 4096)  # 6 MiB: two parts of the 5 MiB minimum
    (tmp_path / "big.bin").write_bytes(data)
    bucket, key = io.s3.STORE.split(io.join(directory, "big.bin"))
    io.s3.STORE.client().upload_file(str(tmp_path / "big.bin"), bucket, key, Config=TransferConfig(
        multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
    assert io.s3.STORE.client().head_object(Bucket=bucket, Key=key)["ETag"].endswith('-2"')  # a multipart ETag
    record = base.manifest({"artifact": directory})
    assert record == {"artifact": {"big.bin": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}}}
    io.write_bytes(io.join(directory, "big.bin"), data[::-1])  # the same size, another content
    assert base.changed_file(record, {"artifact": directory}).endswith("has changed since it was written "
                                                                       "(its SHA-256 differs)")


def test_unwritten_file_checks_sizes_in_one_listing_per_tree(s3_server):
    directory = f"{s3_server}/{uuid.uuid4().hex[:12]}/model"
    for name, data in (("a.bin", b"12345"), ("sub/b.txt", b"hello"), ("sub/c.txt", b"")):
        io.write_bytes(io.join(directory, name), data)
    record = base.manifest({"model": directory})
    requests = []

    def count(request, **_):
        requests.append(request.url)

    events = io.s3.STORE.client().meta.events
    events.register("before-send.s3", count)
    try:
        assert base.unwritten_file(record, {"model": directory}) is None
    finally:
        events.unregister("before-send.s3", count)
    assert len(requests) == 1 and "list-type=2" in requests[0], requests  # no request per file
    io.write_bytes(io.join(directory, "a.bin"), b"1234")
    assert base.unwritten_file(record, {"model": directory}) == (
        f"{directory}/a.bin has 4 bytes, 5 in the stage's manifest")
    io.remove(io.join(directory, "sub", "c.txt"))
    io.write_bytes(io.join(directory, "a.bin"), b"12345")
    assert base.unwritten_file(record, {"model": directory}) == f"{directory}/sub/c.txt is missing"


# ----------------------------------------------------------------------------- after a run


@pytest.fixture(scope="module")
def staged_run(s3_server):
    """A tiny run's ingest, train and sample stages, completed in the bucket (tests copy it)."""
    output_dir = f"{s3_server}/failures-{uuid.uuid4().hex[:8]}"
    status, out = _run(output_dir, "--stages=ingest,train,sample")
    assert status == 0, out[-3000:]
    return output_dir


def _copy(staged_run, tmp_path):
    """A copy of the run under a new prefix, through the local disk: moto's server-side copy
    of a multipart object keeps a checksum its content then fails (moto 5.2)."""
    copy = f"{staged_run}-{uuid.uuid4().hex[:8]}"
    io.copy_tree(staged_run, str(tmp_path / "run"))
    io.copy_tree(str(tmp_path / "run"), copy)
    return copy


def _largest(directory):
    """The largest file under ``directory`` (a URL) and its size."""
    relative, size = max(io.file_sizes(directory).items(), key=lambda item: item[1])
    return io.join(directory, relative), size


@pytest.mark.slow
def test_a_truncated_model_reruns_train_and_the_stages_after_it(staged_run, tmp_path):
    output_dir = _copy(staged_run, tmp_path)
    model, size = _largest(io.join(output_dir, "train", "model"))
    io.write_bytes(model, io.read_bytes(model)[: size // 2])
    status, out = _run(output_dir, "--stages=ingest,train,sample")
    assert status == 0, out[-3000:]
    assert (f"[train] its output no longer matches what it wrote: {model} has {size // 2} bytes, {size} when it "
            "was written") in out
    assert "[ingest] cached" in out and "[train] running" in out
    assert "[sample] its input model has changed since it ran" in out and "[sample] running" in out
    # retrained: whole again (Keras' archive need not be byte for byte the old one, which is
    # why the samples made from the old model are not kept)
    done = io.read_json(io.join(output_dir, "train", base.DONE_FILE))
    assert done["files"]["model"][model.rsplit("/model/", 1)[1]]["size"] == io.getsize(model) > size // 2
    assert io.isfile(io.join(output_dir, "sample", base.DONE_FILE))


@pytest.mark.slow
def test_a_deleted_sample_file_reruns_sample(staged_run, tmp_path):
    output_dir = _copy(staged_run, tmp_path)
    samples, size = _largest(io.join(output_dir, "sample", "samples"))
    io.remove(samples)
    status, out = _run(output_dir, "--stages=ingest,train,sample")
    assert status == 0, out[-3000:]
    assert f"[sample] its output no longer matches what it wrote: {samples} is missing" in out
    assert "[ingest] cached" in out and "[train] cached" in out and "[sample] running" in out
    assert io.getsize(samples) == size


@pytest.mark.slow
def test_a_file_the_write_back_lost_fails_the_stage_without_a_record(staged_run, tmp_path, monkeypatch, capsys):
    """A staged stage whose write-back to the bucket silently drops a file fails naming it,
    and no _DONE.json is written. (The train stage's body is a stand-in that writes two
    files: what is tested is the orchestrator's check after the real write-back.)"""
    from pipeline.stages import train

    output_dir = _copy(staged_run, tmp_path)

    class Executor:
        def Do(self, inputs, outputs, params):  # noqa: N802 - the stages' interface
            os.makedirs(outputs["model"], exist_ok=True)
            for name in ("kept.bin", "lost.bin"):
                with open(os.path.join(outputs["model"], name), "wb") as f:
                    f.write(name.encode() * 100)

    mirror = io.local_mirror

    @contextlib.contextmanager
    def losing_mirror(path):
        with mirror(path) as local:
            yield local
            os.remove(os.path.join(local, "model", "lost.bin"))  # after the manifest, before the upload

    monkeypatch.setattr(train, "Executor", Executor)
    monkeypatch.setattr(io, "local_mirror", losing_mirror)
    status, out = _run(output_dir, "--stages=train", "--force")
    assert status == 1, out[-3000:]
    err = capsys.readouterr().err
    model = io.join(output_dir, "train", "model")
    assert f"error: train: {model}/lost.bin is missing: its output is incomplete after the stage ran" in err, err
    assert io.isfile(io.join(model, "kept.bin"))  # written back, yet not recorded as done
    assert not io.exists(io.join(output_dir, "train", base.DONE_FILE))
    # sample read the model being rewritten: its record no longer matches its input, so it reruns
    from pipeline import orchestrator
    from pipeline.stages import sample

    recorded = io.read_json(io.join(output_dir, "sample", base.DONE_FILE))["inputs"]["model"]
    assert recorded is not None and orchestrator.input_digests(output_dir, sample.SPEC)["model"] is None


# ----------------------------------------------------------------------------- mid-stage


@pytest.mark.slow
def test_the_store_going_away_mid_train_fails_the_run_and_commits_nothing(staged_run, tmp_path, monkeypatch, capsys):
    """The run talks to the bucket through a relay that goes away once training's first
    checkpoint is in the bucket (new connections refused, open ones cut), as a store's
    endpoint does in an outage: the run exits 1 with one line naming the URL and the
    endpoint. Behind the relay the bucket kept what it held: the ingest stage's record, the
    train stage's checkpoint, no record of the train stage and its old model untouched (a
    failed stage is not written back); with the relay back, the next run redoes the
    stage from its checkpoint (training for other steps than the copied run's)."""
    output_dir = _copy(staged_run, tmp_path)  # its ingest stage done
    flags = ("--stages=ingest,train", "--train_steps=20", "--checkpoint_every_steps=10", "--lease_seconds=2")
    state = io.join(output_dir, "train", "checkpoints", "state.json")
    model = io.file_sizes(io.join(output_dir, "train", "model"))  # the copied run's
    direct = os.environ["AWS_ENDPOINT_URL_S3"]
    relay = TcpRelay(int(direct.rsplit(":", 1)[1]))
    gone = []

    def go_away_at_the_first_checkpoint():
        deadline = time.monotonic() + 300
        while not io.exists(state) and time.monotonic() < deadline:
            time.sleep(0.1)
        relay.stop()
        gone.append(time.monotonic())

    with relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", relay.endpoint)
        watcher = threading.Thread(target=go_away_at_the_first_checkpoint, daemon=True)
        watcher.start()
        status, out = _run(output_dir, *flags)
        seconds = time.monotonic() - gone[0]
        watcher.join()
        err = capsys.readouterr().err
        assert status == 1 and "[ingest] cached" in out and "[train] running" in out, out[-3000:]
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: train: cannot read or write {output_dir}/train/"), err
        assert f"the S3 endpoint {relay.endpoint}" in errors[0], errors[0]
        assert errors[0].endswith("then rerun. Completed stages are kept."), errors[0]
        assert "Traceback" not in err and seconds < 60, (seconds, err)

        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", direct)  # the bucket, behind the relay
        assert io.isfile(io.join(output_dir, "ingest", base.DONE_FILE)) and io.isfile(state)
        assert not io.exists(io.join(output_dir, "train", base.DONE_FILE))
        assert io.file_sizes(io.join(output_dir, "train", "model")) == model  # a failed stage is not written back
        lock = io.join(output_dir, ".lock")  # the lease the run could not delete: the next run waits it out
        if io.exists(lock):
            time.sleep(max(0.0, io.read_json(lock)["expires"] - time.time()) + 0.5)

        relay.start()  # the store back, on the same endpoint
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", relay.endpoint)
        status, out = _run(output_dir, *flags)
        assert status == 0, out[-3000:]
        assert "[ingest] cached" in out and "[train] running" in out and "resuming from the checkpoint" in out
        assert io.isfile(io.join(output_dir, "train", base.DONE_FILE))
