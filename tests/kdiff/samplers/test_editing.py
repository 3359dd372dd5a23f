"""Inpainting and img2img (kdiff.samplers.editing) on the Gaussian oracle, and the CLI commands.

Gaussian data has an exact ε and score at every level, so the statistics of the filled
pixels can be checked against closed forms: with independent pixels the filled ones must
follow the data's marginal whatever the known ones are; with correlated pixels their mean
must move from the prior mean μ_u to the conditional mean μ_u + Σ_uk Σ_kk⁻¹ (x_k − μ_k).
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import GaussianData
from PIL import Image
from tiny_network import TinyNet

import kdiff
from kdiff import export, schedules
from kdiff.samplers import editing, registry
from kdiff import sde as sde_lib
from kdiff.cli import main
from kdiff.diffusion import DDPM

SHAPE = (4, 4, 1)
LEFT = np.zeros((4, 4), np.float32)
LEFT[:, :2] = 1  # the two left columns are known


@pytest.fixture(scope="session")
def linear():
    return schedules.linear(T=1000)


def _inputs(gaussian, n=6, low=-1.0, high=1.0, seed=1):
    return np.clip(gaussian.sample((n,) + SHAPE, seed=seed), low, high)


def _pixels(x, data_range=(-1.0, 1.0)):
    return kdiff.sampling.to_uint8(x, data_range)


def _values(images, data_range=(-1.0, 1.0)):
    low, high = data_range
    return low + images.astype(np.float64) / 255.0 * (high - low)


# ------------------------------------------------------------ known pixels, every family


def _model(kind, gaussian, linear):
    """(model function, process keyword, data range) of the oracle for a process kind."""
    if kind == "schedule":
        return gaussian.eps_fn(linear), {"schedule": linear}, (-1.0, 1.0)
    if kind == "sigmas":
        return gaussian.sigma_score_fn(), {"sigmas": schedules.geometric_sigmas(1.0, 0.01, 10)}, (0.0, 1.0)
    vp = sde_lib.VPSDE(N=100) if kind == "vp" else sde_lib.VESDE(sigma_min=0.01, sigma_max=10.0, N=100)
    return gaussian.sde_score_fn(vp), {"sde": vp}, (-1.0, 1.0)


CASES = [
    ("schedule", "ddpm", {"steps": 20}),
    ("schedule", "ddim", {"steps": 10}),
    ("schedule", "dpm_solver", {"steps": 10}),
    ("schedule", "heun", {"steps": 6}),
    ("schedule", "euler_ancestral", {"steps": 10}),
    ("sigmas", "annealed_langevin", {"steps": 5, "step_lr": 1e-4}),
    ("sigmas", "euler", {"steps": 10}),
    ("vp", "predictor_corrector", {"steps": 20}),
    ("vp", "dpm_solver", {"steps": 10}),
    ("ve", "euler_maruyama", {"steps": 20}),
    ("vp", "probability_flow", {"steps": 20, "method": "heun"}),
]


@pytest.mark.parametrize("kind, sampler, options", CASES, ids=[f"{k}-{s}" for k, s, _ in CASES])
def test_inpainting_keeps_the_known_pixels_and_fills_the_others(gaussian, linear, kind, sampler, options):
    model, process, data_range = _model(kind, gaussian, linear)
    images = _pixels(_inputs(gaussian, low=data_range[0], high=data_range[1]), data_range)
    out = kdiff.inpaint(model, images, LEFT, sampler=sampler, seed=3, **process, **options)
    assert out.dtype == np.uint8 and out.shape == images.shape
    np.testing.assert_array_equal(out[:, :, :2], images[:, :, :2])
    filled = _values(out[:, :, 2:], data_range)
    assert filled.std() > 0.05  # samples, not a constant
    assert abs(filled.mean() - gaussian.mu) < 0.15


def test_float_images_keep_their_known_values(gaussian, linear):
    images = _inputs(gaussian)
    out = kdiff.inpaint(gaussian.eps_fn(linear), images, LEFT, sampler="ddim", steps=5, schedule=linear)
    np.testing.assert_array_equal(out[:, :, :2], _pixels(images)[:, :, :2])


def test_mask_conventions_and_shapes_agree(gaussian, linear):
    images = _pixels(_inputs(gaussian, n=3))
    kw = dict(sampler="ddim", steps=5, schedule=linear, seed=1)
    model = gaussian.eps_fn(linear)
    reference = kdiff.inpaint(model, images, LEFT, **kw)
    for mask in (LEFT[..., None], np.broadcast_to(LEFT[None, ..., None], (3, 4, 4, 1)), LEFT.astype(bool), LEFT[None]):
        np.testing.assert_array_equal(kdiff.inpaint(model, images, mask, **kw), reference)
    np.testing.assert_array_equal(kdiff.inpaint(model, images, 1 - LEFT, mask_convention="repaint", **kw), reference)


# ------------------------------------------------------------------ statistical facts


def test_with_independent_pixels_the_filled_ones_follow_the_data(linear):
    """Known pixels far from the mean: independent unknown pixels must not notice them."""
    gaussian = GaussianData(mu=0.2, s=0.3)
    images = np.full((2000,) + SHAPE, 0.9, np.float32)
    for sampler, steps in (("ddpm", 100), ("ddim", 50)):
        out = kdiff.inpaint(gaussian.eps_fn(linear), images, LEFT, sampler=sampler, steps=steps, schedule=linear,
                            batch_size=2000)
        filled = _values(out[:, :, 2:])
        assert abs(filled.mean() - 0.2) < 0.02, sampler
        assert abs(filled.std() - 0.3) < 0.03, sampler


class CorrelatedGaussian:
    """N(μ, Σ) data on 2×2 images (4 pixels, row-major), Σ = s² ρ^|i−j|, with its exact ε."""

    def __init__(self, mu=0.1, s=0.3, rho=0.9):
        index = np.arange(4)
        self.mu = np.full(4, mu)
        self.sigma = s**2 * rho ** np.abs(index[:, None] - index[None, :])
        self.s = s

    def eps_fn(self, schedule):
        """E[ε | x_t] = √(1 − ᾱ) (ᾱΣ + (1 − ᾱ) I)⁻¹ (x_t − √ᾱ μ), through Σ's eigenvectors."""
        lam, vectors = np.linalg.eigh(self.sigma)
        abar = tf.constant(schedule.alphas_cumprod, tf.float32)
        lam, vectors, mu = (tf.constant(v, tf.float32) for v in (lam, vectors, self.mu))

        def fn(x, t):
            a = tf.gather(abar, t)[:, None]
            y = (tf.reshape(x, [-1, 4]) - tf.sqrt(a) * mu) @ vectors / (a * lam + 1.0 - a)
            return tf.reshape(tf.sqrt(1.0 - a) * y @ tf.transpose(vectors), tf.shape(x))

        return fn

    def conditional_mean(self, known, x_known):
        unknown = [i for i in range(4) if i not in known]
        gain = self.sigma[np.ix_(unknown, known)] @ np.linalg.inv(self.sigma[np.ix_(known, known)])
        return self.mu[unknown] + gain @ (x_known - self.mu[known])


