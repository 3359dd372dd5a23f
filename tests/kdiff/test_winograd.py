"""kdiff.kernels.conv2d_3x3: the Winograd F(2×2, 3×3) kernel equals TensorFlow's
convolution — values (odd sizes, padding, bias), first and second derivatives — gives the
closed form of an all-ones filter, is deterministic, names bad shapes, and is used only
where it pays (float32, enough channels, CPU, outside XLA, kernels switched on); the
models' Conv2D layer is Keras' Conv2D computed by it."""

import numpy as np
import pytest
import tensorflow as tf
import keras
from derivatives import hessian_vector, jvp

from kdiff import kernels
from kdiff.kernels.convolution import WINOGRAD_MIN_CHANNELS, conv2d_3x3
from kdiff.models.layers._common import Conv2D

pytestmark = pytest.mark.skipif(kernels.library("winograd") is None,
                                reason=f"no Winograd kernel here: {kernels.status('winograd')}")


def _case(shape, filters, seed=0):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    kernel = tf.constant((rng.standard_normal((3, 3, shape[-1], filters)) / np.sqrt(9 * shape[-1])).astype(np.float32))
    bias = tf.constant(rng.standard_normal(filters).astype(np.float32))
    return x, kernel, bias


def _direct(x, kernel, bias):
    return tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias)


def _winograd(x, kernel, bias):
    return kernels.library("winograd").kdiff_winograd_conv2d(x, kernel, bias)


def _kdiff_ops(function, *args):
    graph = tf.function(function).get_concrete_function(*args).graph
    return sorted({op.type for op in graph.get_operations() if op.type.startswith("Kdiff")})


@pytest.mark.parametrize("shape, filters", [
    ((2, 5, 7, 3), 4),       # odd height and width: the last tiles are cut
    ((1, 1, 1, 2), 2),       # one pixel: every tap but the centre is padding
    ((3, 8, 8, 16), 8),
    ((2, 6, 10, 130), 129),  # channels past any vector width
    ((0, 4, 4, 8), 8),       # an empty batch
    ((4, 33, 35, 128), 128),  # past 16 MB of transforms: blocks of tiles, not the whole call
])
def test_values_equal_tensorflows_convolution(shape, filters):
    x, kernel, bias = _case(shape, filters)
    got, want = _winograd(x, kernel, bias).numpy(), _direct(x, kernel, bias).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_an_all_ones_filter_counts_the_taps_inside_the_image():
    """Ones in, ones as filter: each output is the channels times the 3×3 taps that fall
    inside the image — 9 inside, 6 on an edge, 4 in a corner — plus the bias."""
    x = tf.ones((1, 5, 6, 4))
    y = _winograd(x, tf.ones((3, 3, 4, 2)), tf.constant([0.5, -1.0])).numpy()
    rows = np.array([2, 3, 3, 3, 2])[:, None] * np.array([2, 3, 3, 3, 3, 2])[None, :]
    np.testing.assert_array_equal(y, 4.0 * rows[None, :, :, None] + np.array([0.5, -1.0]))


@pytest.mark.parametrize("channels, filters", [(8, 6), (WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS + 8)],
                         ids=["direct-input-gradient", "winograd-input-gradient"])
