"""kdiff.sample (model → uint8 images) and kdiff.slerp."""

import numpy as np
import pytest
import tensorflow as tf

import kdiff
from kdiff import schedules
from kdiff import sde as sde_lib

SHAPE = (8, 8, 1)


def _pixel_stats(gaussian, data_range=(-1.0, 1.0)):
    """Mean and std of exact data samples turned into pixels (clipping included)."""
    pixels = kdiff.sampling.to_uint8(gaussian.sample((200000,), seed=9), data_range)
    return pixels.mean(), pixels.std()


@pytest.mark.parametrize(
    "sampler, process, options",
    [
        ("ddim", "schedule", {"steps": 500}),
        ("ddpm", "schedule", {"steps": 1000}),
        ("euler_maruyama", "sde", {"steps": 500}),
        ("predictor_corrector", "sde", {"steps": 300}),
        ("probability_flow", "sde", {}),
    ],
)
def test_sample_gives_images_with_the_data_statistics(gaussian, sampler, process, options):
    schedule, sde = schedules.linear(), sde_lib.VPSDE()
    model = gaussian.eps_fn(schedule) if process == "schedule" else gaussian.sde_score_fn(sde)
    images = kdiff.sample(
        model, 96, sampler=sampler, seed=0, batch_size=48, image_shape=SHAPE,
        schedule=schedule if process == "schedule" else None,
        sde=sde if process == "sde" else None, **options,
    )
    assert images.shape == (96,) + SHAPE and images.dtype == np.uint8
    mean, std = _pixel_stats(gaussian)
    assert abs(images.mean() - mean) < 0.03 * mean and abs(images.std() - std) < 0.05 * std


def test_annealed_langevin_in_the_unit_range(gaussian):
    sigmas = schedules.geometric_sigmas(1.0, 0.01, 10)
    images = kdiff.sample(
        gaussian.sigma_score_fn(), 64, sampler="annealed_langevin", steps=100, sigmas=sigmas,
        step_lr=2e-5, image_shape=SHAPE, data_range=(0.0, 1.0), seed=1,
    )
    mean, std = _pixel_stats(gaussian, (0.0, 1.0))
    assert abs(images.mean() - mean) < 0.03 * mean and abs(images.std() - std) < 0.05 * std


def test_same_seed_same_images_other_seed_other_images(gaussian):
    schedule = schedules.linear()
    kwargs = dict(sampler="ddim", steps=20, eta=1.0, schedule=schedule, image_shape=SHAPE, batch_size=5)
    a = kdiff.sample(gaussian.eps_fn(schedule), 12, seed=3, **kwargs)
    b = kdiff.sample(gaussian.eps_fn(schedule), 12, seed=3, **kwargs)
    c = kdiff.sample(gaussian.eps_fn(schedule), 12, seed=4, **kwargs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({img.tobytes() for img in a}) == 12  # every batch draws its own noise


def test_trajectory_images(gaussian):
    schedule = schedules.linear()
    images, trajectory = kdiff.sample(
        gaussian.eps_fn(schedule), 6, steps=10, schedule=schedule, image_shape=SHAPE,
        batch_size=4, return_trajectory=True, progress=True,
    )
    assert trajectory.shape == (11, 6) + SHAPE and trajectory.dtype == np.uint8
    np.testing.assert_array_equal(trajectory[-1], images)


def test_the_progress_bar_counts_the_samplers_steps_over_all_batches(capsys):
    from tiny_network import TinyNet

    schedule = schedules.linear(T=50)
    model = kdiff.DDPM(TinyNet(8, 1), schedule, ema_decay=0.0)
    quiet = kdiff.sample(model, 5, sampler="ddim", steps=4, seed=3, batch_size=3)
    capsys.readouterr()
    shown = kdiff.sample(model, 5, sampler="ddim", steps=4, seed=3, batch_size=3, progress=True)
    np.testing.assert_array_equal(shown, quiet)  # the same loop, reporting
    assert "8/8" in capsys.readouterr().out  # 2 batches × 4 steps
    kdiff.sample(model, 3, sampler="ddim", steps=4, seed=3, batch_size=3, progress=True)  # the cached loop
    out = capsys.readouterr().out
    assert "4/4" in out and "8/8" not in out  # this call's bar, not the first one's
    # A sampler that counts no steps (an adaptive ODE solver): the images are counted.
    sde = sde_lib.VPSDE()
    kdiff.sample(lambda x, t: -x, 4, sampler="probability_flow", sde=sde, image_shape=SHAPE, batch_size=2, progress=True)
    assert "4/4" in capsys.readouterr().out


def test_nan_model_raises_instead_of_returning_images():
    schedule = schedules.linear()
    with pytest.raises(kdiff.samplers.NonFiniteSampleError, match="step 0 of 5"):
        kdiff.sample(
            lambda x, t: tf.fill(tf.shape(x), np.nan), 4, steps=5, schedule=schedule, image_shape=SHAPE
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sampler": "no_such_sampler"}, "sampler"),
        ({"sampler": "ddim"}, "schedule"),
        ({"sampler": "euler_maruyama", "schedule": schedules.linear()}, "sde"),
        ({"sampler": "annealed_langevin"}, "sigmas"),
        ({"sampler": "ddpm", "eta": 0.5, "schedule": schedules.linear()}, "eta"),
        ({"schedule": schedules.linear(), "image_shape": None}, "image_shape"),
        ({"schedule": schedules.linear(), "batch_size": 0}, "batch_size"),
    ],
)
def test_sample_bad_input(gaussian, kwargs, match):
    options = {"image_shape": SHAPE, **kwargs}
    with pytest.raises(ValueError, match=match):
        kdiff.sample(gaussian.eps_fn(schedules.linear()), 4, **options)
    with pytest.raises(ValueError, match="num_samples"):
        kdiff.sample(gaussian.eps_fn(schedules.linear()), 0, schedule=schedules.linear(), image_shape=SHAPE)
    with pytest.raises(ValueError, match="model"):
        kdiff.sample(object(), 2, schedule=schedules.linear(), image_shape=SHAPE)