def test_with_correlated_pixels_the_filled_mean_moves_to_the_conditional_mean(linear):
    """Top row known at μ + 1.5 s; the bottom row's conditional mean is (0.505, 0.465) where
    the prior's is 0.1. Replacement alone (score_sde's method) gets part of the way — the
    known pixels reach the unknown ones only through noisy copies (measured: 0.387, 0.324
    with DDPM-1000; 0.315, 0.255 with DDIM-50); RePaint's resampling (jump 1, 20 passes)
    closes most of the gap (measured error 0.016 with DDPM-50)."""
    data = CorrelatedGaussian()
    x_known = data.mu[:2] + 1.5 * data.s
    exact = data.conditional_mean([0, 1], x_known)
    images = np.zeros((2000, 2, 2, 1), np.float32)
    images[:, 0, :, 0] = x_known
    mask = np.array([[1, 1], [0, 0]], np.float32)
    model = data.eps_fn(linear)

    def filled_mean(sampler, steps, **options):
        out = kdiff.inpaint(model, images, mask, sampler=sampler, steps=steps, schedule=linear, batch_size=2000,
                            **options)
        return _values(out).reshape(-1, 4)[:, 2:].mean(axis=0)

    for sampler, steps in (("ddpm", 100), ("ddim", 50)):
        mean = filled_mean(sampler, steps)
        assert np.all(mean > data.mu[2:] + 0.1) and np.all(mean < exact), (sampler, mean)
    resampled = filled_mean("ddpm", 50, resample=20, jump_length=1)
    np.testing.assert_allclose(resampled, exact, atol=0.03)
    assert np.abs(resampled - exact).max() < np.abs(filled_mean("ddpm", 50) - exact).max() / 3


