"""Tests for kdiff.convert.ncsn: ermongroup/ncsn's CondRefineNetDilated checkpoints in kdiff.

The reference fixture (``../shared/fixtures/ncsn_refinenet/``, beside the repository; made
by running the reference code with random weights, ngf 16, in the CelebA layout) holds the
reference's checkpoint, its state dict as ``.npz`` and the reference's output on three
inputs. The tests that need it skip where it is absent (a user's clone); the rest build
small networks of their own. torch is needed only for the ``.pth`` test, which skips
without it.
"""

import os

import numpy as np
import pytest
from paths import REPO

import kdiff
from kdiff.convert import ncsn as convert
from kdiff.models import RefineNet

# Keras' own variable-to-numpy conversion (get_weights) warns under NumPy 2.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

_FIXTURE = os.path.join(REPO, "..", "shared", "fixtures", "ncsn_refinenet")


def _fixture(name):
    path = os.path.join(_FIXTURE, name)
    if not os.path.isfile(path):
        pytest.skip(f"the NCSN reference fixture is not here ({path}): it lives beside the "
                    "repository, in ../shared/fixtures/, not in a clone")
    return path


@pytest.fixture(scope="session")
def state_dict():
    """The reference's state dict (random weights, ngf 16), keys with ``module.``."""
    with np.load(_fixture("state_dict.npz")) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def golden():
    with np.load(_fixture("golden.npz")) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def converted():
    """The fixture checkpoint through the .npz path, with the CelebA preset's settings."""
    return kdiff.from_ncsn_checkpoint(_fixture("state_dict.npz"), "celeba", ngf=16)


def _weights(network):
    return [np.asarray(w.numpy()) for w in network.weights]


# --------------------------------------------------------------------------- the reference


def test_converted_network_equals_the_reference_output(converted, golden):
    """network(x, labels) on x in [0, 1] equals the reference's net(x, labels), NHWC."""
    ref = golden["score_nhwc"]
    tol = 1e-4 * np.abs(ref).max()
    for network in (converted.network, converted.ema_network):  # sampling uses the EMA copy
        out = network(golden["x_nhwc"], golden["labels"]).numpy()
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=0, atol=tol)


def test_converted_model_has_the_reference_settings(converted):
    assert isinstance(converted, kdiff.NCSN)
    np.testing.assert_allclose(np.asarray(converted.process),
                               np.geomspace(1.0, 0.01, 10), rtol=1e-12)
    assert converted.data_range == (0.0, 1.0)
    assert converted.image_shape == (32, 32, 3)
    net = converted.network
    assert (net.ngf, net.in_channels, net.num_classes, net.center_input) == (16, 3, 10, True)
    assert converted.ema_network.center_input  # the EMA copy is built from get_config


def test_pth_checkpoint_reads_as_the_npz(state_dict):
    pytest.importorskip("torch", reason="reading the reference's .pth checkpoint needs torch "
                                        "(not a kdiff dependency); the .npz path is tested "
                                        "without it")
    from_pth = convert.read_ncsn_state_dict(_fixture("checkpoint.pth"))
    assert set(from_pth) == {key[len("module."):] for key in state_dict}
    for key, value in state_dict.items():
        np.testing.assert_array_equal(from_pth[key[len("module."):]], value)


def test_round_trip_to_the_reference_layout_is_exact(converted, state_dict):
    """reference → kdiff → reference gives back every array, bit for bit."""
    back = kdiff.convert.to_ncsn_state_dict(converted.network)
    assert set(back) == set(state_dict)
    for key, value in state_dict.items():
        assert back[key].dtype == np.float32
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    bare = kdiff.convert.to_ncsn_state_dict(converted.network, prefix="")
    assert set(bare) == {key[len("module."):] for key in state_dict}


