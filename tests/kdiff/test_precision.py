"""bfloat16 inference: the network in bfloat16, the sampler in float32, the same weights."""

import numpy as np
import pytest
import tensorflow as tf

import kdiff
from kdiff import kernels
from kdiff.models import UNet


@pytest.fixture(scope="session")
def model():
    """A small U-Net DDPM whose EMA weights are perturbed (an untrained U-Net's zero output
    convolution would make every precision give the same zeros)."""
    ddpm = kdiff.DDPM(UNet.small(image_size=8, in_channels=1, num_res_blocks=1), kdiff.schedules.linear(T=100), ema_decay=0.0)
    rng = np.random.default_rng(0)
    for variable in ddpm.ema_network.weights:
        variable.assign(variable + 0.05 * rng.standard_normal(variable.shape).astype("float32"))
    return ddpm


def test_the_bfloat16_network_is_the_float32_one_to_bfloat16_round_off(model):
    x = tf.random.stateless_normal((4, 8, 8, 1), seed=[0, 1])
    t = tf.constant([5, 30, 60, 95])
    full = model.model_fn()(x, t)
    half = model.model_fn(precision="bfloat16")(x, t)
    assert half.dtype == tf.float32  # the sampler's arithmetic stays float32
    relative = float(tf.norm(full - half) / tf.norm(full))
    assert 1e-4 < relative < 0.05  # bfloat16's 8-bit mantissa: ~1 % error, not none
    twin = model.inference_network(precision="bfloat16")
    assert twin.dtype_policy.name == "mixed_bfloat16" and twin is not model.ema_network
    assert model.inference_network() is model.ema_network
    with pytest.raises(ValueError, match="precision"):
        model.inference_network(precision="float16")


def test_bfloat16_samples_are_close_reproducible_and_follow_the_weights(model):
    count = len(model.weights)
    full = kdiff.sample(model, 8, sampler="ddim", steps=10, seed=0)
    half = kdiff.sample(model, 8, sampler="ddim", steps=10, seed=0, precision="bfloat16")
    assert np.abs(full.astype(int) - half).mean() < 2.0  # pixels, of 255
    np.testing.assert_array_equal(half, model.generate(8, sampler="ddim", steps=10, seed=0, precision="bfloat16"))
    assert len(model.weights) == count  # the copy is not tracked (nor saved) as the model's
    saved = [w.numpy() for w in model.ema_network.weights]
    try:
        for variable in model.ema_network.weights:
            variable.assign(variable * 1.1)
        changed = kdiff.sample(model, 8, sampler="ddim", steps=10, seed=0, precision="bfloat16")
        assert not np.array_equal(changed, half)  # the copy took the new weights
    finally:
        for variable, value in zip(model.ema_network.weights, saved):
            variable.assign(value)
    with pytest.raises(ValueError, match=r"Expected `precision` in \['float32', 'bfloat16'\]"):
        kdiff.sample(model, 2, precision="half")


@pytest.mark.slow
def test_a_bfloat16_export_samples_as_the_in_memory_model_and_keeps_its_precision(model, tmp_path):
    path = kdiff.export.export(model, tmp_path / "bf16", precision="bfloat16")
    loaded = kdiff.load(path)
    assert loaded.config["precision"] == "bfloat16"
    exported = kdiff.sample(loaded, 6, sampler="ddim", steps=5, seed=2)
    with kernels.without_fused_kernels():  # what an export holds: TensorFlow's ops, bit for bit
        np.testing.assert_array_equal(exported, kdiff.sample(model, 6, sampler="ddim", steps=5, seed=2, precision="bfloat16"))
    fused = kdiff.sample(model, 6, sampler="ddim", steps=5, seed=2, precision="bfloat16")
    assert np.abs(fused.astype(int) - exported).max() <= 2  # bfloat16 roundings of float32 round-off
    with pytest.raises(ValueError, match="an export keeps the precision it was written with"):
        kdiff.sample(loaded, 2, precision="float32")
    with pytest.raises(ValueError, match="its network computes in float32"):  # a callable's is its own
        kdiff.sample(lambda x, t: x, 2, schedule=model.process, image_shape=(8, 8, 1), precision="bfloat16")