# ------------------------------------------------------------------------------ img2img


def test_img2img_strength_0_is_the_input(gaussian, linear):
    images = _pixels(_inputs(gaussian))
    for given in (images, _inputs(gaussian)):
        np.testing.assert_array_equal(kdiff.img2img(gaussian.eps_fn(linear), given, 0.0, schedule=linear), images)


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver"])
def test_img2img_strength_1_is_a_sample_from_the_same_seed(gaussian, linear, sampler):
    images, model = _pixels(_inputs(gaussian, n=3)), gaussian.eps_fn(linear)
    np.testing.assert_array_equal(
        kdiff.img2img(model, images, 1.0, sampler=sampler, steps=8, schedule=linear, seed=5),
        kdiff.sample(model, len(images), sampler=sampler, steps=8, schedule=linear, seed=5, image_shape=SHAPE),
    )


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm_solver", "euler"])
def test_img2img_stays_closer_to_the_input_the_lower_the_strength(gaussian, linear, sampler):
    images = _pixels(_inputs(gaussian, n=64))
    model = gaussian.eps_fn(linear)

    def distance(strength):
        out = kdiff.img2img(model, images, strength, sampler=sampler, steps=20, schedule=linear, seed=2)
        return np.abs(_values(out) - _values(images)).mean()

    low, middle, high = distance(0.1), distance(0.3), distance(1.0)
    # measured (mean |output − input| in data units at 0.1, 0.3, 1): DDIM 0.115, 0.243, 0.289; DDPM 0.119,
    # 0.269, 0.276; DPM-Solver++ 0.173, 0.259, 0.296 (its 2 last steps start at t = 100, DDIM's at t = 50);
    # Euler 0.021, 0.219, 0.294
    assert low < middle < high and low < 0.6 * high, (low, middle, high)


def test_img2img_on_a_sigma_ladder_and_an_sde(gaussian):
    sigmas = {"sigmas": schedules.geometric_sigmas(1.0, 0.01, 10)}
    images = _pixels(_inputs(gaussian, low=0.0, high=1.0), (0.0, 1.0))
    out = kdiff.img2img(gaussian.sigma_score_fn(), images, 0.2, sampler="annealed_langevin", steps=5, **sigmas)
    assert out.shape == images.shape and 0 < np.abs(out.astype(int) - images).mean() < 40
    vp = sde_lib.VPSDE(N=100)
    out = kdiff.img2img(gaussian.sde_score_fn(vp), _pixels(_inputs(gaussian)), 0.5, steps=20, sde=vp)
    assert out.shape == images.shape


# ----------------------------------------------------------- seeds and compiled paths


def test_same_seed_same_images_and_compiled_agrees_with_eager(gaussian, linear):
    images = _pixels(_inputs(gaussian, n=3))
    model = gaussian.eps_fn(linear)
    kw = dict(schedule=linear, seed=4)
    a = kdiff.inpaint(model, images, LEFT, sampler="ddpm", steps=12, resample=3, jump_length=2, **kw)
    np.testing.assert_array_equal(a, kdiff.inpaint(model, images, LEFT, sampler="ddpm", steps=12, resample=3,
                                                   jump_length=2, **kw))
    eager = kdiff.inpaint(model, images, LEFT, sampler="ddpm", steps=12, resample=3, jump_length=2, compiled=False, **kw)
    assert np.abs(a.astype(int) - eager).max() <= 1
    assert not np.array_equal(a, kdiff.inpaint(model, images, LEFT, sampler="ddpm", steps=12, schedule=linear, seed=5))
    b = kdiff.img2img(model, images, 0.5, sampler="dpm_solver", steps=10, **kw)
    assert np.abs(b.astype(int) - kdiff.img2img(model, images, 0.5, sampler="dpm_solver", steps=10,
                                                compiled=False, **kw)).max() <= 1


def test_edits_run_inside_a_callers_graph(gaussian, linear):
    """The hooks are graph code: a sampler with an edit traces inside a tf.function."""
    x0 = tf.constant(_inputs(gaussian, n=2))
    known = tf.constant(np.broadcast_to(LEFT[None, ..., None], (2,) + SHAPE))
    edit = editing._Edit(x0.numpy(), known.numpy(), tf.constant([1, 2], tf.int64), resample=2, jump_length=2)
    x_T = tf.random.stateless_normal((2,) + SHAPE, seed=[0, 1])
    run = tf.function(lambda x: kdiff.samplers.ddim(gaussian.eps_fn(linear), x, linear, steps=6, edit=edit, seed=0))
    out = run(x_T).numpy()
    np.testing.assert_allclose(out[:, :, :2], x0.numpy()[:, :, :2], atol=1e-5)  # the last level is the data


