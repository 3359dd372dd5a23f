"""``kdiff.samplers.request.resolve``: the one check of a sampling request, and the callers
that share it (``kdiff.sample``, ``kdiff.img2img``, the pipeline's sampler configs) refusing
a bad request with its message."""

import numpy as np
import pytest
import tensorflow as tf

import kdiff
from kdiff import schedules, sde
from kdiff.samplers import request
from pipeline.stages import sample as sample_stage
from pipeline.stages.base import StageError

LINEAR = schedules.linear(T=100)


def _eps(x, t):
    return 0.1 * x


@pytest.mark.parametrize(
    "kwargs, argument, message",
    [
        ({"sampler": "bogus"}, "sampler", r"Expected `sampler` to be one of .*Received: sampler='bogus'"),
        ({"sampler": "annealed_langevin"}, "sampler", r"for a schedule \(Schedule\) process.*'annealed_langevin'"),
        ({"sampler": "ddpm", "options": {"eta": 0.5}}, "options", r"sampler 'ddpm' among .*unknown option\(s\) \['eta'\]"),
        ({"sampler": "ddim", "steps": 101}, "steps", r"at most the model's T=100 steps .*Received: steps=101"),
        ({"sampler": "ddim", "steps": 0}, "steps", r"`steps` >= 1"),
        ({"sampler": "probability_flow", "steps": 5}, "sampler", r"for a schedule"),
        ({"recipe": "score_sde_ve_pc"}, "recipe", r"Expected a recipe for a schedule"),
        ({"recipe": "ddim_50", "sampler": "ddpm"}, "recipe", r"ddim"),
    ],
)
def test_a_bad_request_names_its_part(kwargs, argument, message):
    with pytest.raises(request.RequestError, match=message) as info:
        request.resolve(LINEAR, **kwargs)
    assert info.value.argument == argument
    if argument == "options":
        assert info.value.options == ("eta",)


def test_a_request_resolves_defaults_in_order():
    entry, kwargs = request.resolve(LINEAR, data_range=(-1.0, 1.0))
    assert entry.name == "ddim" and kwargs["steps"] == 50 and kwargs["clip_x0"] == (-1.0, 1.0)
    entry, kwargs = request.resolve(LINEAR, "ddim", 10, {"eta": 0.5, "clip_x0": None}, data_range=(-1.0, 1.0))
    assert kwargs["eta"] == 0.5 and kwargs["clip_x0"] is None and kwargs["steps"] == 10  # eta travels as an option
    entry, kwargs = request.resolve(LINEAR, recipe="ddim_50")
    assert entry.name == "ddim" and kwargs["steps"] == 50 and kwargs["clipped_eps"] is False
    entry, kwargs = request.resolve(LINEAR, "ddpm", sampler_defaults={"ddpm": {"variance": "beta"}})
    assert kwargs["variance"] == "beta" and "steps" not in kwargs  # the function's own: all T
    entry, kwargs = request.resolve(sde.VESDE(N=10), "euler_maruyama", 50)
    assert kwargs["steps"] == 50  # an SDE's N is its default, not a limit


def test_a_models_own_defaults_are_checked_and_merged():
    assert request.check_defaults(LINEAR, "ddpm", {"ddim": {"eta": 0.5}}) == ("ddpm", {"ddim": {"eta": 0.5}})
    assert request.check_defaults(LINEAR) == (None, {})
    for kwargs, message in (
        ({"default_sampler": "annealed_langevin"}, r"Expected `default_sampler` to be a sampler for a schedule process"),
        ({"default_sampler": "bogus"}, r"Expected `sampler` to be one of"),
        ({"sampler_defaults": {"ddim": 0.5}}, r"Expected `sampler_defaults` to be a dict \{sampler name"),
        ({"sampler_defaults": {"euler_maruyama": {}}}, r"samplers of a schedule process.*'euler_maruyama'"),
        ({"sampler_defaults": {"ddim": {"etta": 0}}}, r"`sampler_defaults\['ddim'\]` of sampler 'ddim'.*'eta'"),
    ):
        with pytest.raises(ValueError, match=message):
            request.check_defaults(LINEAR, **kwargs)
    with pytest.raises(ValueError, match="sampler_defaults"):  # a model refuses them at construction
        from tiny_network import TinyNet

        kdiff.DDPM(TinyNet(8, 1), LINEAR, sampler_defaults={"ddim": {"etta": 0}})
    merged = request.merge_defaults({"ddpm": {"variance": "learned"}}, None, {"ddpm": {"spacing": "leading"}, "ddim": {}})
    assert merged == {"ddpm": {"variance": "learned", "spacing": "leading"}, "ddim": {}}


