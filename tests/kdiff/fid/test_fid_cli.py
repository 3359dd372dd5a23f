"""``python -m kdiff.fid``: inputs, outputs and errors (a small classifier as the feature space).

The FID Inception network itself is checked against pytorch-fid in test_inception.py;
here the command's reading, statistics, FID∞ / bootstrap / KID and errors are checked with
a seconds-fast feature space, against kdiff.metrics on the same features.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from ports import free_ports

from kdiff import metrics
from kdiff.fid import cli, extractors

pytestmark = pytest.mark.slow  # the command's tests (the CLI's tests are the slow tier)


@pytest.fixture(scope="session")
def classifier(tmp_path_factory):
    """A random-weight .keras classifier with a 'penultimate' layer, on 8×8 RGB images."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(6, activation="tanh", name="penultimate"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    path = str(tmp_path_factory.mktemp("classifier") / "classifier.keras")
    model.save(path)
    return path


def _images(n, seed, size=8):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _write_folder(folder, images):
    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(os.path.join(folder, f"{i:03d}.png"))
    return str(folder)


def _features(classifier, images):
    return extractors.ClassifierFeatures(classifier)(images)["features"].astype(np.float64)


def _run(capsys, *argv):
    status = cli.main([*map(str, argv), "--quiet"])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_fid_of_folders_and_npz_equals_kdiff_metrics_on_the_same_features(tmp_path, classifier, capsys):
    a, b = _images(40, 1), _images(30, 2)
    folder = _write_folder(tmp_path / "a", a)
    np.savez(tmp_path / "b.npz", images=b)
    status, out, _ = _run(capsys, folder, tmp_path / "b.npz", "--features", "classifier", "--classifier", classifier,
                          "--json", tmp_path / "out.json", "--bootstrap", 20, "--fid-infinity", "--kid-subset-size", 20)
    assert status == 0
    fa, fb = _features(classifier, a), _features(classifier, b)
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["fid"] == pytest.approx(metrics.fid_from_features(fa, fb), rel=1e-5)
    assert result["num_images"] == [40, 30]
    assert result["kid"]["mean"] == pytest.approx(
        metrics.kernel_inception_distance(fa, fb, subset_size=20, seed=0)[0], rel=1e-4
    )
    assert result["fid_infinity"]["sizes"][-1] == 40
    assert result["bootstrap"]["low"] <= result["fid"] <= result["bootstrap"]["high"]
    lines = out.splitlines()
    assert lines[0] == f"FID: {result['fid']:.6g}"  # pytorch-fid's first line
    assert any(line.startswith("FID∞: ") for line in lines) and any(line.startswith("KID: ") for line in lines)
    assert "fewer than 2048 samples (30)" in out  # the small-sample warning
    assert "classifier penultimate layer (6-d)" in out


def test_by_default_one_fid_and_kid_the_extras_on_request(tmp_path, classifier, capsys):
    """pytorch-fid's cost by default: FID∞ and the bootstrap (a FID per subset or round) are asked for."""
    np.savez(tmp_path / "a.npz", images=_images(30, 1))
    np.savez(tmp_path / "b.npz", images=_images(20, 2))
    flags = (tmp_path / "a.npz", tmp_path / "b.npz", "--features", "classifier", "--classifier", classifier)
    status, out, _ = _run(capsys, *flags, "--json", tmp_path / "default.json")
    default = json.loads((tmp_path / "default.json").read_text())
    assert status == 0 and "fid_infinity" not in default and "bootstrap" not in default and "kid" in default
    assert "FID∞" not in out.replace("compare FID∞ (--fid-infinity)", "") and "bootstrap" not in out
    assert _run(capsys, *flags, "--fid-inf-points", 4, "--json", tmp_path / "points.json")[0] == 0
    points = json.loads((tmp_path / "points.json").read_text())
    assert len(points["fid_infinity"]["sizes"]) == 4 and points["fid"] == default["fid"]
    assert _run(capsys, *flags, "--fid-infinity", "--fid-inf-points", 0, "--json", tmp_path / "none.json")[0] == 0
    assert "fid_infinity" not in json.loads((tmp_path / "none.json").read_text())