def test_gradients_are_tensorflows(channels, filters):
    """With enough channels the input gradient is the Winograd kernel again (by the turned
    kernel), and still TensorFlow's gradient."""
    x, kernel, bias = _case((2, 6, 5, channels), filters)
    dy = tf.constant(np.random.default_rng(1).standard_normal((2, 6, 5, filters)).astype(np.float32))

    def gradients(conv):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            y = conv(x, kernel, bias)
        return tape.gradient(y, [x, kernel, bias], output_gradients=dy)

    for got, want in zip(gradients(_winograd), gradients(_direct)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)

    def gradient_graph_ops(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = _winograd(x, kernel, bias)
        return tape.gradient(y, x, output_gradients=dy)

    expected = ["KdiffWinogradConv2D"] * (1 + (min(channels, filters) >= WINOGRAD_MIN_CHANNELS))
    graph = tf.function(gradient_graph_ops).get_concrete_function(x).graph
    assert sorted(op.type for op in graph.get_operations() if op.type.startswith("Kdiff")) == expected


def test_second_derivatives_and_forward_mode_are_tensorflows():
    """At 128 channels: the Hessian-vector product differentiates the Winograd input
    gradient, itself the kernel, again."""
    x, kernel, bias = _case((1, 4, 4, WINOGRAD_MIN_CHANNELS), WINOGRAD_MIN_CHANNELS)
    v = tf.constant(np.random.default_rng(2).standard_normal(x.shape).astype(np.float32))

    for product in (hessian_vector, jvp):
        got, want = (product(lambda x: conv(x, kernel, bias), x, v) for conv in (_winograd, _direct))
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_same_input_gives_the_same_bits():
    x, kernel, bias = _case((4, 16, 16, 128), 128)
    first, second = (_winograd(x, kernel, bias).numpy() for _ in range(2))
    assert first.tobytes() == second.tobytes()


def test_bad_shapes_are_named():
    x, kernel, bias = _case((1, 4, 4, 8), 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"filter shaped \[3, 3, 8, filters\]"):
        _winograd(x, kernel[:, :, :6], bias)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"bias shaped \[4\]"):
        _winograd(x, kernel, bias[:3])
    with pytest.raises(ValueError, match=r"`kernel` \[3, 3, channels, filters\]. Received: .*kernel.shape=\[5, 5, 8, 4\]"):
        conv2d_3x3(x, tf.zeros((5, 5, 8, 4)))
    with pytest.raises(ValueError, match=r"`kernel` \[3, 3, 8, filters\] for `x` of 8 channels. Received: .*kernel.shape=\[3, 3, 6, 4\]"):
        conv2d_3x3(x, kernel[:, :, :6])
    with pytest.raises(ValueError, match=r"`bias` of shape \[4\] \(the kernel's filters\). Received: bias.shape=\[3\]"):
        conv2d_3x3(x, kernel, bias[:3])


def test_used_only_where_it_pays():
    """float32 with enough channels on the CPU: the kernel; fewer channels, bfloat16, XLA,
    or kernels switched off: TensorFlow's convolution, with the same result."""
    x, kernel, bias = _case((2, 4, 4, WINOGRAD_MIN_CHANNELS), WINOGRAD_MIN_CHANNELS)
    conv = lambda x: conv2d_3x3(x, kernel, bias)  # noqa: E731
    assert _kdiff_ops(conv, x) == ["KdiffWinogradConv2D"]
    small = _case((2, 4, 4, WINOGRAD_MIN_CHANNELS // 2), WINOGRAD_MIN_CHANNELS)
    assert _kdiff_ops(lambda x: conv2d_3x3(x, small[1], small[2]), small[0]) == []
    assert _kdiff_ops(lambda x: conv2d_3x3(x, tf.cast(kernel, tf.bfloat16)), tf.cast(x, tf.bfloat16)) == []
    with kernels.without_fused_kernels():
        assert _kdiff_ops(conv, x) == []
    compiled = tf.function(conv, jit_compile=True)
    np.testing.assert_allclose(compiled(x).numpy(), _direct(x, kernel, bias).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_the_models_conv2d_is_keras_conv2d(policy):
    """Same weights, same config, same outputs (float32: by the kernel; mixed_bfloat16: by
    TensorFlow's bfloat16 convolution) and gradients as keras.layers.Conv2D."""
    x, _, _ = _case((2, 6, 6, WINOGRAD_MIN_CHANNELS), 4)
    ours = Conv2D(WINOGRAD_MIN_CHANNELS, 3, padding="same", bias_initializer="random_normal", dtype=policy)
    ours.build(x.shape)
    reference = keras.layers.Conv2D.from_config(ours.get_config())
    reference.build(x.shape)
    reference.set_weights(ours.get_weights())
    assert type(keras.layers.deserialize(keras.layers.serialize(ours))) is Conv2D

    def values_and_gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x), tf.float32)
            loss = tf.reduce_sum(tf.sin(y))
        return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]

    tolerance = 1e-4 if policy == "float32" else 0.0
    for got, want in zip(values_and_gradients(ours), values_and_gradients(reference)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=tolerance, atol=tolerance)
    expected = ["KdiffWinogradConv2D"] if policy == "float32" else []
    assert _kdiff_ops(lambda x: ours(x), x) == expected