def test_every_caller_refuses_a_bad_request_with_its_message():
    with pytest.raises(request.RequestError) as expected:
        request.resolve(LINEAR, "ddpm", options={"eta": 0.5})
    with pytest.raises(request.RequestError) as from_sample:
        kdiff.sample(_eps, 2, sampler="ddpm", eta=0.5, schedule=LINEAR, image_shape=(4, 4, 1))
    assert str(from_sample.value) == str(expected.value)
    with pytest.raises(request.RequestError) as from_img2img:
        kdiff.img2img(_eps, np.zeros((2, 4, 4, 1), np.uint8), 0.5, sampler="ddpm", eta=0.5, schedule=LINEAR)
    assert str(from_img2img.value) == str(expected.value)
    with pytest.raises(StageError) as from_pipeline:
        sample_stage.check_samplers({"ddpm_eta": {"sampler": "ddpm", "eta": 0.5}}, LINEAR)
    assert str(expected.value) in str(from_pipeline.value) and "'ddpm_eta'" in str(from_pipeline.value)


def test_a_sampler_option_reaches_the_sampler():
    x = kdiff.sample(_eps, 2, sampler="ddim", steps=5, eta=1.0, seed=3, schedule=LINEAR, image_shape=(4, 4, 1))
    y = kdiff.sample(_eps, 2, sampler="ddim", steps=5, seed=3, schedule=LINEAR, image_shape=(4, 4, 1))
    assert not np.array_equal(x, y)  # η = 1 draws noise each step; η = 0 none
    tf.debugging.assert_equal(tf.shape(x), [2, 4, 4, 1])


def test_a_row_named_like_a_recipe_runs_the_recipe():
    """A pipeline sampler row named like a recipe must run it, so that a recipe name means one
    sampler in every report (what the row adds for the stage, e.g. its precision, is free)."""
    recipe = {"sampler": "ddim", "steps": 50, "eta": 0.0, "clipped_eps": False}
    sample_stage.check_samplers({"ddim_50": recipe}, LINEAR)
    sample_stage.check_samplers({"ddim_50": {**recipe, "precision": "bfloat16", "num_samples": 4}}, LINEAR)
    sample_stage.check_samplers({"ddim_50_clipped_eps": {**recipe, "clipped_eps": True}}, LINEAR)
    ddim_50 = {"sampler": "ddim", "steps": 50, "eta": 0.0, "clipped_eps": False}
    for changed, named in [({"clipped_eps": True}, "clipped_eps=True"), ({"steps": 20}, "steps=20"),
                           ({"clip_x0": 1.0}, "clip_x0=1.0")]:
        row = {**ddim_50, **changed}
        with pytest.raises(StageError, match=f"named like the recipe 'ddim_50'.*{named}"):
            sample_stage.check_samplers({"ddim_50": row}, LINEAR)
    with pytest.raises(StageError, match="named like the recipe 'ddim_50'.*sampler='ddpm'"):
        sample_stage.check_samplers({"ddim_50": {"sampler": "ddpm", "steps": 50}}, LINEAR)
    with pytest.raises(StageError, match="clipped_eps='<unset>'"):  # the sampler's default is not the recipe's
        sample_stage.check_samplers({"ddim_50": {"sampler": "ddim", "steps": 50, "eta": 0.0}}, LINEAR)


def test_the_pipelines_rows_keep_recipe_names_for_recipes():
    """The default rows and every experiment's rows pass the recipe-name rule."""
    from kdiff.samplers import recipes
    from pipeline import config, experiments

    for family, rows in config.DEFAULT_SAMPLERS.items():
        assert not set(rows) & set(recipes.names()), family  # the defaults are not recipes
    checked = 0
    for experiment in experiments.experiments().values():
        for scale in ("small", "medium", "seed"):
            for run in experiment.runs_at(scale):
                for row in run.rows:
                    name, kwargs = experiments.sampler_config(row)
                    options = {k: v for k, v in kwargs.items() if k not in ("sampler", "steps", "precision")}
                    sample_stage._check_recipe_name(name, kwargs["sampler"], kwargs.get("steps"), options)
                    checked += name in recipes.names()
    assert checked > 0
