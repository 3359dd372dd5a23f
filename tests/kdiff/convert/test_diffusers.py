"""kdiff.from_diffusers against diffusers' own outputs (fixtures; no torch needed here).

The fixtures in tests/fixtures/diffusers were written by its make_fixtures.py with
diffusers 0.42.1 and torch 2.13 (CPU): small random-weight UNet2DModels in the DDPM and
NCSN++ layouts, their inputs and outputs, DDPMScheduler betas, and whole pipeline runs
from a stored x_T (``pipelines.npz``). Each converted network must reproduce diffusers'
outputs to float32 round-off, and an imported model must sample as its source's pipeline
does without being told any option.
"""

import json
import os
import re
import shutil
import sys
import warnings

import numpy as np
import paths
import pytest
import tensorflow as tf

import kdiff
from kdiff import sde as sde_lib
from kdiff.convert import diffusers as conv

FIXTURES = os.path.join(paths.FIXTURES, "diffusers")

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _reference(name):
    return np.load(os.path.join(FIXTURES, name, "reference.npz"))


def _assert_matches(network, ref):
    out = network(ref["x_nhwc"], ref["levels"]).numpy()
    expected = ref["out_nhwc"]
    assert out.shape == expected.shape
    for got, want in zip(out, expected):  # each image relative to its own scale (NCSN++: 1/σ)
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


@pytest.fixture(scope="session")
def schedules():
    data = np.load(os.path.join(FIXTURES, "schedules.npz"))
    return {k: data[k] for k in data.files}, json.loads(str(data["configs"]))


def _copy(name, tmp_path):
    target = tmp_path / name
    shutil.copytree(os.path.join(FIXTURES, name), target)
    return target


# --------------------------------------------------------------------------- parity


def test_ddpm_pipeline_folder_with_2022_attention_names(schedules):
    model = kdiff.from_diffusers(os.path.join(FIXTURES, "ddpm_pipeline"))
    assert isinstance(model, kdiff.DDPM) and isinstance(model.network, kdiff.models.UNet)
    ref = _reference("ddpm_pipeline")
    _assert_matches(model.network, ref)
    _assert_matches(model.ema_network, ref)
    arrays, _ = schedules
    np.testing.assert_array_equal(model.process.betas, arrays["linear"].astype(np.float64))
    net = model.network
    assert (net.num_heads, net.head_channels, net.downsample_padding) == (1, None, 0)
    assert (net.flip_sin_to_cos, net.freq_shift, net.norm_eps, net.norm_groups) == (False, 1, 1e-6, 8)


def test_ddim_sampling_equals_diffusers_ddim_scheduler():
    model = kdiff.from_diffusers(os.path.join(FIXTURES, "ddpm_pipeline"))
    ref = _reference("ddpm_pipeline")
    x0 = kdiff.samplers.ddim(model.model_fn(ema=False), tf.constant(ref["ddim_x_T"]), model.process,
                             steps=2, eta=0.0, compiled=False).numpy()
    expected = ref["ddim_2_steps"]
    np.testing.assert_allclose(x0, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


def test_bare_model_folder_float16_multihead_scale_shift(schedules):
    model = kdiff.from_diffusers(os.path.join(FIXTURES, "unet_multihead"))
    assert isinstance(model, kdiff.DDPM)
    _assert_matches(model.network, _reference("unet_multihead"))
    arrays, _ = schedules
    np.testing.assert_array_equal(model.process.betas, arrays["squaredcos_cap_v2"].astype(np.float64))
    net = model.network
    assert (net.head_channels, net.downsample_padding, net.flip_sin_to_cos, net.freq_shift) == (8, 1, True, 0)
    assert net.adaptive_norm and not net.mid_attention_norm  # resnet_time_scale_shift="scale_shift"


def test_class_conditional_learned_variance_model():
    model = kdiff.from_diffusers(os.path.join(FIXTURES, "unet_class_learned"))
    assert isinstance(model, kdiff.DDPM) and model.loss_name == "hybrid" and model.num_classes == 4
    assert not model.network.mid_attention  # add_attention=False
    ref = _reference("unet_class_learned")
    out = model.network(ref["x_nhwc"], ref["levels"], ref["labels"]).numpy()  # [ε, v]
    for got, want in zip(out, ref["out_nhwc"]):
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_ncsnpp_model_folder_is_a_ve_score_sde(schedules):
    model = kdiff.from_diffusers(os.path.join(FIXTURES, "ncsnpp"))
    assert isinstance(model, kdiff.ScoreSDE) and isinstance(model.network, kdiff.models.NCSNpp)
    ref = _reference("ncsnpp")
    _assert_matches(model.network, ref)
    sde = model.process
    assert isinstance(sde, sde_lib.VESDE)
    assert (sde.sigma_min, sde.sigma_max, sde.N) == (0.01, 348.0, 2000)
    arrays, _ = schedules
    np.testing.assert_allclose(sde.discrete_sigmas, arrays["ve_discrete_sigmas"], rtol=1e-5)
    assert model.conditioning == "sigma" and model.data_range == (0.0, 1.0)
    # The score at time t is the network at σ(t), as ScoreSdeVePipeline calls the unet.
    t = np.log(ref["levels"] / 0.01) / np.log(348.0 / 0.01)
    score = model.model_fn(ema=False)(tf.constant(ref["x_nhwc"]), tf.constant(t, tf.float32)).numpy()
    for got, want in zip(score, ref["out_nhwc"]):
        np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max(), rtol=0)
    assert "sigma(t)" in model.export_config()["level"]


