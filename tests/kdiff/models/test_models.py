"""Tests for kdiff.models: the U-Net, NCSN's RefineNet and their layers.

Parameter counts of the published models, one numerical fact per layer, output shapes for
every option, config / ``.keras`` round trips, XLA, mixed precision and argument checks.
Forward passes use small configurations so that the file runs in well under a minute.
"""

import contextlib
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdiff import kernels, models
from kdiff.models import RefineNet, UNet
from kdiff.models import layers as L

# Keras' own variable-to-numpy conversion (saving, get_weights) warns under NumPy 2.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _randomize_zero_weights(model, seed=0):
    """Gives the zero-initialized weights (last convs, projections, biases) random values,
    so that outputs depend on every path and round trips compare something non-trivial."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = np.asarray(w.numpy())
        if not np.any(value):
            w.assign((0.05 * rng.standard_normal(value.shape)).astype(value.dtype))


def _images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture
def mixed_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


# --------------------------------------------------------------------------- parameter counts


def test_ddpm_cifar10_parameter_count():
    net = UNet.ddpm_cifar10()
    count = net.count_params()
    assert abs(count - 35_746_307) / 35_746_307 < 0.01, count
    assert count == 35_746_307  # exact: the layout of diffusion_tf/models/unet.py


def test_ddpm_celebahq_parameter_count():
    net = UNet.ddpm_celebahq()
    count = net.count_params()
    assert abs(count - 114e6) / 114e6 < 0.02, count


def _ncsn_reference_count(ngf, channels, num_classes):
    """Parameters of CondRefineNetDilated, counted from the layer list of the reference code."""

    def conv(cin, cout, k, bias=True):
        return k * k * cin * cout + (cout if bias else 0)

    def cin(f):
        return 3 * f * num_classes

    def crb(i, o, down=False, dil=False):
        n = cin(i)
        if down:
            n += conv(i, i, 3) + cin(i) + conv(i, o, 3) + conv(i, o, 3 if dil else 1)
        else:
            n += conv(i, o, 3) + cin(o) + conv(o, o, 3) + (conv(i, o, 3 if dil else 1) if i != o else 0)
        return n

    def rcu(f, blocks):
        return blocks * 2 * (cin(f) + conv(f, f, 3, bias=False))

    def refine(in_planes, f, start=False, end=False):
        n = sum(rcu(p, 2) for p in in_planes)
        if not start:
            n += sum(cin(p) + conv(p, f, 3) for p in in_planes)
        n += 2 * (cin(f) + conv(f, f, 3, bias=False))  # CRP
        return n + rcu(f, 3 if end else 1)

    g = ngf
    total = conv(channels, g, 3) + cin(g) + conv(g, channels, 3)
    total += crb(g, g) * 2 + crb(g, 2 * g, down=True) + crb(2 * g, 2 * g)
    total += crb(2 * g, 2 * g, down=True, dil=True) + crb(2 * g, 2 * g, dil=True)
    total += crb(2 * g, 2 * g, down=True, dil=True) + crb(2 * g, 2 * g, dil=True)
    total += refine([2 * g], 2 * g, start=True) + refine([2 * g, 2 * g], 2 * g)
    total += refine([2 * g, 2 * g], g) + refine([g, g], g, end=True)
    return total


def test_ncsn_cifar10_parameter_count_matches_reference_layer_list():
    net = RefineNet.cifar10()
    assert net.count_params() == _ncsn_reference_count(128, 3, 10)


def test_small_presets_are_cpu_sized():
    assert 0.5e6 <= UNet.small().count_params() <= 2e6
    assert RefineNet.small().count_params() < 2e6


# --------------------------------------------------------------------------- layers


def test_sinusoidal_embedding_matches_ddpm_formula():
    t = np.array([0, 1, 17, 999], dtype=np.int32)
    for dim in (32, 33):
        half = dim // 2
        freqs = np.exp(-math.log(10000) * np.arange(half) / (half - 1))
        args = t[:, None].astype(np.float64) * freqs[None]
        expected = np.concatenate([np.sin(args), np.cos(args)], axis=1)
        if dim % 2:
            expected = np.pad(expected, [[0, 0], [0, 1]])
        out = L.SinusoidalEmbedding(dim)(tf.constant(t)).numpy()
        assert out.shape == (4, dim)
        np.testing.assert_allclose(out, expected, atol=2e-4)
    # A float t gives the same features as the equal int.
    np.testing.assert_allclose(
        L.SinusoidalEmbedding(32)(tf.constant(t, tf.float32)).numpy(),
        L.SinusoidalEmbedding(32)(tf.constant(t)).numpy(),
    )


def test_gaussian_fourier_features_formula():
    layer = L.GaussianFourierFeatures(512, scale=16.0)
    v = np.array([0.0, 0.3, -1.5], np.float32)
    out = layer(tf.constant(v)).numpy()
    w = layer.frequencies.numpy()
    args = 2 * np.pi * v[:, None] * w[None]
    np.testing.assert_allclose(out, np.concatenate([np.sin(args), np.cos(args)], 1), atol=1e-3)
    assert not layer.frequencies.trainable
    assert 12.0 < w.std() < 20.0  # N(0, 16²) frequencies


def test_resblock_is_identity_at_init_and_skip_rescale_divides():
    x = _images((2, 8, 8, 32))
    emb = _images((2, 16), seed=1)
    for adaptive in (False, True):
        block = L.ResBlock(adaptive_norm=adaptive, dropout=0.1)
        np.testing.assert_allclose(block(x, emb, training=True).numpy(), x, atol=1e-6)
    block = L.ResBlock(skip_rescale=True)
    np.testing.assert_allclose(block(x, emb).numpy(), x / math.sqrt(2), atol=1e-6)
    # Without an embedding, and with a channel change: the 1×1 skip convolution alone.
    block = L.ResBlock(64)
    out = block(x).numpy()
    np.testing.assert_allclose(out, block.skip(x).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="emb"):
        block(x, emb)


def test_resblock_resampling_shapes():
    x = _images((2, 8, 8, 32))
    emb = _images((2, 16), seed=1)
    assert L.ResBlock(64, up=True)(x, emb).shape == (2, 16, 16, 64)
    assert L.ResBlock(down=True, adaptive_norm=True)(x, emb).shape == (2, 4, 4, 32)
    # BigGAN down-block at init: average-pooled input.
    pooled = x.reshape(2, 4, 2, 4, 2, 32).mean(axis=(2, 4))
    np.testing.assert_allclose(L.ResBlock(down=True)(x, emb).numpy(), pooled, atol=1e-6)


def test_attention_block_is_permutation_equivariant():
    x = _images((2, 4, 4, 64))
    block = L.AttentionBlock(num_heads=2)
    np.testing.assert_allclose(block(x).numpy(), x, atol=1e-6)  # zero-initialized projection
    _randomize_zero_weights(block)
    perm = np.random.default_rng(3).permutation(16)
    flat = x.reshape(2, 16, 64)
    permuted = flat[:, perm].reshape(2, 4, 4, 64)
    out = block(x).numpy().reshape(2, 16, 64)
    out_permuted = block(permuted).numpy().reshape(2, 16, 64)
    np.testing.assert_allclose(out_permuted, out[:, perm], atol=1e-5)
    assert not np.allclose(out, flat, atol=1e-3)
    assert L.AttentionBlock(head_channels=32).heads_for(64) == 2
    with pytest.raises(ValueError, match="num_heads"):
        L.AttentionBlock(num_heads=3)(x)


def test_downsample_and_upsample():
    x = _images((2, 8, 8, 32))
    np.testing.assert_allclose(
        L.Downsample(with_conv=False)(x).numpy(), x.reshape(2, 4, 2, 4, 2, 32).mean(axis=(2, 4)),
        atol=1e-6,
    )
    np.testing.assert_allclose(L.Upsample(with_conv=False)(x).numpy(),
                               x.repeat(2, axis=1).repeat(2, axis=2))
    assert L.Downsample()(x).shape == (2, 4, 4, 32)
    assert L.Upsample(out_channels=64)(x).shape == (2, 16, 16, 64)


def test_conditional_instance_norm_plus_statistics():
    x = _images((3, 8, 8, 16)) * 3.0 + 2.0 * _images((3, 1, 1, 16), seed=1)
    labels = np.array([0, 2, 1], np.int32)
    norm = L.ConditionalInstanceNorm2dPlus(16, 3)
    norm.build(x.shape)
    rng = np.random.default_rng(2)
    gamma = rng.uniform(0.5, 2.0, (3, 16))
    beta = rng.standard_normal((3, 16))
    norm.embedding.assign(np.concatenate([gamma, np.zeros((3, 16)), beta], 1).astype(np.float32))
    out = norm(x, labels).numpy()
    np.testing.assert_allclose(out.mean(axis=(1, 2)), beta[labels], atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2)), gamma[labels], rtol=1e-3)
    # α = 1, γ = 1, β = 0: the channel means become the normalized channel means
    # (torch.var: unbiased over the channels).
    norm.embedding.assign(np.concatenate([np.ones((3, 32)), np.zeros((3, 16))], 1).astype(np.float32))
    means = x.mean(axis=(1, 2))
    expected = (means - means.mean(1, keepdims=True)) / np.sqrt(means.var(1, ddof=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(norm(x, labels).numpy().mean(axis=(1, 2)), expected, atol=1e-4)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernel", "tensorflow-ops"])
@pytest.mark.parametrize("channels, groups", [(8, 8), (12, 3)])
def test_group_norm_is_kerass_group_normalization_in_fewer_ops(channels, groups, fused):
    """Values and gradients (input, γ, β) equal keras.layers.GroupNormalization's to float32
    round-off, with one channel a group and with several, also for an unknown spatial
    size, computed by the fused kernel and by TensorFlow's ops; the forward and backward
    pass take at most 120 graph ops with TensorFlow's (209 in Keras' form)."""
    if fused and kernels.library("group_norm") is None:
        pytest.skip(f"no fused kernel here: {kernels.status('group_norm')}")
    rng = np.random.default_rng(0)
    ours = L.GroupNorm(groups, epsilon=1e-6)
    reference = keras.layers.GroupNormalization(groups, epsilon=1e-6)
    for layer in (ours, reference):
        layer.build((None, 5, 6, channels))
        layer.set_weights([rng.standard_normal(channels).astype(np.float32) for _ in range(2)])
        rng = np.random.default_rng(0)  # the same γ, β for both
    x = (3.0 * rng.standard_normal((3, 5, 6, channels)) + 1.0).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)

    def values_and_gradients(layer, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            total = tf.reduce_sum(y * dy)
        return [y, *tape.gradient(total, [x, *layer.trainable_weights])]

    expected = values_and_gradients(reference, tf.constant(x))
    for spec in ((None, None, None, channels), (None, 5, 6, channels)):
        traced = tf.function(lambda x: values_and_gradients(ours, x), input_signature=[tf.TensorSpec(spec)])
        with contextlib.nullcontext() if fused else kernels.without_fused_kernels():
            graph = traced.get_concrete_function().graph
        for got, want in zip(traced(tf.constant(x)), expected):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=2e-5)
    op_types = [op.type for op in graph.get_operations()]
    assert ("KdiffGroupNorm" in op_types) == fused
    assert len(op_types) <= 120  # the batch unknown, as in fit


def test_bilinear_resize_with_aligned_corners_matches_tf1():
    x = _images((2, 5, 7, 3))
    ours = L.resize_bilinear_align_corners(tf.constant(x), (10, 13)).numpy()
    ref = tf.compat.v1.image.resize_bilinear(x, (10, 13), align_corners=True).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_ncsn_blocks():
    x = _images((2, 8, 8, 16))
    labels = np.array([1, 3], np.int32)
    assert L.ConditionalResidualBlock(32, 4, resample="down")(x, labels).shape == (2, 4, 4, 32)
    assert L.ConditionalResidualBlock(32, 4, resample="down", dilation=2)(x, labels).shape == (2, 8, 8, 32)
    assert L.ConditionalResidualBlock(16, 4, dilation=4)(x, labels).shape == (2, 8, 8, 16)
    # Zero convolutions: an RCU is the identity and a CRP block is ELU(x).
    rcu = L.CondRCUBlock(2, 2, 4)
    rcu.build(x.shape)
    crp = L.CondCRPBlock(2, 4)
    crp.build(x.shape)
    for conv in rcu.convs + crp.convs:
        conv.kernel.assign(np.zeros(conv.kernel.shape, np.float32))
    np.testing.assert_allclose(rcu(x, labels).numpy(), x, atol=1e-6)
    np.testing.assert_allclose(crp(x, labels).numpy(), keras.activations.elu(x).numpy(), atol=1e-6)
    coarse = _images((2, 4, 4, 32), seed=1)
    assert L.CondMSFBlock(16, 4)([x, coarse], labels).shape == (2, 8, 8, 16)
    assert L.CondRefineBlock(16, 4)([x, coarse], labels).shape == (2, 8, 8, 16)
    assert L.CondRefineBlock(32, 4, start=True)([coarse], labels).shape == (2, 4, 4, 32)


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize(
    "options, channels_out",
    [
        (dict(), 1),
        (dict(learned_variance=True), 2),
        (dict(out_channels=3, learned_variance=True), 6),
        (dict(adaptive_norm=True, resblock_updown=True, skip_rescale=True, head_channels=32), 1),
        (dict(embedding="fourier", attention_resolutions=(8, 4), num_heads=2), 1),
    ],
)
def test_unet_output_shapes(options, channels_out):
    config = dict(image_size=8, in_channels=1, base_channels=32, channel_mult=(1, 2),
                  num_res_blocks=1, attention_resolutions=(4,), dropout=0.1)
    net = UNet(**{**config, **options})
    x = _images((3, 8, 8, 1))
    t = np.array([0.01, 0.5, 0.99], np.float32) if options.get("embedding") else np.array([0, 5, 999])
    out = net(x, t, training=True)
    assert out.shape == (3, 8, 8, channels_out)
    assert np.all(np.isfinite(out.numpy()))


def test_unet_class_conditioning_and_calling_conventions():
    net = UNet.small(image_size=8, num_classes=5, num_res_blocks=1)
    _randomize_zero_weights(net)
    x = _images((2, 8, 8, 1))
    t = np.array([3, 700], np.int32)
    y = np.array([0, 4], np.int32)
    out = net(x, t, y).numpy()
    np.testing.assert_allclose(net([x, t, y]).numpy(), out, atol=1e-6)
    assert not np.allclose(net(x, t, np.array([1, 2], np.int32)).numpy(), out, atol=1e-4)
    # A scalar t is broadcast to the batch.
    np.testing.assert_allclose(net(x, 7, y).numpy(), net(x, np.array([7, 7]), y).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="class labels"):
        net(x, t)
    unconditional = UNet.small(image_size=8, num_res_blocks=1)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(x, t, y)
    # Functional wrapping with keras.Input (the SavedModel / export path).
    xi, ti = keras.Input((8, 8, 1)), keras.Input((), dtype="int32")
    wrapped = keras.Model([xi, ti], unconditional([xi, ti]))
    np.testing.assert_allclose(wrapped([x, t]).numpy(), unconditional(x, t).numpy(), atol=1e-6)


def test_unet_gradients_reach_every_weight():
    net = UNet.small(image_size=8, num_res_blocks=1, dropout=0.1)
    _randomize_zero_weights(net)
    x = _images((2, 8, 8, 1))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(net(x, np.array([1, 2]), training=True)))
    grads = tape.gradient(loss, net.trainable_weights)
    assert all(g is not None for g in grads)
    assert len(net.non_trainable_weights) == 0 or all(
        "seed" in w.path or "frequencies" in w.path for w in net.non_trainable_weights)


def test_ncsn_shapes_and_label_dependence():
    net = RefineNet.small(image_size=8, in_channels=3, num_classes=4)
    x = _images((2, 8, 8, 3))
    out = net(x, np.array([0, 3], np.int32))
    assert out.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(net([x, np.array([0, 3])]).numpy(), out.numpy(), atol=1e-6)
    net.norm_out.embedding.assign(_images(net.norm_out.embedding.shape))
    assert not np.allclose(net(x, np.array([1, 2])).numpy(), net(x, np.array([0, 3])).numpy())


def _round_trip_cases():
    x8 = _images((2, 8, 8, 1))
    return [
        (lambda: UNet.small(image_size=8, num_res_blocks=1, num_classes=3, adaptive_norm=True,
                            learned_variance=True),
         (x8, np.array([5, 9]), np.array([0, 2]))),
        (lambda: UNet.small(image_size=8, num_res_blocks=1, embedding="fourier",
                            resblock_updown=True, skip_rescale=True),
         (x8, np.array([0.1, 0.9], np.float32))),
        (lambda: RefineNet.small(image_size=8, num_classes=4), (x8, np.array([1, 3]))),
    ]


@pytest.mark.parametrize("case", range(3))
def test_get_config_from_config_round_trip(case):
    make, args = _round_trip_cases()[case]
    net = make()
    _randomize_zero_weights(net)
    config = net.get_config()
    clone = type(net).from_config(config)
    assert clone.get_config() == config
    clone.set_weights(net.get_weights())
    np.testing.assert_allclose(clone(*args).numpy(), net(*args).numpy(), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("case", [0, 2])
def test_keras_save_and_load(tmp_path, case):
    make, args = _round_trip_cases()[case]
    net = make()
    _randomize_zero_weights(net)
    expected = net(*args).numpy()
    path = str(tmp_path / "net.keras")
    keras.saving.save_model(net, path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(net)
    np.testing.assert_allclose(loaded(*args).numpy(), expected, atol=1e-6)


@pytest.mark.slow
def test_xla_compiled_forward_matches_eager():
    for make, args in _round_trip_cases()[::2]:
        net = make()
        _randomize_zero_weights(net)
        fn = tf.function(lambda *a, net=net: net(*a), jit_compile=True)
        args = tuple(tf.constant(a) for a in args)
        np.testing.assert_allclose(fn(*args).numpy(), net(*args).numpy(), atol=1e-4)


def test_mixed_bfloat16_forward_is_finite(mixed_bfloat16):
    net = UNet.small(image_size=8, num_res_blocks=1, attention_resolutions=(8, 4),
                     adaptive_norm=True)
    assert net.compute_dtype == "bfloat16" and net.variable_dtype == "float32"
    _randomize_zero_weights(net)
    x = _images((2, 8, 8, 1))
    out = net(x, np.array([10, 990]))
    assert np.all(np.isfinite(out.numpy().astype(np.float32)))
    ncsn = RefineNet.small(image_size=8, num_classes=4)
    out = ncsn(x, np.array([0, 3]))
    assert np.all(np.isfinite(out.numpy().astype(np.float32)))
    # Timestep embeddings stay exact in float32 before the cast (999 is not a bfloat16).
    emb = L.SinusoidalEmbedding(8)(tf.constant([999.0]))
    assert emb.dtype == "bfloat16"
    expected = L.SinusoidalEmbedding(8, dtype="float32")(tf.constant([999.0]))
    np.testing.assert_allclose(tf.cast(emb, tf.float32).numpy(), expected.numpy(), atol=1e-2)


def test_mixed_policy_as_a_constructor_argument():
    net = UNet.small(image_size=8, num_res_blocks=1, dtype="mixed_bfloat16")
    assert net.down_blocks[0][0][0].compute_dtype == "bfloat16"
    out = net(_images((1, 8, 8, 1)), np.array([3]))
    assert out.dtype == "float32"  # the head runs in the variable dtype


# --------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image_size=30), "image_size"),
        (dict(image_size=32, base_channels=48), "base_channels"),
        (dict(image_size=32, num_heads=3, base_channels=32), "num_heads"),
        (dict(image_size=32, head_channels=48), "head_channels"),
        (dict(image_size=32, attention_resolutions=(12,)), "attention_resolutions"),
        (dict(image_size=32, embedding="learned"), "embedding"),
        (dict(image_size=32, dropout=1.5), "dropout"),
        (dict(image_size=32, channel_mult=()), "channel_mult"),
        (dict(image_size=32, num_classes=0), "num_classes"),
    ],
)
def test_unet_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_bad_call_inputs():
    net = UNet.small(image_size=8, num_res_blocks=1)
    t = np.array([1, 2])
    with pytest.raises(ValueError, match=r"Expected `x` of shape \[None, 8, 8, 1\]"):
        net(_images((2, 8, 8, 3)), t)
    with pytest.raises(ValueError, match=r"Received: x.shape=\[2, 16, 16, 1\]"):
        net(_images((2, 16, 16, 1)), t)
    with pytest.raises(ValueError, match="`t`"):
        net(_images((2, 8, 8, 1)))
    ncsn = RefineNet.small(image_size=8, num_classes=4)
    with pytest.raises(ValueError, match="x.shape"):
        ncsn(_images((2, 8, 8, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="integer noise-level"):
        ncsn(_images((2, 8, 8, 1)), np.array([0.1, 0.2], np.float32))
    with pytest.raises(ValueError, match="image_size"):
        RefineNet(image_size=15)
    with pytest.raises(ValueError, match="ngf"):
        RefineNet(image_size=16, ngf=1)
    with pytest.raises(ValueError, match="resample"):
        L.ConditionalResidualBlock(8, 4, resample="up")
    with pytest.raises(ValueError, match="dim"):
        L.SinusoidalEmbedding(2)
    with pytest.raises(ValueError, match="dim"):
        L.GaussianFourierFeatures(7)


def test_exports():
    for name in models.__all__:
        assert hasattr(models, name)


@pytest.mark.slow
def test_registered_names_do_not_clash_with_the_diffusion_wrappers(tmp_path):
    """kdiff.diffusion registers its own ``NCSN``; the networks live under "kdiff.models"."""
    diffusion = pytest.importorskip("kdiff.diffusion")
    assert keras.saving.get_registered_name(RefineNet) == "kdiff.models>NCSN"
    assert keras.saving.get_registered_object("kdiff.models>NCSN") is RefineNet
    assert keras.saving.get_registered_object("kdiff.models>UNet") is UNet
    net = RefineNet.small(image_size=8, num_classes=10)
    model = diffusion.NCSN(net, ema_decay=0.0)
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
    path = str(tmp_path / "ncsn.keras")
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.network) is RefineNet
    labels = np.array([0, 9, 3, 5])
    np.testing.assert_allclose(loaded.network(x, labels).numpy(), net(x, labels).numpy(), atol=1e-6)


def test_the_old_network_name_warns_and_gives_refinenet():
    """``kdiff.models.NCSN`` (and ``kdiff.models.ncsn.NCSN``) is the RefineNet for one release."""
    with pytest.warns(DeprecationWarning, match=r"kdiff\.models\.RefineNet"):
        assert models.NCSN is RefineNet
    with pytest.warns(DeprecationWarning, match=r"kdiff\.models\.RefineNet"):
        from kdiff.models.ncsn import NCSN
    assert NCSN is RefineNet
    assert "NCSN" not in models.__all__  # a star import stays quiet
    with pytest.raises(AttributeError, match="NoSuchNetwork"):
        models.NoSuchNetwork


def _as_saved_before_the_split(path):
    """Rewrites a ``.keras`` file as kdiff wrote it before the layers' split and the network's
    rename: in config.json every layer's module ``kdiff.models.layers`` and the RefineNet's
    class ``NCSN`` of module ``kdiff.models.ncsn`` (the registered names never changed); in
    the weights, a RefineNet held in a list (a diffusion model's ``layers``) under ``ncsn``,
    Keras' snake-cased class name."""
    import io
    import zipfile

    import h5py

    def old(node):
        if isinstance(node, dict):
            if str(node.get("module", "")).startswith("kdiff.models.layers."):
                node["module"] = "kdiff.models.layers"
            if node.get("class_name") == "RefineNet":
                node.update(class_name="NCSN", module="kdiff.models.ncsn")
            for value in node.values():
                old(value)
        elif isinstance(node, list):
            for value in node:
                old(value)

    with zipfile.ZipFile(path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    old(config)
    files["config.json"] = json.dumps(config).encode()
    weights = io.BytesIO(files["model.weights.h5"])
    with h5py.File(weights, "r+") as f:
        if "layers/refine_net" in f:
            f.move("layers/refine_net", "layers/ncsn")
    files["model.weights.h5"] = weights.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return json.dumps(config)


def test_models_saved_before_the_split_and_the_rename_load(tmp_path):
    """Saved ``.keras`` files name the layers' old module and the network's old class, and
    hold a diffusion model's RefineNet under its old name: they load (by the registered
    names, which the split and the rename kept) with the same outputs."""
    from kdiff import diffusion, schedules

    for layer in (L.ResBlock, L.AttentionBlock, L.Downsample, L.SinusoidalEmbedding, L.CondRCUBlock,
                  L.ConditionalInstanceNorm2dPlus):
        assert keras.saving.get_registered_name(layer) == f"kdiff.models>{layer.__name__}"
    x = _images((2, 8, 8, 32))
    blocks = keras.Sequential([keras.Input((8, 8, 32)), L.ResBlock(32), L.AttentionBlock(),
                               L.Downsample(), L.Upsample(out_channels=16)])
    _randomize_zero_weights(blocks)
    net = RefineNet(image_size=4, in_channels=1, num_classes=2, ngf=2)
    ncsn = diffusion.NCSN(net, schedules.geometric_sigmas(1.0, 0.1, 2), ema_decay=0.0)
    x4, labels = _images((2, 4, 4, 1)), np.array([0, 1])
    for model, call, was in ((blocks, lambda m: m(x), '"module": "kdiff.models.layers"'),
                             (ncsn, lambda m: m.network(x4, labels), '"module": "kdiff.models.ncsn"')):
        path = str(tmp_path / f"{model.name}.keras")
        keras.saving.save_model(model, path)
        assert was in _as_saved_before_the_split(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is type(model)
        np.testing.assert_array_equal(call(loaded).numpy(), call(model).numpy())
