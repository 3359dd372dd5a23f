"""Classifier-free guidance: label dropout in training, the guided mix at sampling, the export.

The closed form: for class-conditional Gaussian data N(μ_c, s² I) and an unconditional
model of N(μ_u, s² I), every ε-prediction is affine in the mean with the same slope, so the
guided ε_u + w·(ε_c − ε_u) is the exact ε of N(μ_u + w·(μ_c − μ_u), s² I): a
deterministic sampler driven by it must draw that Gaussian.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras

import kdiff
from kdiff.samplers import guidance
from kdiff.samplers.draw import SamplingSpec

from tiny_network import TinyNet

K = 3  # classes; the null class is K


def _model(num_network_classes=K + 1, **kwargs):
    return kdiff.DDPM(TinyNet(8, 1, num_classes=num_network_classes), num_classes=K, seed=3, **kwargs)


class _GaussianClasses:
    """Classes c with data N(means[c], s² I); the null class K has mean ``null_mean``."""

    def __init__(self, means, null_mean, s=0.2):
        self.means = np.asarray(list(means) + [null_mean], np.float64)
        self.s = s
        self.schedule = kdiff.schedules.linear()

    def make_model_fn(self, y=None, sampler=None):
        abar = tf.constant(self.schedule.alphas_cumprod, tf.float64)
        mu = tf.gather(tf.constant(self.means), tf.cast(y, tf.int32))

        def fn(x, t):
            a = tf.reshape(tf.gather(abar, t), [-1, 1, 1, 1])
            m = tf.reshape(mu, [-1, 1, 1, 1])
            var = a * self.s**2 + 1.0 - a
            x64 = tf.cast(x, tf.float64)
            return tf.cast(tf.sqrt(1.0 - a) * (x64 - tf.sqrt(a) * m) / var, x.dtype)

        return fn

    def sampling_spec(self):
        return SamplingSpec(
            make_model_fn=self.make_model_fn, process=self.schedule, image_shape=(8, 8, 1),
            num_classes=K, null_label=K,
        )


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.5])
def test_guided_ddim_draws_the_gaussian_of_the_mixed_mean(scale):
    data = _GaussianClasses(means=[0.2, -0.2, 0.1], null_mean=0.05)
    labels = np.arange(300) % K
    x = kdiff.sample(
        data, 300, sampler="ddim", steps=250, class_labels=labels, guidance_scale=scale, clip_x0=None, batch_size=300,
    )
    x = x.astype(np.float64) / 255.0 * 2.0 - 1.0  # back to the data range (uint8 rounding: ±0.004)
    for c in range(K):
        expected = data.means[K] + scale * (data.means[c] - data.means[K])
        assert abs(x[labels == c].mean() - expected) < 0.01, (c, x[labels == c].mean(), expected)
        assert abs(x[labels == c].std() - data.s) < 0.015  # DDIM's own error at 250 steps


def test_guided_output_is_the_mix_of_one_doubled_network_call():
    model = _model()
    x = tf.random.stateless_normal([4, 8, 8, 1], [0, 1])
    t = tf.constant([5, 100, 500, 999])
    y = tf.constant([0, 1, 2, 1])
    fn = guidance.guided(model.sampling_spec().make_model_fn, y, K, 3.0, channels=1)
    cond = model.model_fn(y=y)(x, t)
    uncond = model.model_fn(y=tf.fill([4], K))(x, t)
    np.testing.assert_allclose(fn(x, t), uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-6)
    # s = 1 is the conditional model itself; a tensor scale takes the same branches
    np.testing.assert_array_equal(guidance.guided(model.sampling_spec().make_model_fn, y, K, 1.0, 1)(x, t), cond)
    tensor_fn = guidance.guided(model.sampling_spec().make_model_fn, y, K, tf.constant(3.0), 1)
    np.testing.assert_allclose(tensor_fn(x, t), fn(x, t), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(guidance.guided(model.sampling_spec().make_model_fn, y, K, tf.constant(1.0), 1)(x, t), cond)


def test_a_learned_variance_keeps_the_conditional_v():
    net = TinyNet(8, 1, out_channels=2, num_classes=K + 1)
    model = kdiff.DDPM(net, num_classes=K, loss="hybrid")
    x = tf.random.stateless_normal([2, 8, 8, 1], [0, 2])
    t, y = tf.constant([10, 800]), tf.constant([2, 0])
    make = model.sampling_spec().make_model_fn
    out = guidance.guided(make, y, K, 4.0, channels=1, sampler="ddpm")(x, t)
    cond, uncond = make(y=y, sampler="ddpm")(x, t), make(y=tf.fill([2], K), sampler="ddpm")(x, t)
    np.testing.assert_allclose(out[..., :1], uncond[..., :1] + 4.0 * (cond[..., :1] - uncond[..., :1]), rtol=1e-5, atol=1e-6)
    # The guided call evaluates conditional and unconditional rows as one batch of 2N, the
    # reference as two batches of N: the convolutions' kernels may round differently by
    # batch size (seen: 1 ulp), so equal to float32 round-off, not bit for bit.
    np.testing.assert_allclose(out[..., 1:], cond[..., 1:], rtol=1e-6, atol=1e-6)


def test_label_dropout_replaces_labels_by_the_null_class_at_the_rate():
    y = tf.zeros([20000], tf.int32) + 2
    uniform = tf.random.stateless_uniform([20000], [4, 5])
    dropped = guidance.drop_labels(y, K, 0.1, uniform).numpy()
    assert set(np.unique(dropped)) == {2, K}
    assert abs(np.mean(dropped == K) - 0.1) < 0.01


def test_training_sees_the_dropped_labels_and_evaluation_does_not():
    model = _model(label_dropout=0.5)
    assert (model.null_label, model.label_dropout) == (K, 0.5)
    x = tf.random.stateless_uniform([16, 8, 8, 1], [1, 1], -1.0, 1.0)
    y = tf.constant(np.arange(16) % K, tf.int32)
    seed = tf.constant([7, 8], tf.int64)
    uniform = tf.random.stateless_uniform([16], kdiff._random.fold_in(seed, 3))
    expected_y = guidance.drop_labels(y, K, 0.5, uniform)
    assert 0 < int(tf.reduce_sum(tf.cast(expected_y == K, tf.int32))) < 16
    trained = model.compute_diffusion_loss(x, y, training=True, seed=seed)
    assert float(trained) == pytest.approx(float(model.compute_diffusion_loss(x, expected_y, training=False, seed=seed)), rel=1e-6)
    assert float(trained) != pytest.approx(float(model.compute_diffusion_loss(x, y, training=False, seed=seed)), rel=1e-6)


def test_label_dropout_defaults_to_a_tenth_with_a_null_class_and_round_trips(tmp_path):
    assert _model().label_dropout == 0.1
    assert _model(num_network_classes=K).label_dropout == 0.0
    assert _model(num_network_classes=K).null_label is None
    model = _model(label_dropout=0.2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)).astype("float32")
    model.fit(x, np.arange(16) % K, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert (loaded.null_label, loaded.label_dropout) == (K, 0.2)
    np.testing.assert_array_equal(
        loaded.generate(3, sampler="ddim", steps=4, class_labels=1, guidance_scale=2.0),
        model.generate(3, sampler="ddim", steps=4, class_labels=1, guidance_scale=2.0),
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_network_classes=K, label_dropout=0.1), "num_classes=4 .*null class"),
        (dict(label_dropout=1.0), "label_dropout"),
        (dict(label_dropout=-0.1), "label_dropout"),
    ],
)
def test_label_dropout_needs_a_null_class_and_a_probability(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _model(**kwargs)


def test_label_dropout_on_an_unconditional_model_is_an_error():
    with pytest.raises(ValueError, match="num_classes"):
        kdiff.DDPM(TinyNet(8, 1), label_dropout=0.1)


@pytest.mark.parametrize(
    "model, kwargs, match",
    [
        (lambda: kdiff.DDPM(TinyNet(8, 1)), dict(guidance_scale=2.0), "unconditional"),
        (lambda: _model(num_network_classes=K), dict(guidance_scale=2.0), "null class"),
        (lambda: _model(), dict(guidance_scale=-1.0), "guidance_scale"),
        (lambda: _model(), dict(guidance_scale=float("inf")), "guidance_scale"),
        (lambda: _model(), dict(guidance_scale=2.0, class_labels=K), "class_labels"),
    ],
)
def test_bad_guidance_is_a_clear_error(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kdiff.sample(model(), 2, sampler="ddim", steps=2, **kwargs)


def test_guidance_works_for_score_models_with_every_family_sampler():
    net = TinyNet(8, 1, num_classes=K + 1)
    model = kdiff.ScoreSDE(net, kdiff.sde.VPSDE(N=20), num_classes=K)
    assert model.null_label == K
    guided = model.generate(2, sampler="euler_maruyama", steps=5, class_labels=0, guidance_scale=3.0)
    plain = model.generate(2, sampler="euler_maruyama", steps=5, class_labels=0)
    assert guided.shape == plain.shape == (2, 8, 8, 1)
    # The images of a random network saturate to 0 / 255 whichever the scale, so the guidance
    # is checked on the score the sampler runs: uncond + 3 (cond − uncond).
    spec = model.sampling_spec()
    x, t, y = tf.random.stateless_normal([2, 8, 8, 1], [5, 6]), tf.constant([0.3, 0.7]), tf.constant([0, 0])
    score = spec.with_guidance(3.0).model_fn(y=y, sampler="euler_maruyama")(x, t)
    cond = spec.model_fn(y=y, sampler="euler_maruyama")(x, t)
    uncond = spec.model_fn(y=tf.fill([2], K), sampler="euler_maruyama")(x, t)
    np.testing.assert_allclose(score, uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(score) - np.asarray(cond)).max() > 1e-3


@pytest.mark.slow
def test_the_export_generates_guided_samples_as_kdiff_sample_does(tmp_path, grappler):
    model = _model()
    path = model.export(tmp_path / "export", sampler="ddim")
    loaded = kdiff.load(path)
    assert loaded.null_label == K
    direct = model.generate(4, sampler="ddim", steps=6, class_labels=2, guidance_scale=3.0, seed=1)
    np.testing.assert_array_equal(loaded.generate(4, steps=6, class_labels=2, guidance_scale=3.0, seed=1), direct)
    np.testing.assert_array_equal(
        loaded.generate(4, steps=6, class_labels=2, seed=1),
        model.generate(4, sampler="ddim", steps=6, class_labels=2, seed=1),
    )
    via_denoise = kdiff.sample(loaded, 4, sampler="ddim", steps=6, class_labels=2, guidance_scale=3.0, seed=1)
    assert np.abs(via_denoise.astype(int) - direct).max() <= 1
    with pytest.raises(tf.errors.InvalidArgumentError, match="guidance_scale"):
        loaded.signatures["generate"](
            seed=tf.constant(0, tf.int64), num_samples=tf.constant(1), steps=tf.constant(2),
            class_labels=tf.constant([0]), guidance_scale=tf.constant(-2.0),
        )
    config = kdiff.export.read_config(path)
    assert config["null_label"] == K
    assert "guidance_scale" in config["signatures"]["generate"]["inputs"]
    assert os.path.isdir(path)
