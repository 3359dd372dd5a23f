"""kdiff.fid: pytorch-fid's FID Inception network in Keras, against pytorch-fid (no torch here).

tests/fixtures/fid_inception/make_fixtures.py built pytorch-fid 0.3.0's
``InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True)``
(torch 2.13, CPU) with random weights drawn by ``random_weights.random_state_dict`` from
seed 0, and stored the input images and pytorch-fid's features and FID. The same
function draws the same weights here, without torch, and kdiff's network must reproduce
the features to float32 round-off (measured ~1e-6 relative) and the FID to ~1e-6.
"""

import importlib.util
import json
import os
import sys

import numpy as np
import paths
import pytest

from kdiff import metrics
from kdiff.fid import inception, weights
from kdiff.fid.extractors import FIDInceptionFeatures
from kdiff.fid.inception import FIDInceptionV3, TorchBilinearResize

FIXTURES = os.path.join(paths.FIXTURES, "fid_inception")


def _random_weights_module():
    spec = importlib.util.spec_from_file_location("fid_random_weights", os.path.join(FIXTURES, "random_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


random_weights = _random_weights_module()


def _relative_error(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.fixture(scope="session")
def reference():
    with np.load(os.path.join(FIXTURES, "reference.npz")) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def meta():
    import json

    with open(random_weights.SPEC_FILE) as f:
        return json.load(f)["meta"]


@pytest.fixture(scope="session")
def state_dict():
    """The random pytorch-fid state dict the fixtures were made with (fc and num_batches_tracked included)."""
    return random_weights.random_state_dict(random_weights.read_spec(), seed=0)


@pytest.fixture(scope="session")
def extractor(state_dict):
    return FIDInceptionFeatures(weights=state_dict, batch_size=50)


@pytest.fixture(scope="session")
def features(extractor, reference):
    """kdiff's features of every stored image set."""
    return {name: extractor(reference[f"images_{name}"])["features"] for name in ("a", "b", "gray", "large")}


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", ["a", "b", "gray", "large"])
def test_features_match_pytorch_fid(features, reference, name):
    """32×32 and 40×40 (upsampled), 28×28 grayscale, 320×330 (downsampled): float32 round-off."""
    got, want = features[name], reference[f"features_{name}"]
    assert got.shape == want.shape == (len(reference[f"images_{name}"]), 2048)
    assert got.dtype == np.float32
    assert np.std(want, axis=0).mean() > 0.05, "degenerate reference: images give the same features"
    assert _relative_error(got, want) <= 1e-4
    # The image-dependent part, which is what FID sees, to the same relative precision.
    assert _relative_error(got - got.mean(0), want - want.mean(0)) <= 1e-4


def test_clean_resize_matches_clean_fid_resizer_into_pytorch_fid(extractor, reference):
    """resize="clean": clean-fid's own "clean" resizer (PIL bicubic per channel), then the network."""
    clean = FIDInceptionFeatures(weights=None, resize="clean")
    clean.model.set_weights(extractor.model.get_weights())
    got = clean(reference["images_a"])["features"]
    assert _relative_error(got, reference["features_a_clean"]) <= 1e-4
    assert _relative_error(got, extractor(reference["images_a"])["features"]) > 1e-3  # a different resize


@pytest.mark.parametrize("name, source, size", [("up", "a", 45), ("down", "large", 37)])
def test_resize_matches_torch_interpolate(reference, name, source, size):
    """torch's bilinear align_corners=False, source coordinates rounded as torch rounds them."""
    x = reference[f"images_{source}"][:1].astype(np.float32) / 255.0
    got = inception.torch_bilinear_resize(x, size).numpy()
    np.testing.assert_allclose(got, reference[f"resize_{name}"], rtol=0, atol=4e-7)


@pytest.mark.parametrize("key, columns", [("fid_ab", slice(None)), ("fid_ab_every8", slice(None, None, 8))])
def test_fid_matches_pytorch_fid(features, reference, key, columns):
    """kdiff.metrics on kdiff's features vs pytorch-fid's calculate_frechet_distance on its own,
    at 2048 dimensions and on every 8th feature (256-d).

    With 6 and 5 images the covariances are singular (rank 5 and 4). pytorch-fid takes
    scipy's sqrtm of their near-singular product (minutes at 2048-d on 2 cores); kdiff the
    singular values of the 6×5 product of the centred features, exactly, at once — and,
    from the statistics alone, the pivoted Cholesky route, which stops at rank 5.
    """
    want = float(reference[key])
    assert want > 10.0
    got = metrics.fid_from_features(features["a"][:, columns], features["b"][:, columns])
    assert abs(got - want) <= 1e-3 * want
    on_its_features = [reference[name][:, columns] for name in ("features_a", "features_b")]
    assert abs(metrics.fid_from_features(*on_its_features) - want) <= 1e-5 * want
    statistics = [metrics.feature_statistics(f) for f in on_its_features]
    assert abs(metrics.frechet_distance(*statistics[0], *statistics[1]) - want) <= 1e-5 * want


def test_parameter_count_matches_pytorch_fid(extractor, meta):
    model = extractor.model
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    buffers = sum(int(np.prod(v.shape)) for v in model.non_trainable_variables)
    assert trainable == meta["parameters"] == 21_785_568
    assert buffers == meta["buffers"]  # BatchNorm running means and variances


def test_state_dict_layout_is_the_checkpoint_minus_fc(extractor):
    spec = {key: tuple(shape) for key, shape, _ in random_weights.read_spec()}
    expected = weights.expected_state_dict_shapes(extractor.model)
    unused = {k for k in spec if k.startswith("fc.") or k.endswith(".num_batches_tracked")}
    assert unused >= {"fc.weight", "fc.bias"}
    assert spec["fc.weight"] == (1008, 2048)  # Inception3(num_classes=1008), no AuxLogits
    assert not any(k.startswith("AuxLogits") for k in spec)
    assert expected == {k: v for k, v in spec.items() if k not in unused}


def test_bfloat16_is_close(extractor, reference):
    fast = FIDInceptionFeatures(weights=None, compute_dtype="bfloat16")
    fast.model.set_weights(extractor.model.get_weights())
    got = fast(reference["images_b"])["features"]
    assert got.dtype == np.float32
    assert _relative_error(got, reference["features_b"]) <= 5e-2


# --------------------------------------------------------------------------- inputs


def test_grayscale_is_repeated_to_rgb(extractor, features, reference):
    gray = reference["images_gray"]
    np.testing.assert_array_equal(extractor(np.repeat(gray, 3, axis=-1))["features"], features["gray"])
    np.testing.assert_array_equal(extractor(gray[..., 0])["features"], features["gray"])  # [N, H, W]


def test_float_pixels_match_uint8(extractor, features, reference):
    images = reference["images_b"]
    np.testing.assert_array_equal(extractor(images.astype(np.float64))["features"], features["b"])
    rgba = np.concatenate([images, np.full(images.shape[:3] + (1,), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(extractor(rgba)["features"], features["b"])  # alpha dropped


@pytest.mark.parametrize(
    "images, match",
    [
        (np.full((2, 8, 8, 3), 256.0, np.float32), r"\[0, 255\]"),
        (np.full((2, 8, 8, 3), -1.0, np.float32), r"\[0, 255\]"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), r"\[0, 255\]"),
        (np.zeros((2, 8, 8, 3), np.int16), "dtype=int16"),
        (np.zeros((2, 8, 8, 2), np.uint8), "C in"),
        (np.zeros((8, 8), np.uint8), "C in"),
    ],
)
def test_bad_images_are_rejected(images, match):
    with pytest.raises(ValueError, match=match):
        inception.prepare_images(images)


def test_batches_callback_and_one_trace(extractor, features, reference):
    calls = []
    small = FIDInceptionFeatures(weights=None, batch_size=4)
    small.model.set_weights(extractor.model.get_weights())
    got = small.extract(reference["images_a"], callback=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 6), (6, 6)]
    assert _relative_error(got, features["a"]) <= 1e-5
    small.extract(reference["images_b"])  # other batch sizes and image sizes: the same trace
    assert small._forward.experimental_get_tracing_count() == 1
    empty = small(np.zeros((0, 16, 16, 3), np.uint8))["features"]
    assert empty.shape == (0, 2048) and empty.dtype == np.float32
    with pytest.raises(ValueError, match="callback"):
        small.extract(reference["images_a"], callback="print")


@pytest.mark.parametrize(
    "kwargs, match",
    [({"batch_size": 0}, "batch_size"), ({"resize": "bicubic"}, "resize"), ({"compute_dtype": "float16"}, "compute_dtype")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FIDInceptionFeatures(weights=None, **kwargs)


def test_resize_layer_round_trips_its_config():
    layer = TorchBilinearResize(17, name="r")
    clone = TorchBilinearResize.from_config(layer.get_config())
    x = np.random.default_rng(0).uniform(size=(2, 5, 9, 3)).astype(np.float32)
    assert clone.size == 17 and clone(x).shape == (2, 17, 17, 3)
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(layer(x)))
    same = np.random.default_rng(1).uniform(size=(1, 299, 299, 3)).astype(np.float32)
    np.testing.assert_array_equal(inception.torch_bilinear_resize(same).numpy(), same)  # 299 → 299: identity


# --------------------------------------------------------------------------- weights


@pytest.fixture(scope="session")
def model(extractor):
    return extractor.model


def test_importer_rejects_a_missing_key(model, state_dict):
    state = dict(state_dict)
    del state["Mixed_6c.branch7x7dbl_3.bn.running_var"]
    with pytest.raises(ValueError, match=r"'Mixed_6c\.branch7x7dbl_3\.bn\.running_var'.*no such key"):
        weights.convert_state_dict(state, model, source="'w.npz'")


def test_importer_rejects_an_extra_key(model, state_dict):
    state = dict(state_dict, **{"AuxLogits.fc.weight": np.zeros((1008, 768), np.float32)})
    with pytest.raises(ValueError, match=r"unexpected key 'AuxLogits\.fc\.weight'"):
        weights.convert_state_dict(state, model)


def test_importer_rejects_a_wrong_shape(model, state_dict):
    state = dict(state_dict)
    state["Mixed_7c.branch_pool.conv.weight"] = np.zeros((192, 2048, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"'Mixed_7c\.branch_pool\.conv\.weight' of shape \(192, 2048, 1, 1\)"):
        weights.convert_state_dict(state, model)


def test_importer_names_the_file(tmp_path, model, state_dict):
    path = tmp_path / "broken.npz"
    state = {k: v for k, v in state_dict.items() if k != "Conv2d_1a_3x3.conv.weight"}
    np.savez(path, **state)
    with pytest.raises(ValueError, match=r"broken\.npz.*'Conv2d_1a_3x3\.conv\.weight'|'Conv2d_1a_3x3\.conv\.weight'.*broken\.npz"):
        weights.load_pytorch_fid_weights(model, path)


def test_importer_accepts_pytorch_fid_module_keys_and_maps_layouts(model, state_dict):
    prefixes = {v: k for k, v in weights._BLOCK_NAMES.items()}
    renamed = {}
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        renamed[f"{prefixes[head]}.{rest}" if head in prefixes else key] = value
    converted = weights.convert_state_dict(renamed, model)
    kernel = converted["Mixed_5b.branch5x5_2.conv/kernel"]
    np.testing.assert_array_equal(kernel, state_dict["Mixed_5b.branch5x5_2.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(converted["Mixed_5b.branch5x5_2.bn/moving_variance"],
                                  state_dict["Mixed_5b.branch5x5_2.bn.running_var"])
    assert len(converted) == len(weights.expected_state_dict_shapes(model))
    both = dict(renamed, **{"Conv2d_1a_3x3.conv.weight": state_dict["Conv2d_1a_3x3.conv.weight"]})
    with pytest.raises(ValueError, match="once"):
        weights.convert_state_dict(both, model)


def test_pth_without_torch_says_how_to_convert(tmp_path, monkeypatch):
    path = tmp_path / "pt_inception.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(ImportError, match=r"pip install torch.*python -m kdiff\.fid\.weights convert"):
        weights.read_state_dict(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        weights.read_state_dict(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="source"):
        weights.read_state_dict(42)


def test_convert_command_checks_then_writes(tmp_path, state_dict):
    source, target = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(source, **state_dict)
    assert weights.main(["convert", str(source), str(target)]) == 0
    with np.load(target) as data:
        assert sorted(data.files) == sorted(state_dict)
        np.testing.assert_array_equal(data["Mixed_7c.branch1x1.conv.weight"], state_dict["Mixed_7c.branch1x1.conv.weight"])
    broken = tmp_path / "broken.npz"
    np.savez(broken, **{k: v for k, v in state_dict.items() if k != "fc.bias" and not k.startswith("Mixed_7c.")})
    with pytest.raises(ValueError, match="Mixed_7c"):
        weights.main(["convert", str(broken), str(tmp_path / "never.npz")])
    assert not (tmp_path / "never.npz").exists()


# --------------------------------------------------------------------------- finding the file


@pytest.fixture
def no_download(monkeypatch):
    def _download(url, path):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(weights, "_download", _download)
    monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)


def test_reuses_torch_hubs_cached_file(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert weights.default_weights_path() == str(cached)
    assert weights.fetch_weights() == str(cached)
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.torch_hub_checkpoint_dir() == str(tmp_path / "xdg" / "torch" / "hub" / "checkpoints")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.torch_hub_checkpoint_dir() == str(tmp_path / "home" / ".cache" / "torch" / "hub" / "checkpoints")


def test_environment_variable_names_the_file(tmp_path, monkeypatch, no_download):
    local = tmp_path / "fid.npz"
    local.write_bytes(b"weights")
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(local))
    assert weights.fetch_weights(cache_dir=tmp_path / "elsewhere") == str(local)
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "missing.npz"))
    with pytest.raises(FileNotFoundError, match=weights.WEIGHTS_ENV):
        weights.fetch_weights()


def test_downloads_a_missing_file_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
    calls = []

    def _download(url, path):
        calls.append((url, path))
        with open(path, "wb") as f:
            f.write(b"weights")

    monkeypatch.setattr(weights, "_download", _download)
    path = weights.fetch_weights(cache_dir=tmp_path)
    assert path == str(tmp_path / weights.FID_WEIGHTS_FILENAME)
    assert calls == [(weights.FID_WEIGHTS_URL, path)]
    assert weights.fetch_weights(cache_dir=tmp_path) == path and len(calls) == 1

    def _offline(url, path):
        raise OSError("network unreachable")

    monkeypatch.setattr(weights, "_download", _offline)
    with pytest.raises(OSError, match="by hand"):
        weights.fetch_weights(cache_dir=tmp_path / "empty")


def test_download_writes_through_a_temporary_file(tmp_path):
    """The real _download, on a file:// URL (no network): complete file renamed into place."""
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 3_000_000)
    target = tmp_path / "cache" / "pt.pth"
    weights._download(source.as_uri(), str(target))
    assert target.read_bytes() == source.read_bytes()
    assert os.listdir(target.parent) == ["pt.pth"]
    with pytest.raises(OSError):
        weights._download((tmp_path / "nothing").as_uri(), str(tmp_path / "cache" / "other.pth"))
    assert os.listdir(target.parent) == ["pt.pth"]  # nothing left behind


def test_package_exports():
    import kdiff.fid

    assert kdiff.fid.FIDInceptionV3 is FIDInceptionV3
    assert kdiff.fid.load_pytorch_fid_weights is weights.load_pytorch_fid_weights
    with pytest.raises(AttributeError):
        kdiff.fid.nothing  # noqa: B018


@pytest.mark.slow
def test_the_command_prints_pytorch_fids_fid(tmp_path, state_dict, reference, capsys):
    """``python -m kdiff.fid A.npz B.npz --weights W.npz`` gives pytorch-fid's FID of the same images."""
    from kdiff.fid import cli

    np.savez(tmp_path / "weights.npz", **state_dict)
    np.savez(tmp_path / "a.npz", images=reference["images_a"])
    np.savez(tmp_path / "b.npz", images=reference["images_b"])
    status = cli.main([
        str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--weights", str(tmp_path / "weights.npz"),
        "--bootstrap", "0", "--fid-inf-points", "0", "--quiet", "--json", str(tmp_path / "out.json"),
    ])
    out = capsys.readouterr().out
    assert status == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert _relative_error(result["fid"], float(reference["fid_ab"])) < 1e-3
    assert result["num_images"] == [6, 5] and "comparable with pytorch-fid's" in out
