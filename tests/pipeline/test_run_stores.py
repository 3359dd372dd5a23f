"""The whole pipeline with ``--output_dir=s3://…`` (moto_server on 127.0.0.1) and
``gs://…`` (fake-gcs-server): every stage's output, record and report lands in the bucket
and nothing on the local disk, the Beam stages' workers reading and writing the bucket
themselves; a rerun reads the records back from the bucket and skips every stage; a second
run is refused while the first holds the lease. On S3: training killed on one machine
resumes from the bucket, and Beam workers in other processes ingest a folder in the
bucket."""

import contextlib
import io as stdio
import os
import subprocess
import sys
import time

import pytest
from paths import REPO

from pipeline import io
from pipeline.io import s3
from pipeline import run as run_lib
from pipeline.stages import STAGE_ORDER


def _run(output_dir, *args):
    out = stdio.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_lib.run(["--preset=tiny", f"--output_dir={output_dir}", "--runner=DirectRunner", *args])
    return status, out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("server", ["s3_server", "gcs_server"])
def test_a_run_in_a_bucket_writes_only_to_the_bucket_and_reruns_from_it(server, request, tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.chdir(tmp_path)  # a run that wrote a local "s3:" or "gs:" folder would leave it here
    output_dir = f"{request.getfixturevalue(server)}/run-e2e"
    status, out = _run(output_dir)
    assert status == 0, out[-3000:]
    assert os.listdir(tmp_path) == []
    report = io.join(output_dir, "report", "report")
    assert io.isfile(io.join(report, "report.md")) and io.isfile(io.join(report, "report.html"))
    summary = io.read_json(io.join(report, "metrics.json"))
    assert summary["samplers"]
    for name, row in summary["samplers"].items():
        assert row["fid"] >= 0 and row["num_samples"] == 16, (name, row)
        assert io.isfile(io.join(output_dir, "sample", "samples", name, "grid.png"))
    for stage in STAGE_ORDER:
        done = io.read_json(io.join(output_dir, stage, "_DONE.json"))
        assert all(path.startswith(output_dir) for path in done["outputs"].values())  # the bucket's paths
        assert done["files"]
    assert io.read_json(io.join(output_dir, "config.json"))["image_size"] == 8
    assert not io.exists(io.join(output_dir, ".lock"))  # the lease is deleted at exit
    assert f"Report: {report}/report.html" in out
    for stage in ("ingest", "sample", "evaluate"):  # Beam's: their workers read and write the bucket
        assert f"[{stage}] staged in" not in out
    for stage in ("train", "retrieve", "report"):  # TensorFlow, Keras, PIL write by name: local folders
        assert f"[{stage}] staged in" in out
    assert not io.exists(io.join(output_dir, "sample", "samples", "_work"))  # the shards, removed once assembled

    status, out = _run(output_dir)  # a rerun, as from a fresh machine: only the bucket holds the run
    assert status == 0, out[-3000:]
    for stage in STAGE_ORDER:
        assert f"[{stage}] cached" in out

    with io.exclusive_lock(io.join(output_dir, ".lock"), {"pid": 4242, "host": "elsewhere", "started": 0}):
        status, out = _run(output_dir, "--force")
    assert status == 1 and "[ingest] running" not in out  # refused before any stage
    refused = capsys.readouterr().err
    assert "in use by another run (pid 4242 on elsewhere" in refused and "lease runs to" in refused


def test_beams_s3_flags_configure_the_store():
    environment = s3.environment_from_beam_flags(
        ["--s3_endpoint_url=http://127.0.0.1:9", "--s3_region_name=eu-west-1", "--runner=DirectRunner"])
    assert environment == {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert s3.environment_from_beam_flags(["--runner=DirectRunner"]) == {}


@pytest.mark.slow
def test_training_killed_on_one_machine_resumes_from_the_bucket(s3_server, tmp_path):
    """kill -9 after the first checkpoint reached the bucket: the killed run's lease keeps the
    folder until it expires, then a run with nothing of the first on its disk (a fresh
    staging folder, another working directory) takes the lease over and resumes from the
    bucket's checkpoint."""
    output_dir = f"{s3_server}/run-killed"
    flags = ["--preset=tiny", f"--output_dir={output_dir}", "--stages=ingest,train", "--train_steps=60",
             "--checkpoint_every_steps=20", "--lease_seconds=2"]
    killed = subprocess.Popen([sys.executable, "-m", "pipeline.run", *flags], cwd=tmp_path, env=dict(
        os.environ, PYTHONPATH=REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = io.join(output_dir, "train", "checkpoints", "state.json")
    try:
        deadline = time.monotonic() + 300
        while not io.exists(state_path):
            assert killed.poll() is None, f"the run ended ({killed.returncode}) before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint in the bucket within 300 s"
            time.sleep(0.2)
    finally:
        killed.kill()  # SIGKILL: no clean-up, the lease stays
        killed.wait()
    assert io.read_json(state_path)["step"] >= 20 and not io.exists(io.join(output_dir, "train", "model"))
    lease = io.read_json(io.join(output_dir, ".lock"))
    time.sleep(max(0.0, lease["expires"] - time.time()) + 0.5)

    os.makedirs(tmp_path / "elsewhere")
    result = subprocess.run([sys.executable, "-m", "pipeline.run", *flags], cwd=tmp_path / "elsewhere", env=dict(
        os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[ingest] cached" in result.stdout
    assert f"resuming from the checkpoint at step 20 (epoch 11, batch 0) in {output_dir}/train/checkpoints" in result.stdout
    assert "took over" in result.stderr and f"pid {killed.pid}" in result.stderr
    assert io.read_json(io.join(output_dir, "train", "model", "history.json"))["steps"] == 60
    assert not io.exists(io.join(output_dir, "train", "checkpoints"))  # removed once the stage completed


@pytest.mark.slow
def test_a_folder_dataset_in_the_bucket_is_ingested(s3_server):
    """--dataset=folder:s3://… with class subfolders, ingested by Beam workers in two other
    processes: they read every image from the bucket and write the shards into it."""
    from PIL import Image

    source = f"{s3_server}/faces"
    for index in range(12):
        with io.local_output(io.join(source, f"class{index % 2}", f"{index}.png")) as local:
            Image.new("L", (8, 8), color=20 * index).save(local)
    status, out = _run(f"{s3_server}/run-folder", f"--dataset=folder:{source}", "--stages=ingest", "--limit=12",
                       "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert status == 0, out[-3000:]
    stats = io.read_json(io.join(s3_server, "run-folder", "ingest", "examples", "stats.json"))
    assert stats["num_train"] + stats["num_eval"] == 12 and stats["num_classes"] == 2
    assert io.glob(io.join(s3_server, "run-folder", "ingest", "examples"), "train-*.tfrecord")
