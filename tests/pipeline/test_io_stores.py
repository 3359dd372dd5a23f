"""pipeline.io on its object stores, each against its server on 127.0.0.1: S3 (``s3://``
URLs, moto_server) and Google Cloud Storage (``gs://``, fake-gcs-server). The same functions
give the same answers as on a local disk, writes appear complete or not at all, and the run
lock is a lease that one holder gets, that expires when its holder dies, and that the next
run then takes over."""

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest

from paths import REPO
from pipeline import io
from pipeline.io import locks


@pytest.fixture(params=["s3", "gs"])
def root(request):
    """A fresh prefix in a test bucket of each store."""
    bucket = request.getfixturevalue({"s3": "s3_server", "gs": "gcs_server"}[request.param])
    return f"{bucket}/{uuid.uuid4().hex[:12]}"


def _store(root):
    """The store of ``root``'s URL."""
    return io.STORES[root.split("://")[0]]


def test_whole_files_round_trip(root):
    io.write_json(io.join(root, "a", "config.json"), {"b": [1, 2]})
    assert io.read_json(io.join(root, "a", "config.json")) == {"b": [1, 2]}
    io.write_bytes(io.join(root, "empty"), b"")  # an empty object (Beam's S3 sink cannot write one)
    assert io.read_bytes(io.join(root, "empty")) == b"" and io.getsize(io.join(root, "empty")) == 0
    io.write_text(io.join(root, "t.txt"), "é\n")
    assert io.read_text(io.join(root, "t.txt")) == "é\n"
    io.write_npz(io.join(root, "x.npz"), compressed=True, x=np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(io.read_npz(io.join(root, "x.npz"))["x"], np.arange(6).reshape(2, 3))
    with pytest.raises(FileNotFoundError):
        io.read_bytes(io.join(root, "missing"))


def test_a_failed_write_leaves_nothing(root):
    path = io.join(root, "partial.bin")
    with pytest.raises(RuntimeError, match="midway"):
        with io.open_write(path) as f:
            f.write(b"x" * 1000)
            raise RuntimeError("failed midway")
    assert not io.exists(path)


def test_queries_read_prefixes_as_directories(root):
    for name in ("d/a.txt", "d/sub/b.txt", "d/sub/deeper/c.txt", "e.txt"):
        io.write_text(io.join(root, name), name)
    assert io.isdir(io.join(root, "d")) and not io.isfile(io.join(root, "d"))
    assert io.isfile(io.join(root, "e.txt")) and not io.isdir(io.join(root, "e.txt"))
    assert io.exists(io.join(root, "d")) and not io.exists(io.join(root, "nothing"))
    assert not io.isdir(io.join(root, "d", "a"))  # a prefix of a key's name is not a directory
    assert io.listdir(io.join(root, "d")) == ["a.txt", "sub"]
    assert io.glob(io.join(root, "d"), "*.txt") == [io.join(root, "d", "a.txt")]
    assert io.glob(io.join(root, "nothing"), "*") == []
    with pytest.raises(FileNotFoundError):
        io.listdir(io.join(root, "nothing"))
    walked = [(top, list(dirs), files) for top, dirs, files in io.walk(io.join(root, "d"))]
    assert walked == [
        (io.join(root, "d"), ["sub"], ["a.txt"]),
        (io.join(root, "d", "sub"), ["deeper"], ["b.txt"]),
        (io.join(root, "d", "sub", "deeper"), [], ["c.txt"]),
    ]
    pruned = []
    for top, dirs, _ in io.walk(io.join(root, "d")):
        pruned.append(top)
        dirs.clear()  # pruned in place, as os.walk allows
    assert pruned == [io.join(root, "d")]


def test_changes_copy_move_and_remove(root, tmp_path):
    io.write_text(io.join(root, "src", "a.txt"), "a")
    io.write_text(io.join(root, "src", "sub", "b.txt"), "b")
    io.copy(io.join(root, "src", "a.txt"), io.join(root, "copy.txt"))
    io.replace(io.join(root, "copy.txt"), io.join(root, "moved.txt"))
    assert io.read_text(io.join(root, "moved.txt")) == "a" and not io.exists(io.join(root, "copy.txt"))
    io.copy_tree(io.join(root, "src"), io.join(root, "tree"))
    assert io.read_text(io.join(root, "tree", "sub", "b.txt")) == "b"
    io.copy_tree(io.join(root, "src"), str(tmp_path / "down"))  # across stores: a download
    assert (tmp_path / "down" / "sub" / "b.txt").read_text() == "b"
    (tmp_path / "up.txt").write_text("up")
    io.copy(str(tmp_path / "up.txt"), io.join(root, "up.txt"))  # and an upload
    assert io.read_text(io.join(root, "up.txt")) == "up"
    io.remove(io.join(root, "moved.txt"))
    io.remove(io.join(root, "moved.txt"), missing_ok=True)
    with pytest.raises(FileNotFoundError):
        io.remove(io.join(root, "moved.txt"))
    io.remove_tree(io.join(root, "tree"))
    assert not io.exists(io.join(root, "tree")) and io.exists(io.join(root, "src"))
    io.remove_tree(io.join(root, "tree"), ignore_errors=True)
    with pytest.raises(FileNotFoundError):
        io.remove_tree(io.join(root, "tree"))


def test_local_paths_for_libraries_that_read_and_write_by_name(root):
    with io.local_output(io.join(root, "w.npy")) as local:
        np.save(local, np.ones(3))
    with io.local_copy(io.join(root, "w.npy")) as local:
        np.testing.assert_array_equal(np.load(local), np.ones(3))
    with io.local_output(io.join(root, "folder")) as local:  # a tree, as Keras' export writes
        os.makedirs(os.path.join(local, "variables"))
        with open(os.path.join(local, "variables", "v.bin"), "wb") as f:
            f.write(b"v")
    with io.local_copy(io.join(root, "folder")) as local:
        with open(os.path.join(local, "variables", "v.bin"), "rb") as f:
            assert f.read() == b"v"
    assert not os.path.exists(local)  # the download is removed after the block
    with pytest.raises(ValueError, match="Nope"):
        with io.local_output(io.join(root, "never.npy")) as local:
            np.save(local, np.ones(3))
            raise ValueError("Nope")
    assert not io.exists(io.join(root, "never.npy"))


def test_a_commit_replaces_the_tree_or_leaves_it(root):
    final = io.join(root, "stage", "model")
    with io.atomic_directory(final) as local:
        with open(os.path.join(local, "old.txt"), "w") as f:
            f.write("old")
    with pytest.raises(RuntimeError):
        with io.atomic_directory(final) as local:
            with open(os.path.join(local, "new.txt"), "w") as f:
                f.write("new")
            raise RuntimeError("killed")
    assert io.listdir(final) == ["old.txt"]  # a failed commit changed nothing
    with io.atomic_directory(final) as local:
        with open(os.path.join(local, "new.txt"), "w") as f:
            f.write("new")
    assert io.listdir(final) == ["new.txt"]  # the old tree is replaced, not merged


def test_urls_join_with_slashes_and_stay_urls():
    for scheme in ("s3", "gs"):
        assert io.join(f"{scheme}://b/run", "train", "model") == f"{scheme}://b/run/train/model"
        assert io.abspath(f"{scheme}://b/run/") == f"{scheme}://b/run" and io.is_remote(f"{scheme}://b/run")
    assert not io.is_remote("/tmp/x")
    with pytest.raises(ValueError, match=r"Expected a local path or a URL of \['gs', 's3'\] \(gs://bucket/key, "
                       r"s3://bucket/key\)\. Received: 'az://b/run'"):
        io.exists("az://b/run")
    with pytest.raises(ValueError, match=r"Expected a gs://bucket/key URL\. Received: 'gs:///run'"):
        io.exists("gs:///run")


# ----------------------------------------------------------------------------- the lease


def test_one_holder_at_a_time_and_the_second_learns_who(root):
    path = io.join(root, ".lock")
    with io.exclusive_lock(path, {"pid": 1, "host": "a"}, seconds=30) as held:
        assert io.read_json(path)["pid"] == 1 and io.read_json(path)["expires"] > time.time() + 20
        with pytest.raises(io.LockHeld) as error:
            with io.exclusive_lock(path, {"pid": 2, "host": "b"}, seconds=30):
                pass
        assert error.value.record["pid"] == 1 and error.value.record["host"] == "a"
        assert not held.lost.is_set()
    assert not io.exists(path)  # released: deleted
    with io.exclusive_lock(path, {"pid": 3}, seconds=30):
        assert io.read_json(path)["pid"] == 3


def _race(root, path, takers):
    """``takers`` leases of ``path`` acquired at once, one thread each.

    Returns:
        ``(winners, errors)``: the acquired leases and the ``LockHeld`` errors of the others.
    """
    winners, errors = [], []
    leases = [locks.Lease(_store(root), path, {"pid": n}, seconds=30) for n in range(takers)]

    def take(lease):
        try:
            winners.append(lease.acquire())
        except io.LockHeld as error:
            errors.append(error)

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return winners, errors


def test_racing_takers_get_exactly_one_lease(root):
    winners, errors = _race(root, io.join(root, ".lock"), 8)
    assert len(winners) == 1 and len(errors) == 7
    assert {error.record["pid"] for error in errors} == {winners[0].record["pid"]}
    winners[0].release()


def test_racing_takers_of_an_expired_lease_get_exactly_one(root, capfd):
    """An expired lease is replaced by a put conditional on its version: of several runs
    taking it over at once, one does, and the others learn who."""
    path = io.join(root, ".lock")
    io.write_json(path, {"pid": "dead", "host": "h", "expires": time.time() - 1})
    winners, errors = _race(root, path, 6)
    assert len(winners) == 1 and len(errors) == 5
    assert {error.record["pid"] for error in errors} == {winners[0].record["pid"]}
    assert io.read_json(path)["owner"] == winners[0].record["owner"]
    assert capfd.readouterr().err.count("took over") == 1  # said once, by the winner
    winners[0].release()
    assert not io.exists(path)


def test_conditional_puts_take_effect_only_on_the_version_named(root):
    store, path = _store(root), io.join(root, "object")
    assert store.read_with_etag(path) is None
    first = store.put_if_absent(path, b"one")
    assert first is not None and store.read_with_etag(path) == (b"one", first)
    assert store.put_if_absent(path, b"two") is None  # there is one already
    second = store.put_if_match(path, b"two", first)
    assert second is not None and second != first and store.read_with_etag(path) == (b"two", second)
    assert store.put_if_match(path, b"three", first) is None  # a stale version
    assert io.read_bytes(path) == b"two"
    assert store.put_if_match(io.join(root, "missing"), b"x", first) is None
    assert not io.exists(io.join(root, "missing"))


def test_a_conditional_delete_takes_effect_only_on_the_version_named(root, request):
    if root.startswith("gs://"):
        # fake-gcs-server checks ifGenerationMatch on uploads but ignores it on deletes (GCS
        # itself checks both). The lease never relies on a conditional delete to decide who
        # holds it (a takeover is a conditional put), only to leave a lease another run took
        # over alone at its release.
        request.applymarker(pytest.mark.xfail(reason="the emulator ignores ifGenerationMatch on deletes", strict=True))
    store, path = _store(root), io.join(root, "object")
    first = store.put_if_absent(path, b"one")
    second = store.put_if_match(path, b"two", first)
    assert store.delete_if_match(path, first) is False and io.read_bytes(path) == b"two"  # a stale version
    assert store.delete_if_match(path, second) is True and not io.exists(path)
    assert store.delete_if_match(path, second) is False  # gone


def test_the_holder_renews_its_lease(root):
    path = io.join(root, ".lock")
    with io.exclusive_lock(path, {"pid": 1}, seconds=1.5):
        first = io.read_json(path)["expires"]
        time.sleep(2.0)  # longer than the lease: only the renewals keep it
        assert io.read_json(path)["expires"] > first
        with pytest.raises(io.LockHeld):
            with io.exclusive_lock(path, {"pid": 2}, seconds=1.5):
                pass


def test_a_killed_holders_lease_is_taken_over_after_it_expires(root, capfd):
    """A holder killed with SIGKILL cannot delete its lease: the next run is refused until
    the lease expires, then takes it over and says whose lease it took."""
    path = io.join(root, ".lock")
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
        from pipeline import io
        with io.exclusive_lock({path!r}, {{"pid": "victim", "host": "h"}}, seconds=2):
            print("held", flush=True)
            time.sleep(600)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(io.LockHeld) as error:
        with io.exclusive_lock(path, {"pid": "next"}, seconds=2):
            pass
    assert error.value.record["pid"] == "victim"
    time.sleep(max(0.0, error.value.record["expires"] - time.time()) + 0.2)
    with io.exclusive_lock(path, {"pid": "next"}, seconds=2):
        assert io.read_json(path)["pid"] == "next"
    assert "took over" in capfd.readouterr().err  # says whose lease expired when


def test_a_lease_taken_over_is_reported_lost_to_its_old_holder(root):
    """A holder whose lease another run took (it stalled past the expiry) learns it at its
    next renewal: ``lost`` is set, and its release leaves the new holder's lease alone."""
    path = io.join(root, ".lock")
    store = _store(root)
    stalled = locks.Lease(store, path, {"pid": "stalled"}, seconds=0.9).acquire()
    _, etag = store.read_with_etag(path)
    # what a taker does once the lease has expired: replace exactly that version
    assert store.put_if_match(path, b'{"pid": "new", "expires": 1e12}', etag) is not None
    assert stalled.lost.wait(timeout=5)  # its next renewal (every 0.3 s) finds another holder
    stalled.release()
    assert io.read_json(path)["pid"] == "new"  # its release did not delete the new lease


def test_a_large_object_is_read_through_a_temporary_file(root, monkeypatch):
    """Past SPOOL_BYTES an object spills to disk instead of memory, and reads the same
    (seeks included: the manifest counts TFRecords by seeking)."""
    monkeypatch.setattr(_store(root), "SPOOL_BYTES", 1000)
    data = np.random.default_rng(0).bytes(5000)
    io.write_bytes(io.join(root, "big.bin"), data)
    with io.open_read(io.join(root, "big.bin")) as f:
        assert f._rolled  # on disk  # noqa: SLF001
        f.seek(4000)
        assert f.read() == data[4000:] and f.tell() == 5000
    assert io.read_bytes(io.join(root, "big.bin")) == data