@pytest.mark.parametrize("name,rename", [
    ("ddpm_pipeline", lambda k: k.replace(".query.", ".to_q.").replace(".key.", ".to_k.")
     .replace(".value.", ".to_v.").replace(".proj_attn.", ".to_out.0.")),
    ("ncsnpp", lambda k: "time_proj.weight" if k == "time_proj.W" else k),
])
def test_both_key_namings_load(name, rename):
    folder = os.path.join(FIXTURES, name)
    model_dir = os.path.join(folder, "unet") if name == "ddpm_pipeline" else folder
    state, _ = conv.read_state_dict(model_dir)
    renamed = {rename(k): v for k, v in state.items()}
    assert set(renamed) != set(state)  # the fixture holds the other naming
    with open(os.path.join(model_dir, "config.json")) as file:
        network = conv.unet_from_config(json.load(file))
    conv.load_weights(network, renamed)
    _assert_matches(network, _reference(name))


def test_scheduler_betas_as_diffusers_computes_them(schedules):
    arrays, configs = schedules
    for name in ("linear", "scaled_linear", "squaredcos_cap_v2"):  # bit for bit
        np.testing.assert_array_equal(conv.diffusers_betas(configs[name]), arrays[name], err_msg=name)
    # exp's round-off; and 1 − ᾱ_t/ᾱ_{t−1} of the zero-SNR rescaling, where float32 cancels
    np.testing.assert_allclose(conv.diffusers_betas(configs["sigmoid"]), arrays["sigmoid"], rtol=1e-6)
    np.testing.assert_allclose(conv.diffusers_betas(configs["linear_zero_snr"]), arrays["linear_zero_snr"],
                               rtol=1e-5, atol=2e-6)
    assert conv.diffusers_betas(configs["linear_zero_snr"])[-1] == 1.0


def test_ddpm_celebahq_preset_has_the_checkpoint_parameter_count():
    with open(os.path.join(FIXTURES, "parameter_counts.json")) as file:
        counts = json.load(file)
    assert kdiff.models.UNet.ddpm_celebahq().count_params() == counts["ddpm_celebahq_256"]


# --------------------------------------------------------------------------- sampling like the source


def _pipelines(name):
    return np.load(os.path.join(FIXTURES, name, "pipelines.npz"))


def _pipeline_pixels(sample):
    """A diffusers pipeline's images as PIL gets them: (x / 2 + 0.5).clamp(0, 1) · 255, rounded."""
    return np.round(np.clip(sample / 2 + 0.5, 0, 1) * 255).astype(np.uint8)


def _sample_floats(model, sampler, steps, x_T, **options):
    """What kdiff.sample runs, before the uint8 mapping: the request its spec resolves."""
    spec = model.sampling_spec()
    entry, kwargs = spec.request(sampler, steps, options)
    return entry, entry.resolve()(spec.model_fn(sampler=entry.name), tf.constant(x_T), spec.process,
                                  compiled=False, **kwargs).numpy()