def test_repaint_visits_follow_the_reference_schedule():
    """RePaint's get_schedule_jump(6, jump_length=2, jump_n_sample=3) as step indices."""
    assert editing.repaint_visits(6, 2, 3).tolist() == [0, 1, 2, 3, 2, 3, 2, 3, 4, 5, 4, 5, 4, 5]
    assert editing.repaint_visits(4, 1, 1).tolist() == [0, 1, 2, 3]


# ---------------------------------------------------------------------------- bad input


def test_the_registry_says_which_samplers_can_be_edited():
    assert editing.editable_samplers("schedule") == ["ddpm", "ddim", "dpm_solver", "heun", "euler", "euler_ancestral"]
    assert "dpm_solver" not in editing.editable_samplers("schedule", resampling=True)
    assert not registry.get("probability_flow").can_edit({"method": "RK45"})
    assert registry.get("probability_flow").can_edit({"method": "rk4"}, resampling=True)
    assert not registry.get("annealed_langevin").can_edit({}, resampling=True)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x, p: kdiff.inpaint(m, x, np.ones((4, 3)), **p), r"Expected `mask` of shape.*mask.shape=\[4, 3\]"),
        (lambda m, x, p: kdiff.inpaint(m, x, np.ones((3, 4, 4, 1)), **p), r"mask.shape=\[3, 4, 4, 1\]"),
        (lambda m, x, p: kdiff.inpaint(m, x, LEFT * 0.5, **p), r"hard `mask`.*Received: values"),
        (lambda m, x, p: kdiff.inpaint(m, x, LEFT, mask_convention="white", **p), r"mask_convention='white'"),
        (lambda m, x, p: kdiff.inpaint(m, x, LEFT, resample=0, **p), r"resample"),
        (lambda m, x, p: kdiff.inpaint(m, x, LEFT, resample=2, jump_length=10, steps=5, **p), r"jump_length=10"),
        (lambda m, x, p: kdiff.inpaint(m, x, LEFT, sampler="dpm_solver", resample=2, **p),
         r"RePaint's resampling.*\['ddpm', 'ddim', 'heun', 'euler', 'euler_ancestral'\].*sampler='dpm_solver'"),
        (lambda m, x, p: kdiff.img2img(m, x, 1.5, **p), r"`strength` in \[0, 1\]. Received: strength=1.5"),
        (lambda m, x, p: kdiff.img2img(m, x, -0.1, **p), r"strength=-0.1"),
        (lambda m, x, p: kdiff.img2img(m, x[0], 0.5, **p), r"Expected `images` of shape \[N, 4, 1\]"),
        (lambda m, x, p: kdiff.img2img(m, x * 3.0, 0.5, **p), r"data range \(-1.0, 1.0\). Received: min="),
        (lambda m, x, p: kdiff.img2img(m, x.astype(np.uint16), 0.5, **p), r"uint8 `images`.*dtype=uint16"),
        (lambda m, x, p: kdiff.img2img(m, x, 0.5, sampler="annealed_langevin", **p), r"sampler='annealed_langevin'"),
    ],
)
def test_bad_input_raises_naming_the_argument(gaussian, linear, call, message):
    with pytest.raises(ValueError, match=message):
        call(gaussian.eps_fn(linear), _inputs(gaussian, n=2), {"schedule": linear})


def test_images_must_fit_the_model_and_an_adaptive_solver_is_refused(gaussian):
    model = DDPM(TinyNet(image_size=4), schedule=schedules.linear(T=10), image_shape=SHAPE)
    with pytest.raises(ValueError, match=r"Expected `images` of shape \[N, 4, 4, 1\].*\[2, 4, 4, 3\]"):
        kdiff.img2img(model, np.zeros((2, 4, 4, 3), np.uint8), 0.5, steps=5)
    vp = sde_lib.VPSDE(N=10)
    with pytest.raises(ValueError, match=r"supports inpainting for a sde process: one of \[.*'probability_flow'.*"
                                         r"Received: sampler='probability_flow' with method='RK45'"):
        kdiff.inpaint(gaussian.sde_score_fn(vp), _inputs(gaussian, n=1), LEFT, sampler="probability_flow", sde=vp)


