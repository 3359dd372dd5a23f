"""kdiff.samplers.recipes: the survey's sampling runs by name, resolved to a sampler and its options."""

import dataclasses
import functools

import numpy as np
import pytest
import tensorflow as tf

import kdiff
from kdiff import schedules, sde
from kdiff.samplers import recipes, registry

SEED_RECIPES = {
    "ddpm_1000": ("ddpm", 1000, {"variance": "beta_tilde", "spacing": "leading"}),
    "ddpm_50": ("ddpm", 50, {"variance": "beta_tilde", "spacing": "leading"}),
    "ddim_50": ("ddim", 50, {"eta": 0.0, "clipped_eps": False}),
    "ddim_1000": ("ddim", 1000, {"eta": 0.0, "clipped_eps": False}),
    "score_sde_ve_pc": ("predictor_corrector", 2000, {
        "predictor": "reverse_diffusion", "corrector": "langevin", "n_corrector": 1, "snr": 0.075,
        "eps": 1e-5, "denoise": True, "grid": "discrete"}),
    "ncsn_annealed_langevin": ("annealed_langevin", 100, {"step_lr": 2e-5, "denoise": False}),
}


def test_recipes_resolve_to_the_documented_sampler_and_options():
    assert recipes.names() == list(SEED_RECIPES)
    for name, (sampler, steps, options) in SEED_RECIPES.items():
        recipe = recipes.get(name)
        assert (recipe.sampler, recipe.steps, dict(recipe.options)) == (sampler, steps, options)
        registry.get(sampler).check_options(dict(recipe.options))  # every option is the sampler's
        assert name in recipes.__doc__
    assert recipes.names("schedule") == ["ddpm_1000", "ddpm_50", "ddim_50", "ddim_1000"]
    assert recipes.names(sde.VESDE()) == ["score_sde_ve_pc"]
    with pytest.raises(TypeError):
        recipes.get("ddim_50").options["eta"] = 1.0  # read-only: no shared mutable state
    assert recipes.default_for("sigmas") == "ncsn_annealed_langevin"


def test_explicit_arguments_override_the_recipe():
    sampler, steps, options = recipes.resolve("ddim_50", None, 7, {"eta": 0.5, "clip_x0": None})
    assert (sampler, steps, options) == ("ddim", 7, {"eta": 0.5, "clipped_eps": False, "clip_x0": None})
    assert recipes.resolve("ddim_50", "ddim") == ("ddim", 50, {"eta": 0.0, "clipped_eps": False})
    assert recipes.resolve(None, "ddpm", 3, {"variance": "beta"}) == ("ddpm", 3, {"variance": "beta"})
    with pytest.raises(ValueError, match=r"or the recipe's \('ddim'\), with recipe='ddim_50'. Received: sampler='ddpm'"):
        recipes.resolve("ddim_50", "ddpm")
    with pytest.raises(ValueError, match=r"did you mean 'ddim_50'\?\). Received: recipe='ddim50'"):
        recipes.get("ddim50")


def _eps_fn(x, t):
    return 0.1 * x + 0.01 * tf.cast(t, x.dtype)[:, None, None, None] / 100.0


def _score_fn(x, t):
    return -x / (1.0 + tf.cast(t, x.dtype)[:, None, None, None])


def _spy(name, calls):
    """The registry entry ``name`` with a function that records its options and returns x
    (its signature, and so its options, the real sampler's)."""
    entry = registry.get(name)
    real = entry.resolve()

    @functools.wraps(real)
    def spy(model_fn, x, process, **kwargs):
        calls.append(kwargs)
        return x

    return dataclasses.replace(entry, function=spy)


@pytest.mark.parametrize(
    "recipe, process, given, expected",
    [
        ("ddim_50", {"schedule": schedules.linear(T=100)}, dict(steps=3, eta=0.5),
         dict(steps=3, eta=0.5, clip_x0=(-1.0, 1.0), clipped_eps=False)),
        ("ddim_50", {"schedule": schedules.linear(T=100)}, {}, dict(steps=50, eta=0.0)),
        ("ddpm_50", {"schedule": schedules.linear(T=100)}, dict(variance="beta"), dict(steps=50, variance="beta", spacing="leading")),
        ("score_sde_ve_pc", {"sde": sde.VESDE(0.01, 5.0, N=2000)}, dict(snr=0.2),
         dict(steps=2000, predictor="reverse_diffusion", corrector="langevin", n_corrector=1, snr=0.2,
              eps=1e-5, denoise=True, grid="discrete")),
    ],
)
def test_sample_passes_the_recipe_with_explicit_arguments_over_it(recipe, process, given, expected):
    calls = []
    model = _eps_fn if "schedule" in process else _score_fn
    with registry.registered(_spy(recipes.get(recipe).sampler, calls), overwrite=True):
        kdiff.sample(model, 1, recipe=recipe, image_shape=(2, 2, 1), jit_compile=False, **process, **given)
    assert len(calls) == 1 and {k: calls[0][k] for k in expected} == expected


def test_sample_with_a_recipe_of_another_process_is_named():
    with pytest.raises(ValueError, match=r"Expected a recipe for a schedule .* Received: recipe='score_sde_ve_pc'"):
        kdiff.sample(_eps_fn, 1, recipe="score_sde_ve_pc", schedule=schedules.linear(T=10), image_shape=(2, 2, 1))
    with pytest.raises(ValueError, match="recipe='ddim_50'. Received: sampler='ddpm'"):
        kdiff.sample(_eps_fn, 1, recipe="ddim_50", sampler="ddpm", schedule=schedules.linear(T=10), image_shape=(2, 2, 1))


def test_ncsn_recipe_starts_from_uniform_noise_over_the_data_range():
    """The σ process's prior, which the recipe samples from: ermongroup/ncsn's torch.rand start."""
    sigmas = schedules.Sigmas(schedules.geometric_sigmas(1.0, 0.01, 10))
    x = sigmas.prior_sample([4000], tf.constant([1, 2]), (0.0, 1.0)).numpy()
    assert 0.0 <= x.min() and x.max() < 1.0 and abs(x.mean() - 0.5) < 0.02 and abs(x.var() - 1 / 12) < 0.005