def _assert_sample_close(got, want):
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


@pytest.mark.parametrize("folder, run, steps", [
    ("ddpm_pipeline", "ddim_10", 10),  # a DDPMScheduler's config: leading, clip_sample
    ("ddim_pipeline", "ddim_10", 10),  # a DDIMScheduler: trailing, clip_sample, set_alpha_to_one=False
    ("ddim_pipeline", "ddim_7", 7),  # trailing with T / 7 no integer: DDIMScheduler's t − T // 7
])
def test_ddim_samples_as_ddim_pipeline_without_options(folder, run, steps):
    model = kdiff.from_diffusers(os.path.join(FIXTURES, folder))
    ref = _pipelines(folder)
    images = kdiff.sample(model, 2, sampler="ddim", steps=steps, x_T=ref["x_T"])
    assert np.abs(images.astype(int) - _pipeline_pixels(ref[run])).max() <= 1  # float32 round-off at a .5
    _, floats = _sample_floats(model, "ddim", steps, ref["x_T"])
    _assert_sample_close(floats, ref[run])
    # kdiff's own DDIM defaults (ε from the clipped x̂₀, leading spacing) sample other images
    own = kdiff.sample(model, 2, sampler="ddim", steps=steps, x_T=ref["x_T"], clipped_eps=True, spacing="leading",
                       steps_offset=0, final_alpha_one=True)
    assert np.abs(own.astype(int) - _pipeline_pixels(ref[run])).max() > 10


@pytest.mark.parametrize("run, sampler, steps", [
    ("ddim_offset_10", "ddim", 10),  # steps_offset=1, clip_sample_range=0.5, set_alpha_to_one=False
    ("ddim_linspace_7", "ddim", 7),  # timestep_spacing="linspace"
    ("dpm_10", "dpm_solver", 10),  # DDPMPipeline with a DPMSolverMultistepScheduler of its defaults
    ("dpm_order3_10", "dpm_solver", 10),  # solver_order=3, solver_type="heun", final_sigmas_type="sigma_min"
    ("dpm_trailing_7", "dpm_solver", 7),  # timestep_spacing="trailing"
    ("dpm_leading_10", "dpm_solver", 10),  # timestep_spacing="leading", steps_offset=1
])
def test_the_schedulers_settings_are_the_models_sampling_defaults(run, sampler, steps):
    ref = _pipelines("ddpm_pipeline")
    config = json.loads(str(ref["configs"]))[run]
    model = kdiff.from_diffusers(os.path.join(FIXTURES, "ddpm_pipeline"), scheduler=config)
    entry, floats = _sample_floats(model, None, steps, ref["x_T"])  # the model's default sampler
    assert entry.name == sampler == model.default_sampler
    _assert_sample_close(floats, ref[run])


def test_default_sampler_and_defaults_follow_the_source():
    ddpm = kdiff.from_diffusers(os.path.join(FIXTURES, "ddpm_pipeline"))  # DDPMPipeline + DDPMScheduler
    assert ddpm.default_sampler == "ddpm"
    assert ddpm.sampler_defaults["ddpm"] == {"variance": "beta_tilde", "spacing": "leading", "steps_offset": 0,
                                             "clip_x0": 1.0}
    assert ddpm.sampler_defaults["ddim"] == {"eta": 0.0, "clipped_eps": False, "spacing": "leading",
                                             "steps_offset": 0, "final_alpha_one": True, "clip_x0": 1.0}
    assert {**ddpm.sampler_defaults["ddim"], **dict(kdiff.samplers.recipes.get("ddim_50").options)} == \
        ddpm.sampler_defaults["ddim"]  # the ddim_50 recipe's options: DDIMPipeline's
    ddim = kdiff.from_diffusers(os.path.join(FIXTURES, "ddim_pipeline"))
    assert ddim.default_sampler == "ddim"
    assert ddim.sampler_defaults["ddim"]["spacing"] == "trailing" and not ddim.sampler_defaults["ddim"]["final_alpha_one"]
    # a DDIMPipeline samples with DDIM whatever its scheduler; a given scheduler decides
    assert kdiff.from_diffusers(os.path.join(FIXTURES, "ddim_pipeline"), scheduler="DDPMScheduler").default_sampler == "ddpm"
    learned = kdiff.from_diffusers(os.path.join(FIXTURES, "unet_class_learned"))
    assert learned.sampler_defaults["ddpm"]["variance"] == "learned"
    ncsnpp = kdiff.from_diffusers(os.path.join(FIXTURES, "ncsnpp"))
    assert ncsnpp.default_sampler == "predictor_corrector"
    assert ncsnpp.sampler_defaults["predictor_corrector"] == {
        **kdiff.samplers.recipes.get("score_sde_ve_pc").options, "snr": 0.15, "eps": 1e-5, "n_corrector": 1}
    # options given to a call override the defaults
    _, kwargs = ddim.sampling_spec().request("ddim", 10, {"spacing": "leading", "clip_x0": None})
    assert kwargs["spacing"] == "leading" and kwargs["clip_x0"] is None and kwargs["clipped_eps"] is False
    # native models keep kdiff's own
    native = kdiff.DDPM(ddpm.network, ddpm.process, ema_decay=0.0)
    assert native.default_sampler == "ddim" and native.sampler_defaults == {}
    assert "sampler_defaults" not in native.get_config() and "default_sampler" not in native.get_config()


