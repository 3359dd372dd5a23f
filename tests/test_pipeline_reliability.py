"""A run a user can trust under faults: one run per output folder, upstream outputs verified
before they are read, corrupted outputs rerun, the sampler configs checked up front."""

import os
import subprocess
import sys
import textwrap

import pytest

from pipeline import lock as lock_lib
from pipeline import run as run_lib
from pipeline.stages import base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, *args):
    return run_lib.run(["--preset=tiny", f"--output_dir={tmp_path}", "--runner=DirectRunner", *args])


# ----------------------------------------------------------------------------- the lock


def test_a_second_lock_on_a_folder_fails_naming_the_folder_and_the_holder(tmp_path):
    with lock_lib.RunLock(tmp_path):
        with pytest.raises(lock_lib.RunLockedError, match=rf"--output_dir={tmp_path}.*pid {os.getpid()}"):
            with lock_lib.RunLock(tmp_path):
                pass
    with lock_lib.RunLock(tmp_path):  # released on exit
        pass


def test_a_run_on_a_folder_another_process_holds_exits_1_and_writes_nothing(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {REPO!r})
            from pipeline.lock import RunLock
            with RunLock({str(tmp_path)!r}):
                print("locked", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _run(tmp_path, "--stages=ingest") == 1
        err = capsys.readouterr().err
        assert str(tmp_path) in err and f"pid {holder.pid}" in err
        assert sorted(os.listdir(tmp_path)) == [lock_lib.LOCK_FILE]  # not even config.json
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed (-9): the operating system released its lock, nothing is stale.
    with lock_lib.RunLock(tmp_path):
        pass


# ----------------------------------------------------------------------------- manifests


def test_changed_file_names_what_differs(tmp_path):
    out = tmp_path / "artifact"
    (out / "sub").mkdir(parents=True)
    (out / "a.bin").write_bytes(b"12345")
    (out / "sub" / "b.txt").write_text("hello")
    record = base.manifest({"artifact": str(out)})
    assert set(record["artifact"]) == {"a.bin", os.path.join("sub", "b.txt")}
    assert base.changed_file(record, {"artifact": str(out)}) is None
    assert base.changed_file(None, {"artifact": str(out)}) is None  # a record from before manifests
    (out / "a.bin").write_bytes(b"1234")
    assert "has 4 bytes, 5 when it was written" in base.changed_file(record, {"artifact": str(out)})
    (out / "a.bin").write_bytes(b"12346")
    assert "SHA-256 differs" in base.changed_file(record, {"artifact": str(out)})
    (out / "a.bin").write_bytes(b"12345")
    (out / "stray").write_text("x")
    assert "stray was not written by the stage" in base.changed_file(record, {"artifact": str(out)})
    os.remove(out / "stray")
    os.remove(out / "sub" / "b.txt")
    assert "b.txt is missing" in base.changed_file(record, {"artifact": str(out)})


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """A run folder whose ingest stage completed."""
    directory = tmp_path_factory.mktemp("ingested")
    assert _run(directory, "--stages=ingest") == 0
    return directory


def _copy(ingested, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(ingested, target, ignore=shutil.ignore_patterns(lock_lib.LOCK_FILE))
    return target


def _shard(run_dir):
    examples = run_dir / "ingest" / "examples"
    return examples / sorted(n for n in os.listdir(examples) if n.endswith(".tfrecord"))[0]


def test_a_truncated_shard_is_named_and_its_stage_reruns(ingested, tmp_path, capsys):
    run_dir = _copy(ingested, tmp_path)
    shard = _shard(run_dir)
    original = shard.read_bytes()
    shard.write_bytes(original[: len(original) // 2])
    # A stage downstream of it is not run on it: exit 1 naming the file, before training.
    assert _run(run_dir, "--stages=train") == 1
    err = capsys.readouterr().err
    assert str(shard) in err and "ingest: not selected in --stages" in err and "Add ingest to --stages" in err
    assert not (run_dir / "train").exists()
    # Selected, the stage reruns instead of passing as cached.
    assert _run(run_dir, "--stages=ingest") == 0
    out = capsys.readouterr().out
    assert f"{shard} has {len(original) // 2} bytes" in out and "[ingest] running" in out
    assert shard.read_bytes() == original  # the same seeded ingest rewrote it
    assert _run(run_dir, "--stages=ingest") == 0
    assert "[ingest] cached" in capsys.readouterr().out


def test_an_upstream_stage_without_a_completed_output_is_not_read(ingested, tmp_path, capsys):
    run_dir = _copy(ingested, tmp_path)
    os.remove(run_dir / "ingest" / base.DONE_FILE)  # as a killed rerun of ingest leaves it
    assert _run(run_dir, "--stages=train,sample") == 1
    err = capsys.readouterr().err
    assert "ingest: not selected in --stages, and it has no completed output (no _DONE.json)" in err
    # Written with other settings: also refused.
    run_dir = _copy(ingested, tmp_path / "other")
    assert _run(run_dir, "--stages=train", "--image_size=6") == 1
    assert "its output was written with other settings or inputs" in capsys.readouterr().err


# ----------------------------------------------------------------------------- config


def test_an_unknown_sampler_fails_before_any_stage_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run(tmp_path, '--samplers={"fast": {"sampler": "dpm"}}')
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "sampler 'fast' names sampler='dpm'" in err and "ddim" in err
    assert not os.path.exists(tmp_path / "ingest")
    with pytest.raises(SystemExit):
        _run(tmp_path, '--samplers={"x": {"sampler": "ddim", "stepz": 3}}')
    assert "unknown option(s) ['stepz']" in capsys.readouterr().err


def test_classifier_features_on_an_unlabelled_folder_fail_before_training(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB").save(folder / f"{i}.png")
    run_dir = tmp_path / "run"
    assert _run(run_dir, f"--dataset=folder:{folder}", "--limit=none") == 1
    err = capsys.readouterr().err
    assert "--fid_features=classifier" in err and "has none" in err and "--fid_features=inception" in err
    assert (run_dir / "ingest" / base.DONE_FILE).exists() and not (run_dir / "train").exists()


def test_an_io_failure_in_a_stage_exits_1_naming_the_path_and_the_cause(ingested, tmp_path, capsys, monkeypatch):
    import errno

    from pipeline import errors
    from pipeline.stages import train

    run_dir = _copy(ingested, tmp_path)
    full = str(run_dir / "train" / "checkpoints" / "ckpt-000000002.weights.h5")

    def no_space(self, inputs, outputs, params):
        raise RuntimeError("wrapped, as Beam and h5py wrap it") from OSError(errno.ENOSPC, "No space left on device", full)

    monkeypatch.setattr(train.Executor, "Do", no_space)
    assert _run(run_dir, "--stages=ingest,train") == 1
    err = capsys.readouterr().err
    assert f"train: cannot read or write {full}: No space left on device; the disk is full" in err
    assert "Completed stages are kept" in err and (run_dir / "ingest" / base.DONE_FILE).exists()
    assert errors.io_error(ValueError("not I/O")) is None


def test_a_sampler_that_does_not_fit_the_family_fails_before_any_stage_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _run(tmp_path, "--family=ncsn", '--samplers={"x": {"sampler": "ddim"}}')
    assert "sampler 'x' (ddim) does not apply to a ncsn model" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "ingest")
