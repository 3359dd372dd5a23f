"""kdiff.models.NCSNpp, its FIR resampling, and ScoreSDE's conditioning conventions.

Output equality with diffusers' NCSN++ layout is in convert/test_diffusers.py; here: the
FIR filters against their definition, the published model's parameter count, the config
round trip, training inside ScoreSDE, and the "time" / "sigma" conventions.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from paths import FIXTURES
from tiny_network import TinyNet

import kdiff
from kdiff import sde as sde_lib
from kdiff.models import NCSNpp
from kdiff.models import layers as L

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

_TAPS = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0


def _fir_1d(x, up):
    """The definition along axis 1: zero-stuff (up), pad, filter, keep every second (down)."""
    n = x.shape[1]
    if up:
        stuffed = np.zeros((x.shape[0], 2 * n) + x.shape[2:])
        stuffed[:, ::2] = x
        padded = np.pad(stuffed, [(0, 0), (2, 1)] + [(0, 0)] * (x.ndim - 2))
        return np.stack([2.0 * np.tensordot(padded[:, j:j + 4], _TAPS, axes=([1], [0]))
                         for j in range(2 * n)], axis=1)
    padded = np.pad(x, [(0, 0), (1, 1)] + [(0, 0)] * (x.ndim - 2))
    return np.stack([np.tensordot(padded[:, 2 * i:2 * i + 4], _TAPS, axes=([1], [0]))
                     for i in range(n // 2)], axis=1)


def _fir_2d(x, up):
    h = _fir_1d(x, up)
    return np.swapaxes(_fir_1d(np.swapaxes(h, 1, 2), up), 1, 2)


def test_fir_resampling_is_the_separable_1331_filter():
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 3))
    np.testing.assert_allclose(L.fir_downsample(tf.constant(x, tf.float32)).numpy(), _fir_2d(x, False),
                               atol=1e-5)
    np.testing.assert_allclose(L.fir_upsample(tf.constant(x, tf.float32)).numpy(), _fir_2d(x, True),
                               atol=1e-5)
    ones = tf.ones((1, 8, 8, 1))  # a constant image stays constant away from the border
    np.testing.assert_allclose(L.fir_upsample(ones).numpy()[0, 2:-2, 2:-2, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(L.fir_downsample(ones).numpy()[0, 1:-1, 1:-1, 0], 1.0, atol=1e-6)


def test_celebahq_256_has_the_checkpoint_parameter_count():
    path = os.path.join(FIXTURES, "diffusers", "parameter_counts.json")
    with open(path) as file:
        expected = json.load(file)["ncsnpp_celebahq_256"]  # diffusers' UNet2DModel of that config
    net = NCSNpp.celebahq_256()
    assert net.count_params() == expected
    assert net.conditioning == "sigma"
    assert net.channels == (128, 128, 256, 256, 256, 256, 256) and net.attention_resolutions == (16,)


def _randomized(net, seed=0):
    rng = np.random.default_rng(seed)
    for w in net.weights:
        value = np.asarray(w.numpy())
        if not np.any(value):
            w.assign((0.05 * rng.standard_normal(value.shape)).astype(value.dtype))
    return net


def test_config_round_trip_and_keras_file(tmp_path):
    net = _randomized(NCSNpp.small(image_size=8, in_channels=1, head_channels=8))
    x = np.random.default_rng(1).random((2, 8, 8, 1)).astype(np.float32)
    sigma = np.array([0.05, 3.0], np.float32)
    expected = net(x, sigma).numpy()
    config = net.get_config()
    clone = NCSNpp.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(net.get_weights())
    np.testing.assert_allclose(clone(x, sigma).numpy(), expected, atol=1e-6)
    path = str(tmp_path / "ncsnpp.keras")
    keras.saving.save_model(net, path)
    np.testing.assert_allclose(keras.saving.load_model(path)([x, sigma]).numpy(), expected, atol=1e-6)
    # The output is divided by σ: the network returns a score.
    assert np.abs(expected[1]).mean() < np.abs(expected[0]).mean()


@pytest.mark.parametrize("kwargs,match", [
    (dict(channels=(32, 36)), "divisible by its groups"),
    (dict(attention_resolutions=(3,)), "attention_resolutions"),
    (dict(image_size=10, channels=(32, 32, 32)), "image_size"),
    (dict(embedding="learned"), "embedding"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NCSNpp(**{"image_size": 8, "channels": (32, 32), "num_res_blocks": 1,
                  "attention_resolutions": (4,), **kwargs})


@pytest.mark.slow
def test_trains_inside_score_sde():
    net = NCSNpp.small(image_size=8, in_channels=1)
    model = kdiff.ScoreSDE(net, sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0, N=10),
                           data_range=(0.0, 1.0))
    assert model.conditioning == "sigma"  # from the network
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    data = np.random.default_rng(0).random((8, 8, 8, 1)).astype(np.float32)
    history = model.fit(data, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    clone = kdiff.ScoreSDE.from_config(model.get_config())
    assert clone.conditioning == "sigma" and isinstance(clone.network, NCSNpp)


def test_score_sde_conditioning_conventions():
    sde = sde_lib.VESDE(sigma_min=0.1, sigma_max=10.0, N=5)
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 8, 8, 1)), tf.float32)
    t = tf.constant([0.25, 1.0])
    sigma = sde.sigma(t)
    time_model = kdiff.ScoreSDE(TinyNet(), sde)  # a network without a convention: "time"
    assert time_model.conditioning == "time"
    expected = -time_model.network(x, t * 4.0) / tf.reshape(sigma, [-1, 1, 1, 1])
    np.testing.assert_allclose(time_model.model_fn(ema=False)(x, t).numpy(), expected.numpy(), rtol=1e-5)
    sigma_model = kdiff.ScoreSDE(TinyNet(), sde, conditioning="sigma")
    np.testing.assert_allclose(sigma_model.model_fn(ema=False)(x, t).numpy(),
                               sigma_model.network(x, sigma).numpy(), rtol=1e-5)
    assert sigma_model.get_config()["conditioning"] == "sigma"
    assert "t*(N-1)" in time_model.export_config()["level"]
    with pytest.raises(ValueError, match="conditioning"):
        kdiff.ScoreSDE(TinyNet(), sde, conditioning="log_sigma")
