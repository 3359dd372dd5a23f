"""A run a user can trust under faults: one run per output folder, upstream outputs verified
before they are read, corrupted outputs rerun, the sampler configs checked up front."""

import os
import subprocess
import sys
import textwrap

import pytest
from paths import REPO

from pipeline import lock as lock_lib
from pipeline import run as run_lib
from pipeline.stages import base


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


@pytest.fixture(scope="session")
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
    assert "sampler 'fast' (dpm): Expected `sampler` to be one of" in err and "ddim" in err
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
    assert "sampler 'x' (ddim): Expected a sampler for a sigmas (Sigmas) process" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "ingest")


# ----------------------------------------------------------------------------- record counts


def test_the_manifest_counts_the_records_of_tfrecord_and_npz_files(ingested, tmp_path):
    import json

    import numpy as np

    done = json.loads((ingested / "ingest" / base.DONE_FILE).read_text())
    stats = json.loads((ingested / "ingest" / "examples" / "stats.json").read_text())
    shards = done["files"]["examples"]
    train = sum(entry["records"] for name, entry in shards.items() if name.startswith("train-"))
    evaluation = sum(entry["records"] for name, entry in shards.items() if name.startswith("eval-"))
    assert (train, evaluation) == (stats["num_train"], stats["num_eval"])
    assert "records" not in shards["stats.json"]
    # The framing count agrees with TensorFlow's reader, and a cut file is named.
    import tensorflow as tf

    shard = _shard(ingested)
    assert base.record_count(str(shard)) == sum(1 for _ in tf.data.TFRecordDataset(str(shard)))
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(shard.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"cut.tfrecord: record \d+ runs past the end of the file"):
        base.record_count(str(cut))
    np.savez(tmp_path / "samples.npz", images=np.zeros((7, 2, 2, 1)), labels=np.zeros(7))
    assert base.record_count(str(tmp_path / "samples.npz")) == 7


# ----------------------------------------------------------------------------- a full disk


def test_weights_are_not_written_to_a_disk_that_cannot_hold_them(tmp_path, monkeypatch):
    import errno
    import shutil

    import keras

    from kdiff import atomic_io

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(256)])
    path = tmp_path / "ckpt.weights.h5"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(atomic_io.shutil, "disk_usage", lambda _: usage._replace(free=1000))
    with pytest.raises(OSError) as error:
        atomic_io.save_weights(model, str(path))
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(path)
    assert "the weights need about 1.0 MiB; 0.0 MiB are free" in str(error.value)
    assert not path.exists()
    monkeypatch.undo()
    atomic_io.save_weights(model, str(path))  # room: written
    assert path.stat().st_size > 256 * 5 * 4


def _failing_save_script(path, disk_usage_free=None):
    """A script that saves 2 MiB of weights to ``path`` through ``kdiff.atomic_io.save_weights``
    and prints ``failed <errno> <path> <file left?>`` when the write fails."""
    return textwrap.dedent(f"""
        import os, shutil, sys
        sys.path.insert(0, {REPO!r})
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import keras
        from kdiff import atomic_io, failures
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8192)])  # 2 MiB
        if {disk_usage_free!r} is not None:  # the pre-check passes: the write itself fails
            usage = shutil.disk_usage(os.path.dirname({path!r}))
            atomic_io.shutil.disk_usage = lambda _: usage._replace(free={disk_usage_free!r})
        try:
            atomic_io.save_weights(model, {path!r})
        except OSError as error:
            failure = failures.find_io_error(error)
            print("failed", failure.errno, failure.path, os.path.exists({path!r}), flush=True)
    """)


