"""The pipeline on Beam's other runners: the same config and seed give the same outputs.

The reference is the tiny preset's ingest → train → sample → evaluate on the in-process
DirectRunner. The DirectRunner with two worker processes, and Beam's portable runner —
its own job service and a pool of SDK workers, each a separate process, writing the run
into an S3 bucket — must give the same bytes: the ingest shards, every sample file
(``samples.npz``, ``grid.png``, ``trajectory.png``) and ``features.npz`` / ``metrics.json``.
Their runs train nothing: once their ingest has run, the reference's train stage, which
runs no Beam, is copied in, and the orchestrator finds it matching and skips it.
On Dataflow each Beam stage's job is built and checked offline (``--dry_run``: Beam
translates the pipeline into the job it would submit, and stops there).
"""

import contextlib
import io as stdio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from paths import REPO
from ports import free_ports

from pipeline import io
from pipeline import run as run_lib

STAGES = "ingest,train,sample,evaluate"
# Files whose bytes carry a clock or a machine's speed: the sampling times, the classifier's
# .keras zip (its entries' timestamps)
UNSTABLE = {"sample": {"timings.json"}, "evaluate": {"classifier.keras"}}


def _run(output_dir, *flags, stages=STAGES):
    out = stdio.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_lib.run(["--preset=tiny", f"--output_dir={output_dir}", f"--stages={stages}", *flags])
    assert status == 0, out.getvalue()[-3000:]
    return out.getvalue()


def _run_beam_stages(reference, output_dir, *flags):
    """A run into ``output_dir`` that trains nothing: ingest, then the reference's train
    stage copied in (its record and model: it matches the config and the ingest, so the
    orchestrator skips it), then sample and evaluate."""
    assert "[ingest] running" in _run(output_dir, *flags, stages="ingest")
    io.copy_tree(os.path.join(reference, "train"), io.join(output_dir, "train"))
    out = _run(output_dir, *flags)
    assert "[ingest] cached" in out and "[train] cached" in out
    assert "[sample] running" in out and "[evaluate] running" in out
    return output_dir


def _written(output_dir, stage):
    """What a stage wrote, by its _DONE.json manifest: relative path → SHA-256."""
    files = io.read_json(io.join(output_dir, stage, "_DONE.json"))["files"]
    return {
        f"{artifact}/{path}": entry["sha256"]
        for artifact, entries in files.items()
        for path, entry in entries.items()
        if os.path.basename(path) not in UNSTABLE.get(stage, ())
    }


def assert_same_outputs(reference, other):
    """The same ingest shards, samples and metrics, byte for byte (``UNSTABLE`` aside)."""
    metrics = [io.read_json(io.join(run, "evaluate", "metrics", "metrics.json")) for run in (reference, other)]
    assert metrics[0] == metrics[1]  # FIDs, KIDs, … (the readable failure first)
    for stage in ("ingest", "sample", "evaluate"):
        expected, written = _written(reference, stage), _written(other, stage)
        assert expected and sorted(written) == sorted(expected), stage
        differ = sorted(path for path in expected if written[path] != expected[path])
        assert not differ, f"{stage}: {differ} differ from the in-process DirectRunner's"
    assert any(path.endswith("samples.npz") for path in _written(reference, "sample"))


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory):
    """The reference run: the in-process DirectRunner (the command line's default)."""
    directory = str(tmp_path_factory.mktemp("direct"))
    _run(directory)
    return directory


@pytest.mark.slow
def test_direct_runner_with_worker_processes_gives_the_same_outputs(direct_run, tmp_path):
    _run_beam_stages(direct_run, str(tmp_path), "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert_same_outputs(direct_run, str(tmp_path))


# ----------------------------------------------------------------------------- PortableRunner


def _wait(process, ready, what, log):
    deadline = time.monotonic() + 120
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}: {log.read_text()[-2000:]}")
        assert time.monotonic() < deadline, f"{what} did not start within 120 s: {log.read_text()[-2000:]}"
        time.sleep(0.2)