# ---------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("editing_cli")
    model = DDPM(TinyNet(), schedule=schedules.linear(T=100))  # 8×8 grayscale
    path = export.export(model, root / "ddpm")
    rng = np.random.default_rng(0)
    files = []
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(root / f"{name}.png")
        files.append(str(root / f"{name}.png"))
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 255
    Image.fromarray(mask, mode="L").save(root / "mask.png")
    return {"path": str(path), "root": root, "images": files, "mask": str(root / "mask.png"), "model": model}


def _read(path):
    with Image.open(path) as image:
        return np.asarray(image)


def test_cli_inpaint_and_img2img_write_one_png_per_image(exported, tmp_path, capsys):
    out = tmp_path / "filled"
    status = main(["inpaint", "--model", exported["path"], "--image", *exported["images"], "--mask", exported["mask"],
                   "--out", str(out), "--sampler", "ddim", "--steps", "4", "--seed", "1"])
    assert status == 0 and "wrote 2 images" in capsys.readouterr().out
    for name, source in zip(("a.png", "b.png"), exported["images"]):
        np.testing.assert_array_equal(_read(out / name)[:, :4], _read(source)[:, :4])
    pictures = np.stack([_read(p)[..., None] for p in exported["images"]])
    mask = (_read(exported["mask"]) == 255).astype(np.float32)
    expected = kdiff.inpaint(exported["model"], pictures, mask, sampler="ddim", steps=4, seed=1)
    np.testing.assert_array_equal(_read(out / "a.png"), expected[0, ..., 0])
    edited = tmp_path / "edited"
    assert main(["img2img", "--model", exported["path"], "--image", exported["images"][0], "--strength", "0",
                 "--out", str(edited)]) == 0
    np.testing.assert_array_equal(_read(edited / "a.png"), _read(exported["images"][0]))


def _bad_files(root):
    rgb = root / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb)
    small = root / "small.png"
    Image.fromarray(np.zeros((6, 8), np.uint8), mode="L").save(small)
    grey = root / "grey_mask.png"
    Image.fromarray(np.full((8, 8), 128, np.uint8), mode="L").save(grey)
    (root / "broken.png").write_bytes(b"not a picture")
    return {"rgb": str(rgb), "small": str(small), "grey": str(grey), "broken": str(root / "broken.png")}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image", "{small}", "--mask", "{mask}"], "small.png' is 8x6 pixels; the model takes 8x8"),
        (["--image", "{rgb}", "--mask", "{mask}"], "rgb.png' with 3 \\(RGB\\)"),
        (["--image", "{broken}", "--mask", "{mask}"], "readable image file.*broken.png"),
        (["--image", "{a}", "--mask", "{grey}"], "--mask: .*grey_mask.png' has values other than black"),
        (["--image", "{a}", "--mask", "{small}"], "--mask: .*small.png' is 8x6 pixels"),
        (["--image", "{a}", "--mask", "{mask}", "--sampler", "annealed_langevin"], "annealed_langevin"),
        (["--image", "{a}", "--mask", "{mask}", "--sampler", "dpm_solver", "--resample", "2", "--steps", "4"],
         "RePaint's resampling"),
        (["--image", "{a}", "{a}", "--mask", "{mask}"], "--image: several images would be written as \\['a.png'\\]"),
    ],
)
def test_cli_inpaint_bad_input_exits_2_naming_it_and_writes_nothing(exported, tmp_path, capsys, args, message):
    names = {**_bad_files(tmp_path), "mask": exported["mask"], "a": exported["images"][0]}
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["inpaint", "--model", exported["path"], *[a.format(**names) for a in args], "--out", str(out)])
    assert exit_info.value.code == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not out.exists()


def test_cli_img2img_bad_strength_and_model_exit_2(exported, tmp_path, capsys):
    out = tmp_path / "out"
    for args, message in (
        (["--model", exported["path"], "--strength", "1.5"], "--strength: expected a number in \\[0, 1\\]"),
        (["--model", str(tmp_path / "missing"), "--strength", "0.5"], "missing' does not exist"),
        (["--strength", "0.5"], "required: --model"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["img2img", *args, "--image", exported["images"][0], "--out", str(out)])
        assert exit_info.value.code == 2 and __import__("re").search(message, capsys.readouterr().err), args
    assert not out.exists()