def test_the_defaults_survive_get_config():
    model = kdiff.from_diffusers(os.path.join(FIXTURES, "ddim_pipeline"))
    config = model.get_config()
    assert config["default_sampler"] == "ddim"
    json.dumps(config["sampler_defaults"])  # plain JSON
    again = kdiff.DDPM.from_config(config)
    assert again.default_sampler == "ddim" and again.sampler_defaults == model.sampler_defaults


@pytest.mark.slow
def test_an_export_of_an_imported_model_samples_as_the_source(tmp_path):
    ref = _pipelines("ddim_pipeline")
    model = kdiff.from_diffusers(os.path.join(FIXTURES, "ddim_pipeline"))
    path = model.export(tmp_path / "export", sampler="ddim", default_steps=10)
    exported = kdiff.load(path)
    assert exported.config["default_sampler"] == "ddim"
    assert exported.config["sampler_defaults"]["ddim"]["spacing"] == "trailing"
    assert exported.config["generate"]["sampler_options"]["spacing"] == "trailing"  # the signature's loop too
    for steps in (10, 7):
        images = kdiff.sample(path, 2, steps=steps, x_T=ref["x_T"])
        assert np.abs(images.astype(int) - _pipeline_pixels(ref[f"ddim_{steps}"])).max() <= 1


def test_the_pc_defaults_are_score_sde_ve_pipelines_loop():
    """ScoreSdeVePipeline's 5-iteration loop (tests/kdiff/samplers/test_scheduler_steps.py) from the model's own
    predictor_corrector defaults; the fixture's run used snr 0.075, the config says 0.15."""
    model = kdiff.from_diffusers(os.path.join(FIXTURES, "ncsnpp"))
    ref = np.load(os.path.join(FIXTURES, "ncsnpp", "steps.npz"))
    noises = iter(ref["noises"])
    entry, kwargs = model.sampling_spec().request(None, 5, {"snr": float(ref["snr"])})
    out = kdiff.samplers.predictor_corrector(
        model.model_fn(ema=False), tf.constant(ref["x_T"]), model.process,
        noise_fn=lambda shape: tf.constant(next(noises)), **kwargs).numpy()
    _assert_sample_close(out, ref["sample_mean"])


@pytest.mark.parametrize("changes, named", [
    ({"use_karras_sigmas": True}, "use_karras_sigmas=True"),
    ({"timestep_spacing": "trailing", "use_exponential_sigmas": True}, "use_exponential_sigmas=True"),
    ({"algorithm_type": "dpmsolver"}, "algorithm_type='dpmsolver'"),
])
def test_a_setting_kdiff_cannot_reproduce_is_named_in_a_warning(changes, named):
    config = {"_class_name": "DPMSolverMultistepScheduler", **changes}
    with pytest.warns(UserWarning, match=re.escape(named)):
        model = kdiff.from_diffusers(os.path.join(FIXTURES, "ddpm_pipeline"), scheduler=config)
    assert model.default_sampler == "dpm_solver"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the defaults of each scheduler warn of nothing
        for name in ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler"):
            kdiff.from_diffusers(os.path.join(FIXTURES, "ddpm_pipeline"), scheduler=name)