def test_save_stats_round_trip_gives_the_same_fid(tmp_path, classifier, capsys):
    a, b = _images(25, 3), _images(20, 4)
    np.savez(tmp_path / "a.npz", images=a)
    np.savez(tmp_path / "b.npz", images=b)
    flags = ("--features", "classifier", "--classifier", classifier)
    assert _run(capsys, tmp_path / "b.npz", tmp_path / "b_stats.npz", "--save-stats", *flags)[0] == 0
    with np.load(tmp_path / "b_stats.npz") as stats:
        mu, sigma = metrics.feature_statistics(_features(classifier, b))
        np.testing.assert_allclose(stats["mu"], mu, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(stats["sigma"], sigma, rtol=1e-5, atol=1e-7)
        assert int(stats["num_images"]) == 20
    _, direct, _ = _run(capsys, tmp_path / "a.npz", tmp_path / "b.npz", *flags, "--json", tmp_path / "d.json")
    _, via_stats, _ = _run(capsys, tmp_path / "a.npz", tmp_path / "b_stats.npz", *flags, "--fid-infinity",
                           "--json", tmp_path / "s.json")
    d, s = (json.loads((tmp_path / name).read_text()) for name in ("d.json", "s.json"))
    assert s["fid"] == pytest.approx(d["fid"], rel=1e-6)
    assert "kid" not in s and "KID: not computed" in via_stats  # statistics have no samples for KID
    assert "fid_infinity" in s  # FID∞ needs only the first side's features


def test_mixed_sizes_are_resized_each_on_its_own_and_said(tmp_path, classifier, capsys):
    images = list(_images(4, 5)) + list(_images(3, 6, size=12))
    folder = _write_folder(tmp_path / "mixed", images)
    np.savez(tmp_path / "ref.npz", images=_images(10, 7))
    status, _, err = _run(capsys, folder, tmp_path / "ref.npz", "--features", "classifier", "--classifier",
                          classifier, "--json", tmp_path / "m.json")
    assert status == 0 and "images of 2 sizes (8×8, 12×12" in err
    expected = np.concatenate([_features(classifier, np.stack(images[:4])), _features(classifier, np.stack(images[4:]))])
    mu, _ = metrics.feature_statistics(expected)
    side = cli.read_side(folder, lambda: extractors.ClassifierFeatures(classifier), 50, True)
    np.testing.assert_allclose(side.mu, mu, rtol=1e-5)


def _folder_with_a_broken_image(directory):
    folder = _write_folder(directory / "junk", _images(2, 0))
    (directory / "junk" / "bad.png").write_bytes(b"not a png")
    return folder


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: str(d / "missing"), "expected a folder of images"),
        (lambda d: (d / "empty").mkdir() or str(d / "empty"), "Received: none"),
        (lambda d: _write_folder(d / "one", _images(1, 0)), "at least 2 images"),
        (_folder_with_a_broken_image, "bad.png: not a readable image"),
        (lambda d: np.savez(d / "stats.npz", mu=np.zeros(6), sigma=np.zeros((5, 5))) or str(d / "stats.npz"),
         "expected statistics mu"),
        (lambda d: np.savez(d / "odd.npz", x=np.zeros(3), y=np.zeros(3)) or str(d / "odd.npz"), "expected 'images'"),
    ],
)
def test_bad_input_exits_2_naming_what_is_wrong(tmp_path, classifier, capsys, make, message):
    np.savez(tmp_path / "ref.npz", images=_images(10, 7))
    bad = make(tmp_path)
    status, out, err = _run(capsys, bad, tmp_path / "ref.npz", "--features", "classifier", "--classifier", classifier)
    assert status == 2 and message in err and out == ""


def test_stats_of_another_dimension_and_bad_flags_are_errors(tmp_path, classifier, capsys):
    np.savez(tmp_path / "ref.npz", images=_images(10, 7))
    np.savez(tmp_path / "stats4.npz", mu=np.zeros(4), sigma=np.eye(4))
    flags = ("--features", "classifier", "--classifier", classifier)
    status, _, err = _run(capsys, tmp_path / "ref.npz", tmp_path / "stats4.npz", *flags)
    assert status == 2 and "expected features of 6 dimensions" in err
    assert "--dims" in _run(capsys, tmp_path / "ref.npz", tmp_path / "ref.npz", "--dims", 768)[2]
    assert "--classifier" in _run(capsys, tmp_path / "ref.npz", tmp_path / "ref.npz", "--features", "classifier")[2]
    status, _, err = _run(capsys, tmp_path / "ref.npz", tmp_path / "out.txt", "--save-stats", *flags)
    assert status == 2 and "end in .npz" in err and not (tmp_path / "out.txt").exists()
    for flag in ("--bootstrap", "--fid-inf-points"):
        status, out, err = _run(capsys, tmp_path / "missing", tmp_path / "ref.npz", flag, 1, *flags)
        assert (status, out) == (2, "")  # before the missing folder is noticed
        assert err == f"error: {flag}: expected 0 (none) or an integer >= 2. Received: 1\n"


