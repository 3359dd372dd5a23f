"""``--strategy=multi_worker`` with the run on S3: two worker processes on 127.0.0.1 run the
same command with their own ``TF_CONFIG``; the chief runs the stages and writes the model and
its checkpoints to the bucket, the other worker follows it (no lock, nothing written) and
trains beside it in lockstep."""

import json
import os
import subprocess
import sys

import pytest
from paths import REPO
from ports import free_ports

from pipeline import cluster, config, io


def test_the_chief_is_tensorflows_and_a_bad_tf_config_is_named():
    multi = config.preset("tiny", strategy="multi_worker")
    workers = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}}
    tf_config = lambda index: {"TF_CONFIG": json.dumps(dict(workers, task={"type": "worker", "index": index}))}  # noqa: E731
    assert not cluster.is_follower(multi, tf_config(0)) and cluster.is_follower(multi, tf_config(1))
    assert not cluster.is_follower(config.preset("tiny"), tf_config(1))  # another strategy: TF_CONFIG unused
    assert not cluster.is_follower(multi, {})  # no cluster: one process
    with pytest.raises(ValueError, match=r"Expected TF_CONFIG as JSON .*Received: TF_CONFIG='\{oops'"):
        cluster.is_follower(multi, {"TF_CONFIG": "{oops"})


@pytest.mark.slow
def test_two_workers_train_one_model_into_the_bucket(s3_server, tmp_path):
    output_dir = f"{s3_server}/run-multi-worker"
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    flags = ["--preset=tiny", f"--output_dir={output_dir}", "--stages=ingest,train", "--strategy=multi_worker",
             "--train_steps=4", "--checkpoint_every_steps=2"]
    workers = []
    for index in range(2):
        os.makedirs(tmp_path / str(index))
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "pipeline.run", *flags], cwd=tmp_path / str(index), text=True,
            env=dict(os.environ, PYTHONPATH=REPO, TF_CONFIG=json.dumps(tf_config)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))
    try:
        (chief_out, chief_err), (follower_out, follower_err) = (worker.communicate(timeout=400) for worker in workers)
    finally:
        for worker in workers:
            worker.kill()
    assert workers[0].returncode == 0, chief_err[-3000:]
    assert workers[1].returncode == 0, follower_err[-3000:]
    assert "strategy multi_worker (2 replica(s))" in chief_out
    assert f"worker 1 of a cluster of 2 tasks: following the chief's run at {output_dir}" in follower_out
    assert "[ingest] running" not in follower_out and "the chief writes the model" in follower_out
    assert os.listdir(tmp_path / "0") == [] and os.listdir(tmp_path / "1") == []  # the bucket holds the run
    assert io.read_json(io.join(output_dir, "train", "model", "history.json"))["steps"] == 4
    assert io.isfile(io.join(output_dir, "train", "_DONE.json"))
    assert not io.exists(io.join(output_dir, ".lock"))