def test_round_trip_from_kdiff_and_center_input():
    """kdiff → reference layout → kdiff; center_input=True is the network on 2x − 1."""
    plain = RefineNet(image_size=8, in_channels=1, num_classes=3, ngf=4)
    centered = RefineNet(image_size=8, in_channels=1, num_classes=3, ngf=4, center_input=True)
    exported = kdiff.convert.to_ncsn_state_dict(plain)
    assert all(key.startswith("module.") for key in exported)
    assert len(exported) == len(plain.weights)
    kdiff.convert.load_ncsn_state_dict(centered, exported)
    for a, b in zip(_weights(plain), _weights(centered)):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype(np.float32)
    labels = np.array([0, 2])
    np.testing.assert_allclose(centered(x, labels).numpy(), plain(2 * x - 1, labels).numpy(),
                               rtol=0, atol=1e-5)
    assert RefineNet.from_config(centered.get_config()).center_input


# --------------------------------------------------------------------------- bad inputs


def test_missing_unexpected_and_misshaped_keys_fail_naming_them(converted, state_dict):
    network = converted.network
    before = _weights(network)
    missing = dict(state_dict)
    del missing["module.refine2.msf.convs.1.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['refine2\.msf\.convs\.1\.bias'\]"):
        kdiff.convert.load_ncsn_state_dict(network, missing)
    extra = dict(state_dict, **{"module.res5.0.conv1.weight": np.zeros((1,), np.float32)})
    with pytest.raises(ValueError, match=r"unexpected keys \['res5\.0\.conv1\.weight'\]"):
        kdiff.convert.load_ncsn_state_dict(network, extra)
    misshaped = dict(state_dict)
    misshaped["module.res2.0.shortcut.conv.weight"] = np.zeros((32, 16, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"Expected `res2\.0\.shortcut\.conv\.weight` of shape "
                                         r"\(32, 16, 1, 1\).*Received: .*\(32, 16, 3, 3\)"):
        kdiff.convert.load_ncsn_state_dict(network, misshaped)
    for a, b in zip(before, _weights(network)):  # nothing was assigned
        np.testing.assert_array_equal(a, b)


def test_settings_that_disagree_with_the_weights_fail():
    path = _fixture("state_dict.npz")
    with pytest.raises(ValueError, match=r"Expected `ngf` to match the checkpoint's weights "
                                         r"\(16\)\. Received: ngf=128"):
        kdiff.from_ncsn_checkpoint(path, "celeba")  # the real CelebA model has ngf 128
    with pytest.raises(ValueError, match=r"`channels`.*\(3\)\. Received: channels=1"):
        kdiff.from_ncsn_checkpoint(path, {"ngf": 16}, channels=1)
    with pytest.raises(ValueError, match="Expected `config` to be one of"):
        kdiff.from_ncsn_checkpoint(path, "lsun")
    with pytest.raises(ValueError, match=r"unknown keys \['depth'\]"):
        kdiff.from_ncsn_checkpoint(path, {"depth": 3})


def test_files_that_are_not_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kdiff.from_ncsn_checkpoint(tmp_path / "nothing.pth")
    text = tmp_path / "notes.npz"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="Expected an .npz of.*numpy cannot read"):
        kdiff.from_ncsn_checkpoint(text)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"CondRefineNetDilated.*no `begin_conv\.weight`"):
        kdiff.from_ncsn_checkpoint(other)
    pth = tmp_path / "notes.pth"
    pth.write_text("not a checkpoint")
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install torch"):
            kdiff.from_ncsn_checkpoint(pth)
    else:
        with pytest.raises(ValueError, match="torch cannot read"):
            kdiff.from_ncsn_checkpoint(pth)


def test_missing_torch_is_named(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    pth = tmp_path / "checkpoint.pth"
    pth.write_bytes(b"\x80\x02")
    with pytest.raises(ImportError, match=r"needs torch: `pip install torch`"):
        kdiff.from_ncsn_checkpoint(pth)


def test_presets_follow_anneal_yml():
    celeba = convert.ncsn_config("celeba")
    assert celeba == dict(image_size=32, channels=3, ngf=128, num_classes=10,
                          sigma_begin=1.0, sigma_end=0.01)
    assert convert.ncsn_config("mnist")["image_size"] == 28
    celeba["ngf"] = 1  # a fresh dict each call
    assert convert.ncsn_config("celeba")["ngf"] == 128
