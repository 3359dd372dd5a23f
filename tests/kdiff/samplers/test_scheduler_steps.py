"""One sampler step of kdiff equals one step of diffusers' scheduler on the converted model.

The fixtures' ``steps.npz`` (tests/fixtures/diffusers/make_fixtures.py, diffusers 0.42.1)
hold a state, the noise diffusers drew and the scheduler's output; kdiff's samplers get
the same noise through ``noise_fn``. No torch is needed here.
"""

import os

import numpy as np
import paths
import pytest
import tensorflow as tf

import kdiff
from kdiff import samplers
from kdiff.samplers import recipes

FIXTURES = os.path.join(paths.FIXTURES, "diffusers")

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


class _Stop(Exception):
    """Raised by the model function when a sampler starts its next step: carries its input."""


def _until_call(model_fn, calls):
    """``model_fn`` that raises ``_Stop(x)`` on call number ``calls + 1``: x is then the state
    after the steps that the first ``calls`` calls served."""
    count = [0]

    def fn(x, level):
        if count[0] == calls:
            raise _Stop(x)
        count[0] += 1
        return model_fn(x, level)

    return fn


def _noise_fn(noises):
    """Hands out the stored noises in draw order (then zeros: a step's noise is drawn before
    its model call, which ``_until_call`` may stop)."""
    stream = iter(noises)
    return lambda shape: tf.constant(next(stream, np.zeros(shape, np.float32)), tf.float32)


def _first_step(sampler, model_fn, x, process, calls, noises, **options):
    try:
        sampler(_until_call(model_fn, calls), tf.constant(x), process, noise_fn=_noise_fn(noises), **options)
    except _Stop as stop:
        return stop.args[0].numpy()
    raise AssertionError("the sampler finished before its second step")


def _assert_close(got, want):
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


@pytest.fixture(scope="session")
def ddpm():
    model = kdiff.from_diffusers(os.path.join(FIXTURES, "ddpm_pipeline"))
    return model, np.load(os.path.join(FIXTURES, "ddpm_pipeline", "steps.npz"))


def test_ddpm_step_equals_ddpm_scheduler_step(ddpm):
    """DDPMScheduler.step at t = 999 (fixed_small, clip_sample): the recipes' DDPM options."""
    model, ref = ddpm
    assert int(ref["ddpm_t"]) == model.process.T - 1
    options = dict(recipes.get("ddpm_1000").options)
    got = _first_step(samplers.ddpm, model.model_fn(ema=False), ref["x_t"], model.process, 1,
                      [ref["ddpm_noise"]], clip_x0=(-1.0, 1.0), **options)
    _assert_close(got, ref["ddpm_prev"])


def test_ddpm_50_step_equals_ddpm_scheduler_leading_step(ddpm):
    """DDPMScheduler.step at t = 980, the first of set_timesteps(50) (leading spacing, to 960)."""
    model, ref = ddpm
    options = dict(recipes.get("ddpm_50").options)
    got = _first_step(samplers.ddpm, model.model_fn(ema=False), ref["x_t"], model.process, 1,
                      [ref["ddpm50_noise"]], steps=50, clip_x0=(-1.0, 1.0), **options)
    _assert_close(got, ref["ddpm50_prev"])


@pytest.mark.parametrize("clipped_eps, expected", [(True, "ddim_prev"), (False, "ddim_pipeline_prev")])
def test_ddim_step_equals_ddim_scheduler_step(ddpm, clipped_eps, expected):
    """DDIMScheduler.step at t = 980, the first of 50 (η = 0.5, clip_sample), with ε from the
    clipped x̂₀ (use_clipped_model_output=True) or the network's (DDIMPipeline's default)."""
    model, ref = ddpm
    assert int(ref["ddim_t"]) == 980
    got = _first_step(samplers.ddim, model.model_fn(ema=False), ref["x_t"], model.process, 1,
                      [ref["ddim_noise"]], steps=50, eta=0.5, clip_x0=(-1.0, 1.0), clipped_eps=clipped_eps)
    _assert_close(got, ref[expected])
    assert np.abs(ref["ddim_prev"] - ref["ddim_pipeline_prev"]).max() > 1e-3  # the option matters here


@pytest.fixture(scope="session")
def ncsnpp():
    model = kdiff.from_diffusers(os.path.join(FIXTURES, "ncsnpp"))
    return model, np.load(os.path.join(FIXTURES, "ncsnpp", "steps.npz"))


def _pc_options(ref):
    return {**recipes.get("score_sde_ve_pc").options, "snr": float(ref["snr"])}


def test_one_pc_iteration_equals_score_sde_ve_scheduler(ncsnpp):
    """step_correct then step_pred at t = 1 of a 5-iteration ScoreSdeVePipeline loop."""
    model, ref = ncsnpp
    got = _first_step(samplers.predictor_corrector, model.model_fn(ema=False), ref["x_T"], model.process, 2,
                      ref["noises"], steps=5, **_pc_options(ref))
    _assert_close(got, ref["after_first"])
    # kdiff's default grid is not diffusers' (why the recipe sets grid="discrete").
    other = _first_step(samplers.predictor_corrector, model.model_fn(ema=False), ref["x_T"], model.process, 2,
                        ref["noises"], steps=5, **{**_pc_options(ref), "grid": "continuous"})
    assert np.abs(other - ref["after_first"]).max() > 1e-3 * np.abs(ref["after_first"]).max()


def test_pc_loop_equals_score_sde_ve_pipeline(ncsnpp):
    """The whole 5-iteration loop: times linspace(1, 1e-5, 5), the discrete levels' predictor
    steps (σ_min alone at t = 1e-5) and the last prev_sample_mean."""
    model, ref = ncsnpp
    assert model.process.sigma_max == 348.0 and model.process.N == 2000
    np.testing.assert_allclose(model.process.sigma(ref["timesteps"].astype(np.float64)), ref["sigmas"], rtol=1e-6)
    out = samplers.predictor_corrector(
        model.model_fn(ema=False), tf.constant(ref["x_T"]), model.process, 5,
        noise_fn=_noise_fn(ref["noises"]), **_pc_options(ref),
    ).numpy()
    _assert_close(out, ref["sample_mean"])
