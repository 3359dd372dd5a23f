"""``--runner=DaskRunner`` (pipeline/dask_flags.py, pipeline/dask_runner.py): the Beam stages on a ``dask.distributed``
cluster on 127.0.0.1 give the DirectRunner's outputs, file for file; what the runner cannot
run is refused before any stage starts, saying why."""

import contextlib
import hashlib
import io as stdio
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from paths import REPO
from ports import free_ports

from pipeline import dask_flags
from pipeline import run as run_lib

BEAM_STAGES = ("ingest", "sample", "evaluate")


def _stop(process):
    """Stops a process started in its own session and everything it started (a worker's
    nanny starts the worker), by its process group; SIGKILL after 20 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A ``dask scheduler`` and two ``dask worker`` processes (one thread each) on 127.0.0.1,
    free ports, no dashboards. The workers import this checkout's ``pipeline`` and ``kdiff``
    (``PYTHONPATH``), as the DoFns they run are pickled by reference. Stopped by pid at the end.

    Yields:
        ``(scheduler address, [worker log paths])``.
    """
    from distributed import Client

    directory = tmp_path_factory.mktemp("dask")
    port = free_ports()[0]
    address = f"127.0.0.1:{port}"
    environment = dict(
        os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        NO_GCE_CHECK="True", TF_CPP_MIN_LOG_LEVEL="2",
    )
    # `dask scheduler` and `dask worker`, with this interpreter
    # the scheduler ends itself after 5 idle minutes, the workers 60 s after losing it: none
    # outlives a test process killed before its finalizer
    commands = [[sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--no-dashboard", "--idle-timeout", "300"]]
    commands += [
        [
            sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard", "--name", f"worker{i}",
            "--local-directory", str(directory / f"worker{i}"), "--death-timeout", "60",
        ]
        for i in range(2)
    ]
    logs = [directory / name for name in ("scheduler.log", "worker0.log", "worker1.log")]
    processes = []
    try:
        for command, log in zip(commands, logs):
            with open(log, "wb") as output:
                processes.append(subprocess.Popen(
                    command, stdout=output, stderr=subprocess.STDOUT, env=environment, cwd=directory,
                    start_new_session=True,
                ))
        deadline = time.monotonic() + 90
        while True:
            assert all(p.poll() is None for p in processes), [log.read_text()[-2000:] for log in logs]
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(2, timeout=max(1.0, deadline - time.monotonic()))
                break
            except OSError:
                assert time.monotonic() < deadline, "the Dask cluster did not start within 90 s"
                time.sleep(0.5)
        yield address, logs[1:]
    finally:
        for process in reversed(processes):
            _stop(process)


def _run(*args):
    out = stdio.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_lib.run(["--preset=tiny", *args])
    return status, out.getvalue()


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_beam_stages_on_dask_give_the_direct_runners_outputs(dask_cluster, ddpm_run, tmp_path, monkeypatch):
    """ingest, sample and evaluate rerun on the cluster, on a copy of the DirectRunner's tiny
    run (its trained model): the same shards, samples, features and metrics, byte for byte.
    Two partitions per PCollection: each stage's work spread over both workers, and Beam's
    DaskRunner's own ParDo translation would duplicate records (pipeline/dask_runner.py)."""
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    address, worker_logs = dask_cluster
    direct, _ = ddpm_run
    run = tmp_path / "run"
    shutil.copytree(direct, run)
    status, out = _run(
        f"--output_dir={run}", "--runner=DaskRunner", f"--dask_client_address={address}", "--dask_npartitions=2",
        f"--stages={','.join(BEAM_STAGES)}", "--force",
    )
    assert status == 0, out[-3000:]
    assert "[train] cached" in out
    for stage in BEAM_STAGES:
        assert f"[{stage}] done in" in out
    # the work ran on the workers: their logs hold the sample stage's lines
    assert "sample: ddim_10: shard" in "".join(log.read_text() for log in worker_logs)

    ingest = ["eval-00000-of-00001.tfrecord", "stats.json", "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    compared = [f"ingest/examples/{name}" for name in ingest]
    for sampler in ("ddim_10", "ddpm_20"):
        compared += [f"sample/samples/{sampler}/{name}" for name in ("samples.npz", "grid.png", "trajectory.png")]
    compared += ["evaluate/metrics/features.npz"]
    for relative in compared:
        assert _sha256(run / relative) == _sha256(direct / relative), relative
    assert sorted(os.listdir(run / "ingest" / "examples")) == ingest
    metrics = json.loads((run / "evaluate" / "metrics" / "metrics.json").read_text())
    assert metrics == json.loads((direct / "evaluate" / "metrics" / "metrics.json").read_text())
    assert set(metrics["samplers"]) == {"ddim_10", "ddpm_20"}
    for stage in BEAM_STAGES:  # the stages completed: their records written after the checks
        assert json.loads((run / stage / "_DONE.json").read_text())["files"]


def test_dask_runner_resolves_its_short_name():
    full = dask_flags.resolve(["--runner=DaskRunner", "--dask_client_address=127.0.0.1:9"], "runs/x")
    assert full == ["--dask_client_address=127.0.0.1:9", f"--runner={dask_flags.RUNNER}"]
    assert dask_flags.resolve(["--runner", "DaskRunner", "--dask_scheduler_file=s.json"], "runs/x") == [
        "--dask_scheduler_file=s.json", f"--runner={dask_flags.RUNNER}"]
    assert dask_flags.resolve(full, "runs/x") == full  # the full name is kept
    beams = ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_client_address=127.0.0.1:9"]
    assert dask_flags.resolve(beams, "runs/x") == full  # Beam's own, whose client is never closed: ours
    other = ["--runner=DirectRunner", "--direct_num_workers=2"]
    assert dask_flags.resolve(other, "s3://bucket/run") == other  # other runners: unchanged


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--output_dir=runs/x"],
            "--runner=DaskRunner needs a running cluster: pass --dask_client_address=HOST:PORT",
        ),
        (
            ["--output_dir=s3://bucket/run", "--dask_client_address=127.0.0.1:9"],
            "--runner=DaskRunner cannot write --output_dir=s3://bucket/run: the stages ingest, sample, evaluate "
            "have their Dask workers read and write the run's object store themselves",
        ),
    ],
)
def test_dask_runner_refusals_name_the_reason_before_any_stage(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_lib.run(["--preset=tiny", "--runner=DaskRunner", *args])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # refused before anything was written


def test_dask_runner_without_dask_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pipeline.dask_runner", None)  # its import fails, as without dask
    with pytest.raises(ValueError, match=r"--runner=DaskRunner needs dask.distributed \(.*\); install it with "
                       r"pip install -e '.\[dask\]'"):
        dask_flags.resolve(["--runner=DaskRunner", "--dask_client_address=127.0.0.1:9"], "runs/x")