def test_a_weights_write_that_fails_midway_leaves_no_file(tmp_path):
    """A file-size limit makes the write fail midway on any machine (EFBIG), here in this
    process: the limit and the signal are restored right after."""
    import errno
    import resource
    import signal

    import keras

    from kdiff import atomic_io, failures

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8192)])  # 2 MiB
    path = str(tmp_path / "ckpt.weights.h5")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, limits[1]))
    try:
        with pytest.raises(OSError) as error:
            atomic_io.save_weights(model, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    failure = failures.find_io_error(error.value)
    assert (failure.errno, failure.path) == (errno.EFBIG, path)
    assert not os.path.exists(path)
    atomic_io.save_weights(model, path)  # without the limit: written
    assert os.path.getsize(path) > 2 << 20


def test_io_failures_are_described_by_path_and_cause():
    import errno

    import tensorflow as tf

    from kdiff import failures

    hdf5 = OSError(errno.ENOSPC, "Can't synchronously write data (file write failed: time = …\n, filename = "
                   "'/x/ckpt.weights.h5', file descriptor = 6, errno = 28, error message = 'No space left on device')")
    assert failures.find_io_error(RuntimeError("wrapped")) is None
    wrapped = RuntimeError("Keras wraps it")
    wrapped.__cause__ = hdf5
    assert failures.find_io_error(wrapped) == ("/x/ckpt.weights.h5", "No space left on device", errno.ENOSPC)
    save = tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __wrapped__SaveV2_dtypes_129}} /x/export/variables/part-0; "
        "No space left on device [Op:SaveV2]",
    )
    assert failures.find_io_error(save) == ("/x/export/variables/part-0", "No space left on device", errno.ENOSPC)
    memory = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[4096,4096]")
    assert failures.find_io_error(memory) is None  # out of memory is not an I/O failure


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs (needs root, or CAP_SYS_ADMIN, to mount): yields a remount function."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as error:  # no mount command, or it hangs
        pytest.skip(f"cannot mount a tmpfs here: {error}")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.decode().strip()}")

    def grow(megabytes):
        subprocess.run(["mount", "-o", f"remount,size={megabytes}m", str(mount_point)], check=True)

    try:
        yield mount_point, grow
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_naming_the_file_and_the_rerun_with_space_recovers(ingested, small_disk, capsys, monkeypatch):
    from tiny_network import TinyNet

    from pipeline import builders

    monkeypatch.setattr(builders, "build_network", lambda params, shape, loss=None, num_classes=None: TinyNet(shape[0], shape[2]))
    disk, _ = small_disk
    run_dir = _copy(ingested, disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * ((8 << 20) - (512 << 10) - _used(disk)))  # half a MiB left
    assert _run(run_dir, "--stages=ingest,train") == 1
    err = capsys.readouterr().err
    checkpoints = run_dir / "train" / "checkpoints"
    assert f"train: cannot read or write {checkpoints}" in err and "No space left on device" in err
    assert "the disk is full" in err and "Completed stages are kept" in err
    assert (run_dir / "ingest" / base.DONE_FILE).exists() and not (run_dir / "train" / base.DONE_FILE).exists()
    assert [name for name in os.listdir(run_dir / "train") if ".tmp-" in name] == []
    filler.unlink()  # space freed: the same command recovers
    assert _run(run_dir, "--stages=ingest,train") == 0
    out = capsys.readouterr().out
    assert "[ingest] cached" in out and "[train] done" in out
    assert (run_dir / "train" / "model" / "export" / "saved_model.pb").exists()


def _used(directory):
    import shutil

    return shutil.disk_usage(directory).used


def test_a_weights_write_that_fills_the_disk_does_not_crash_the_process(small_disk):
    """h5py keeps a file whose write failed open, and its finalizer's flush to the full disk
    crashes the interpreter (exit 139, as the pipeline did); ``save_weights`` closes it on
    freed space and removes it. The pre-check is bypassed so that the write itself fails."""
    import errno

    disk, _ = small_disk
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (7 << 20))  # leaves < 1 MiB of the 8
    path = str(disk / "ckpt.weights.h5")
    script = _failing_save_script(path, disk_usage_free=1 << 30)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["failed", str(errno.ENOSPC), path, "False"]
    assert "Exception ignored" not in result.stderr