def test_slerp_endpoints_norm_and_angle():
    rng = np.random.default_rng(0)
    z0 = rng.standard_normal((3, 16, 16, 3)).astype(np.float32)
    z1 = rng.standard_normal((3, 16, 16, 3)).astype(np.float32)
    z1 *= np.linalg.norm(z0.reshape(3, -1), axis=1)[:, None, None, None] / np.linalg.norm(
        z1.reshape(3, -1), axis=1
    )[:, None, None, None]  # equal norms: slerp then walks a great circle at constant speed
    np.testing.assert_allclose(kdiff.slerp(z0, z1, 0.0), z0, atol=1e-5)
    np.testing.assert_allclose(kdiff.slerp(z0, z1, 1.0), z1, atol=1e-5)
    path = kdiff.slerp(z0, z1, np.linspace(0, 1, 9)).numpy()
    assert path.shape == (9, 3, 16, 16, 3)
    flat = path.reshape(9, 3, -1)
    norms = np.linalg.norm(flat, axis=-1)
    # Equal angular steps: consecutive interpolants are equally far apart.
    steps = np.linalg.norm(np.diff(flat, axis=0), axis=-1)
    np.testing.assert_allclose(steps, steps[:1].repeat(8, 0), rtol=1e-3)
    # The norm stays constant; linear interpolation would shrink it.
    np.testing.assert_allclose(norms, norms[:1].repeat(9, 0), rtol=1e-4)
    assert np.linalg.norm((0.5 * (z0 + z1)).reshape(3, -1), axis=-1).max() < 0.8 * norms[4].min()


def test_slerp_parallel_vectors_and_bad_alpha():
    z = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(kdiff.slerp(z, 2 * z, 0.5), 1.5 * z, rtol=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        kdiff.slerp(z, z, 1.5)
    with pytest.raises(ValueError, match="z1"):
        kdiff.slerp(z, np.ones((2, 5), np.float32), 0.5)


def _start(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


def test_x_T_is_the_starting_noise_and_batches_take_their_slices(gaussian):
    schedule = schedules.linear()
    x_T = _start(5)
    kwargs = dict(sampler="ddim", steps=10, schedule=schedule, image_shape=SHAPE, x_T=x_T)
    whole = kdiff.sample(gaussian.eps_fn(schedule), 5, seed=0, **kwargs)
    batched = kdiff.sample(gaussian.eps_fn(schedule), 5, seed=1, batch_size=2, **kwargs)  # η = 0: the seed is unused
    direct = kdiff.samplers.ddim(gaussian.eps_fn(schedule), tf.constant(x_T), schedule, 10, clip_x0=(-1.0, 1.0))
    np.testing.assert_array_equal(whole, kdiff.sampling.to_uint8(direct))
    np.testing.assert_array_equal(batched, whole)
    drawn = kdiff.sample(gaussian.eps_fn(schedule), 5, seed=0, sampler="ddim", steps=10, schedule=schedule,
                         image_shape=SHAPE)
    assert not np.array_equal(drawn, whole)  # without x_T, the prior's own draw


def test_with_x_T_the_seed_still_drives_an_ancestral_samplers_noise(gaussian):
    schedule = schedules.linear(T=50)
    kwargs = dict(sampler="ddpm", schedule=schedule, image_shape=SHAPE, x_T=_start(4))
    a, b, c = (kdiff.sample(gaussian.eps_fn(schedule), 4, seed=s, **kwargs) for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_generate_takes_x_T():
    from tiny_network import TinyNet

    model = kdiff.DDPM(TinyNet(8, 1), schedules.linear(T=50), ema_decay=0.0)
    x_T = _start(3)
    np.testing.assert_array_equal(
        model.generate(3, sampler="ddim", steps=4, x_T=x_T), kdiff.sample(model, 3, sampler="ddim", steps=4, x_T=x_T))


@pytest.mark.parametrize("x_T, match", [
    (np.zeros((3, 8, 8, 1), np.float32), r"Expected `x_T` of shape \[N, H, W, C\] = \[4, 8, 8, 1\]. Received: shape=\[3, 8, 8, 1\]"),
    (np.zeros((4, 8, 8), np.float32), r"of shape \[N, H, W, C\] = \[4, 8, 8, 1\]. Received: shape=\[4, 8, 8\]"),
    (np.zeros((4, 8, 8, 1)), r"Expected `x_T` of dtype float32 .* Received: dtype=float64"),
    (np.full((4, 8, 8, 1), np.nan, np.float32), r"Expected a finite `x_T`. Received: 256 NaN or Inf"),
])
def test_a_bad_x_T_is_named(gaussian, x_T, match):
    schedule = schedules.linear()
    with pytest.raises(ValueError, match=match):
        kdiff.sample(gaussian.eps_fn(schedule), 4, schedule=schedule, image_shape=SHAPE, x_T=x_T)