def _answers(port):
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _stop(process):
    """Stops a service started in a session of its own, with what it started (the pool's
    workers): SIGTERM to its process group, SIGKILL after 20 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def beam_services(s3_server, tmp_path_factory):
    """Beam's job service and a pool of SDK workers, each a process of its own on 127.0.0.1.

    The pool (``worker_pool_main``) starts each SDK worker as a process of its own, with the
    pool's environment: that is where the workers find the bucket's endpoint and
    credentials (``s3_server`` set them in this process's environment). Beam's ``--s3_*``
    flags do not reach them: such a worker is started without the pipeline's options.

    Yields:
        ``(the runner's flags, the pool's log file)``.
    """
    assert os.environ.get("AWS_ENDPOINT_URL_S3"), "s3_server sets the environment the workers need"
    logs = tmp_path_factory.mktemp("beam_services")
    # `python` on the PATH is what the pool runs its workers with: this interpreter
    environment = dict(os.environ, PYTHONPATH=REPO, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    port_file = logs / "job_service.port"
    job_log, pool_log = logs / "job_service.log", logs / "worker_pool.log"
    (pool_port,) = free_ports()
    with open(job_log, "wb") as job_out, open(pool_log, "wb") as pool_out:
        job_service = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port=0",
             f"--port_file={port_file}"], cwd=REPO, env=environment, stdout=job_out, stderr=subprocess.STDOUT,
            start_new_session=True)
        pool = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
            cwd=REPO, env=environment, stdout=pool_out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(job_service, port_file.exists, "the job service", job_log)
        _wait(pool, lambda: _answers(pool_port), "the worker pool", pool_log)
        flags = ["--runner=PortableRunner", f"--job_endpoint=localhost:{port_file.read_text().strip()}",
                 "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}"]
        yield flags, pool_log
    finally:
        _stop(pool)
        _stop(job_service)


@pytest.mark.slow
def test_portable_runner_with_sdk_workers_in_a_pool_writes_the_same_run_into_the_bucket(
    direct_run, beam_services, s3_server
):
    flags, pool_log = beam_services
    output_dir = _run_beam_stages(direct_run, f"{s3_server}/portable", *flags)
    assert "Starting worker with command" in pool_log.read_text()  # the SDK workers ran in the pool's processes
    assert not io.exists(io.join(output_dir, "sample", "samples", "_work"))
    assert_same_outputs(direct_run, output_dir)


# ----------------------------------------------------------------------------- DataflowRunner


@pytest.fixture
def dataflow_options(monkeypatch):
    """Dataflow's options with ``--dry_run``: Beam builds and checks the job, submits nothing."""
    pytest.importorskip("google.cloud.dataflow", reason="Beam's Dataflow client: pip install -e '.[test]'")
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setenv("NO_GCE_CHECK", "True")
    return PipelineOptions([
        "--runner=DataflowRunner", "--project=kdiff-test", "--region=europe-west1",
        "--temp_location=gs://kdiff-test-temp/tmp", "--sdk_container_image=example.com/kdiff-worker:test",
        "--dry_run=True",
    ])


def _dataflow_job(options, build):
    """The Dataflow job Beam makes of the pipeline ``build(root)`` adds (nothing contacted)."""
    import apache_beam as beam
    from apache_beam.portability.api import beam_runner_api_pb2

    root = beam.Pipeline(options=options)
    build(root)
    job = root.run().job  # --dry_run: the translated job, not submitted
    pipeline = job.proto_pipeline
    labels = {transform.unique_name for transform in pipeline.components.transforms.values()}
    images = {
        beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image
        for environment in pipeline.components.environments.values()
    }
    assert images == {"example.com/kdiff-worker:test"}  # every step runs in the worker image
    assert '"type": "JOB_TYPE_BATCH"' in str(job)
    return labels


def test_the_ingest_job_builds_for_dataflow(dataflow_options):
    from pipeline import data
    from pipeline.stages import ingest

    plan = data.plan_source(data.parse_source("digits"), 96, "stratified", 0)
    labels = _dataflow_job(dataflow_options, lambda root: ingest.build_pipeline(
        root, plan, "s3://kdiff-runs/r/ingest/examples", image_size=8, channels=1, num_shards=2, seed=0))
    assert {"ReadAndPreprocess", "EvalKeys", "Split", "GroupByShard", "WriteShards", "AwaitShards", "WriteStats"} <= labels


def test_the_sample_job_builds_for_dataflow(dataflow_options):
    from pipeline.stages import sample

    samplers = {"ddim_10": {"sampler": "ddim", "steps": 10}}
    items = sample.work_items(samplers, 16, 2, 0, 4)
    out = "s3://kdiff-runs/r/sample/samples"
    labels = _dataflow_job(dataflow_options, lambda root: sample.build_pipeline(
        root, items, "s3://kdiff-runs/r/train/model/export", f"{out}/_work", out, samplers, 16, 8))
    assert {"CreateWorkItems", "SampleShards", "GroupBySampler", "AssembleSampler"} <= labels


def test_the_evaluate_job_builds_for_dataflow(dataflow_options):
    import numpy as np

    from pipeline.stages import evaluate

    images = np.zeros((3, 8, 8, 1), np.uint8)
    named = [("train", images), ("eval", images), ("samples/ddim_10", images)]
    fid_spec = {"kind": "fid_inception", "weights": "s3://kdiff-runs/weights/pt_inception.pth"}
    classifier_spec = {"kind": "classifier", "path": "s3://kdiff-runs/r/evaluate/metrics/classifier.keras"}
    labels = _dataflow_job(dataflow_options, lambda root: evaluate.build_pipeline(
        root, named, fid_spec, classifier_spec, {1, 2}, "s3://kdiff-runs/r/evaluate/metrics/.scratch"))
    assert {"ExtractFidFeatures", "MeanAndCovariance", "WriteStatistics", "ClassifierProbabilities"} <= labels


def test_the_worker_image_is_beams_sdk_image_of_the_installed_beam():
    """The Dockerfile's Beam is the launcher's: a job's pickled code needs the same Beam."""
    import apache_beam

    with open(os.path.join(REPO, "Dockerfile"), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert f"ARG BEAM_VERSION={apache_beam.__version__}" in lines
    assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" in lines
    copied = " ".join(line for line in lines if line.startswith("COPY"))
    for name in ("setup.py", "kdiff_console.py", "kdiff/", "pipeline/"):  # what setup.py installs
        assert name in copied