def test_python_dash_m_runs_the_command(tmp_path, classifier):
    np.savez(tmp_path / "a.npz", images=_images(12, 8))
    np.savez(tmp_path / "b.npz", images=_images(12, 9))
    done = subprocess.run(
        [sys.executable, "-m", "kdiff.fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--features",
         "classifier", "--classifier", classifier, "--quiet", "--bootstrap", "10"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("FID: ")


# --------------------------------------------------------------------------- offline


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Downloads fail as they do offline: each goes to a closed port of 127.0.0.1; nothing is cached."""
    from kdiff.fid import weights as weights_lib

    closed = f"http://127.0.0.1:{free_ports()[0]}/"  # a port nothing listens on
    real_download = weights_lib._download
    monkeypatch.setattr(weights_lib, "_download", lambda url, path: real_download(closed + "pt_inception.pth", path))
    monkeypatch.setattr(extractors, "IMAGENET_NOTOP_URL", closed + "kdiff_test_never_cached_notop.h5")
    monkeypatch.delenv("KDIFF_FID_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    return tmp_path / "torch_home"


@pytest.mark.parametrize("features, own_way", [
    ("inception", "pass --weights FILE (Keras' {notop}); or use "
                  "a feature space read from local files: --features fid_inception --weights "
                  "pt_inception-2015-12-05-6726825d.pth (or its .npz), "),
    ("fid_inception", "pass --weights FILE (pt_inception-2015-12-05-6726825d.pth, read with torch, or its .npz from "
                      "`python -m kdiff.fid.weights convert`), set $KDIFF_FID_WEIGHTS=FILE or put the file at "),
])
def test_offline_default_weights_exit_2_with_a_one_line_way_forward(tmp_path, offline, capsys, features, own_way):
    a = _write_folder(tmp_path / "a", _images(3, 0))
    b = _write_folder(tmp_path / "b", _images(3, 1))
    status, out, err = _run(capsys, a, b, "--features", features)
    assert status == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert all(line.startswith("Downloading ") for line in lines[:-1]), lines  # fetch_weights says what it tries
    error = lines[-1]
    assert error.startswith(f"error: --features {features}: could not download ") and "Connection refused" in error
    notop = os.path.basename(extractors.IMAGENET_NOTOP_URL)  # the file that the URL in effect names
    assert "Offline: " + own_way.format(notop=notop) in error
    assert error.endswith("--features classifier --classifier FILE.keras, or --features inception_graph "
                          "--inception-graph classify_image_graph_def.pb")
    assert not os.path.exists(offline / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth")


def test_a_kdiff_fid_weights_that_names_no_file_is_one_line(tmp_path, offline, monkeypatch, capsys):
    monkeypatch.setenv("KDIFF_FID_WEIGHTS", str(tmp_path / "nowhere.npz"))
    a = _write_folder(tmp_path / "a", _images(3, 0))
    status, _, err = _run(capsys, a, a)
    assert status == 2 and err.strip().splitlines() == [
        f"error: --features fid_inception: Expected $KDIFF_FID_WEIGHTS to name pytorch-fid's weights file (.pth or "
        f".npz). Received: KDIFF_FID_WEIGHTS='{tmp_path / 'nowhere.npz'}', which is not a file"]


def test_a_pth_without_torch_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch → ImportError
    (tmp_path / "w.pth").write_bytes(b"not read without torch")
    a = _write_folder(tmp_path / "a", _images(3, 0))
    status, _, err = _run(capsys, a, a, "--weights", tmp_path / "w.pth")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "python -m kdiff.fid.weights convert" in err
