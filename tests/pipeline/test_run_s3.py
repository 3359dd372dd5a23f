"""The whole pipeline with ``--output_dir=s3://…`` (moto_server on 127.0.0.1): every stage's
output, record and report lands in the bucket and nothing on the local disk; a rerun reads
the records back from the bucket and skips every stage; a second run is refused while the
first holds the lease."""

import contextlib
import io as stdio
import os

import pytest

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
def test_a_run_on_s3_writes_only_to_the_bucket_and_reruns_from_it(s3_server, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a run that wrote a local "s3:" folder would leave it here
    output_dir = f"{s3_server}/run-e2e"
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