def test_a_bad_timestep_spacing_is_named(tmp_path):
    folder = _copy("unet_multihead", tmp_path)
    _edit_json(folder / "scheduler_config.json", timestep_spacing="even")
    with pytest.raises(ValueError, match=r"Expected `timestep_spacing` in \['leading', 'trailing', 'linspace'\] in .*"
                                         r"scheduler_config.json.*timestep_spacing='even'"):
        kdiff.from_diffusers(folder)


# --------------------------------------------------------------------------- bad input


def test_bin_weights_need_torch(tmp_path, monkeypatch):
    folder = _copy("unet_multihead", tmp_path)
    os.remove(folder / "diffusion_pytorch_model.safetensors")
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"not read without torch")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch → ImportError
    with pytest.raises(ValueError, match=r"pip install torch.*diffusion_pytorch_model\.bin"):
        kdiff.from_diffusers(folder)


def test_hub_id_needs_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ValueError, match="pip install huggingface_hub"):
        kdiff.from_diffusers("google/ddpm-celebahq-256")


def _edit_json(path, **changes):
    with open(path) as file:
        config = json.load(file)
    config.update(changes)
    with open(path, "w") as file:
        json.dump(config, file)


@pytest.mark.parametrize("case", [
    "missing_folder", "no_config", "conditional_unet", "unknown_block", "no_weights",
    "shape_mismatch", "missing_key", "unused_key", "scheduler_class", "prediction_type",
])
def test_bad_input_is_named(tmp_path, case):
    folder = _copy("unet_multihead", tmp_path)
    config, weights = folder / "config.json", folder / "diffusion_pytorch_model.safetensors"
    expected = {
        "missing_folder": "does not exist",
        "no_config": "model_index.json.*config.json",
        "conditional_unet": r"_class_name.*UNet2DModel.*config\.json.*UNet2DConditionModel",
        "unknown_block": r"config\.json.*unsupported: \['CrossAttnDownBlock2D'\]",
        "no_weights": r"diffusion_pytorch_model\.safetensors \(or \.bin\).*holding",
        "shape_mismatch": r"'time_embedding\.linear_1\.weight' of shape \[128, 32\].*safetensors"
                          r".*shape=\[64, 16\]",
        "missing_key": r"'conv_out\.bias'.*no such key",
        "unused_key": r"1 unused: 'extra\.weight'",
        "scheduler_class": r"scheduler_config\.json.*KarrasVeScheduler",
        "prediction_type": r"prediction_type.*v_prediction",
    }[case]
    path = folder
    if case == "missing_folder":
        path = tmp_path / "nowhere"
    elif case == "no_config":
        os.remove(config)
    elif case == "conditional_unet":
        _edit_json(config, _class_name="UNet2DConditionModel")
    elif case == "unknown_block":
        _edit_json(config, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"])
    elif case == "no_weights":
        os.remove(weights)
    elif case == "shape_mismatch":
        _edit_json(config, block_out_channels=[32, 32])
    elif case in ("missing_key", "unused_key"):
        from safetensors.numpy import load_file, save_file

        state = load_file(str(weights))
        if case == "missing_key":
            del state["conv_out.bias"]
        else:
            state["extra.weight"] = np.zeros(3, np.float16)
        save_file(state, str(weights))
    elif case == "scheduler_class":
        _edit_json(folder / "scheduler_config.json", _class_name="KarrasVeScheduler")
    elif case == "prediction_type":
        _edit_json(folder / "scheduler_config.json", prediction_type="v_prediction")
    with pytest.raises(ValueError, match=expected):
        kdiff.from_diffusers(path)


# --------------------------------------------------------------------------- no scheduler


def _bare(tmp_path, name="unet_multihead"):
    folder = _copy(name, tmp_path)
    os.remove(folder / "scheduler_config.json")
    return folder


def test_a_model_folder_without_a_scheduler_is_refused_saying_how_to_pass_one(tmp_path):
    folder = _bare(tmp_path)
    with pytest.raises(ValueError) as info:
        kdiff.from_diffusers(folder)
    message = str(info.value)
    for part in (str(folder), "no scheduler_config.json or scheduler/scheduler_config.json", "scheduler=",
                 "'DDPMScheduler'", "linear betas 1e-4 to 0.02, num_train_timesteps=1000",
                 "--scheduler PATH|DDPMScheduler"):
        assert part in message, part
    with pytest.raises(ValueError, match="Expected a scheduler"):
        conv.describe_source(folder)


def test_a_pipeline_without_its_scheduler_is_refused(tmp_path):
    folder = _copy("ddpm_pipeline", tmp_path)
    shutil.rmtree(folder / "scheduler")
    with pytest.raises(ValueError, match=r"Expected a scheduler for the diffusers model in .*unet"):
        kdiff.from_diffusers(folder)


def test_the_unet_folder_of_a_pipeline_takes_the_pipelines_scheduler(tmp_path, schedules):
    folder = _copy("ddpm_pipeline", tmp_path)
    _edit_json(folder / "scheduler" / "scheduler_config.json", beta_schedule="squaredcos_cap_v2")
    model = kdiff.from_diffusers(folder / "unet")
    arrays, _ = schedules
    np.testing.assert_array_equal(model.process.betas, arrays["squaredcos_cap_v2"].astype(np.float64))
    _assert_matches(model.network, _reference("ddpm_pipeline"))
    source = conv.describe_source(folder / "unet")
    assert source["scheduler_source"] == str(folder / "scheduler" / "scheduler_config.json")


def test_the_scheduler_argument_in_each_form(tmp_path, schedules):
    folder = _bare(tmp_path)
    arrays, configs = schedules
    config_file = tmp_path / "sched" / "scheduler_config.json"
    config_file.parent.mkdir()
    config_file.write_text(json.dumps({"_class_name": "DDIMScheduler", **configs["squaredcos_cap_v2"]}))

    class DDPMScheduler:  # what a diffusers scheduler offers: .config without _class_name
        config = dict(configs["scaled_linear"])

    for scheduler, betas in (
        ("DDPMScheduler", arrays["linear"]), (str(config_file), arrays["squaredcos_cap_v2"]),
        (config_file.parent, arrays["squaredcos_cap_v2"]),
        ({"_class_name": "DDPMScheduler", **configs["sigmoid"]}, conv.diffusers_betas(configs["sigmoid"])),
        (DDPMScheduler(), arrays["scaled_linear"]),
    ):
        model = kdiff.from_diffusers(folder, scheduler=scheduler)
        np.testing.assert_array_equal(model.process.betas, betas.astype(np.float64), err_msg=str(scheduler))
    assert conv.describe_source(folder, scheduler="DDPMScheduler")["scheduler_source"] == "DDPMScheduler's defaults"
    # given beside a checkpoint's own, the argument wins
    own = kdiff.from_diffusers(os.path.join(FIXTURES, "unet_multihead"), scheduler="DDPMScheduler")
    np.testing.assert_array_equal(own.process.betas, arrays["linear"].astype(np.float64))


@pytest.mark.parametrize("scheduler, message", [
    ("PNDMScheduler", r"scheduler='PNDMScheduler', no such file"),
    ({"beta_schedule": "linear"}, r"dict with `_class_name`.*Received: keys \['beta_schedule'\]"),
    ({"_class_name": "KarrasVeScheduler"}, r"_class_name.*the scheduler dict.*KarrasVeScheduler"),
    (3, r"Received: int"),
])
def test_a_bad_scheduler_argument_is_named(tmp_path, scheduler, message):
    with pytest.raises(ValueError, match=message):
        kdiff.from_diffusers(_bare(tmp_path), scheduler=scheduler)


def test_a_fourier_model_needs_a_ve_scheduler(tmp_path):
    folder = _bare(tmp_path, "ncsnpp")
    with pytest.raises(ValueError, match="'ScoreSdeVeScheduler' for an NCSN\\+\\+ model"):
        kdiff.from_diffusers(folder)
    assert isinstance(kdiff.from_diffusers(folder, scheduler="ScoreSdeVeScheduler"), kdiff.ScoreSDE)
    with pytest.raises(ValueError, match="Expected a ScoreSdeVeScheduler.*DDPMScheduler's defaults"):
        kdiff.from_diffusers(folder, scheduler="DDPMScheduler")
