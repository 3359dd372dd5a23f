"""``kdiff convert``: diffusers and ermongroup/ncsn checkpoints written as kdiff exports, end to end.

The diffusers fixture is tests/fixtures/diffusers/ncsnpp (an NCSN++ UNet2DModel with its
ScoreSdeVeScheduler; see make_fixtures.py); the NCSN one is the shared reference fixture
../shared/fixtures/ncsn_refinenet/state_dict.npz, beside the repository (skipped, saying
why, where it is absent). Each is converted once per module (an export takes seconds).
"""

import json
import os

import numpy as np
import pytest
from paths import FIXTURES, REPO

import kdiff
from kdiff.cli import main
from kdiff.samplers import request

NCSNPP = os.path.join(FIXTURES, "diffusers", "ncsnpp")
NCSN_NPZ = os.path.join(REPO, "..", "shared", "fixtures", "ncsn_refinenet", "state_dict.npz")

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _convert(kind, src, out, *more):
    return main(["convert", "--from", kind, src, "--out", str(out), *more])


@pytest.fixture(scope="session")
def ncsnpp_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "ncsnpp"
    assert _convert("diffusers", NCSNPP, out) == 0
    return kdiff.from_diffusers(NCSNPP), str(out)


@pytest.fixture(scope="session")
def ncsn_export(tmp_path_factory):
    if not os.path.isfile(NCSN_NPZ):
        pytest.skip(f"the NCSN reference fixture {NCSN_NPZ} is absent (it lives beside the repository, in ../shared)")
    out = tmp_path_factory.mktemp("convert") / "ncsn"
    assert _convert("ncsn", NCSN_NPZ, out) == 0  # ngf 16 (read off the weights), 32x32
    return kdiff.from_ncsn_checkpoint(NCSN_NPZ), str(out)


def _assert_denoise_equal(model, path, x, level):
    exported = kdiff.load(path)
    got = exported.denoise(x, level).numpy()
    want = model.model_fn(ema=True)(x, level).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)
    return exported


@pytest.mark.slow
def test_convert_diffusers_writes_an_export_whose_denoise_is_the_model(ncsnpp_export):
    model, path = ncsnpp_export
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    exported = _assert_denoise_equal(model, path, x, np.array([1.0, 0.3], np.float32))
    source = exported.config["source"]
    assert source["kind"] == "diffusers" and source["path"] == os.path.abspath(NCSNPP)
    assert (source["model_type"], source["scheduler_type"]) == ("UNet2DModel", "ScoreSdeVeScheduler")
    assert source["config"]["time_embedding_type"] == "fourier" and source["generate_recipe"] == "score_sde_ve_pc"
    generate = exported.config["generate"]
    assert generate["sampler"] == "predictor_corrector" and generate["default_steps"] == 2000
    assert generate["sampler_options"]["grid"] == "discrete" and generate["sampler_options"]["snr"] == 0.075
    assert sorted(n for n in os.listdir(os.path.dirname(path)) if n.startswith(".")) == []  # no temporary left
    # `generate` runs the recipe in the graph: the discrete grid with a tensor number of steps.
    images = exported.generate(2, seed=0, steps=2)
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8


@pytest.mark.slow
def test_info_shows_where_the_export_came_from(ncsnpp_export, capsys):
    assert main(["info", "--model", ncsnpp_export[1]]) == 0
    config = json.loads(capsys.readouterr().out)
    assert next(iter(config)) == "source"  # first
    assert config["source"]["kind"] == "diffusers" and config["source"]["model_type"] == "UNet2DModel"


@pytest.mark.slow
def test_sample_recipe_flag_passes_the_recipe_with_overrides(ncsnpp_export, tmp_path, monkeypatch, capsys):
    calls = []

    def fake_sample(model, num, **kwargs):
        calls.append(kwargs)
        return np.zeros((num, 16, 16, 3), np.uint8)

    monkeypatch.setattr(kdiff, "sample", fake_sample)
    out = tmp_path / "grid.png"
    assert main(["sample", "--model", ncsnpp_export[1], "--recipe", "score_sde_ve_pc", "--steps", "3",
                 "--option", "snr=0.2", "--num", "1", "--out", str(out)]) == 0
    (call,) = calls
    assert (call["recipe"], call["steps"], call["snr"]) == ("score_sde_ve_pc", 3, 0.2)
    # What kdiff.sample makes of it: the recipe's sampler and options under the overrides.
    process = kdiff.process.from_model_config(kdiff.export.read_config(ncsnpp_export[1]))
    entry, kwargs = request.resolve(process, call["sampler"], call["steps"], {"snr": call["snr"]}, call["recipe"])
    assert (entry.name, kwargs["steps"], kwargs["snr"], kwargs["grid"], kwargs["eps"]) == (
        "predictor_corrector", 3, 0.2, "discrete", 1e-5)
    assert main(["sample", "--model", ncsnpp_export[1], "--recipe", "score_sde_ve_pc", "--num", "1",
                 "--out", str(out)]) == 0
    _, kwargs = request.resolve(process, calls[1]["sampler"], calls[1]["steps"], {}, calls[1]["recipe"])
    assert kwargs["steps"] == 2000 and kwargs["snr"] == 0.075
    capsys.readouterr()
    _fails(capsys, ["sample", "--model", ncsnpp_export[1], "--recipe", "ddim_50", "--out", str(out)],
           "argument --recipe: Expected a recipe for a sde")
    _fails(capsys, ["sample", "--model", ncsnpp_export[1], "--recipe", "score_sde_ve_pc", "--sampler",
                    "euler_maruyama", "--out", str(out)], "argument --recipe: Expected no `sampler`, or the recipe's")
    assert len(calls) == 2


@pytest.mark.slow
def test_convert_ncsn_writes_an_export_whose_denoise_is_the_model(ncsn_export, capsys):
    model, path = ncsn_export
    x = np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    sigmas = np.asarray(model.process.sigmas, np.float32)
    exported = _assert_denoise_equal(model, path, x, sigmas[[0, 9]])
    source = exported.config["source"]
    assert source["kind"] == "ncsn" and source["path"] == os.path.abspath(NCSN_NPZ)
    assert source["model_type"] == "CondRefineNetDilated"
    assert source["config"] == {"image_size": 32, "channels": 3, "ngf": 16, "num_classes": 10,
                                "sigma_begin": 1.0, "sigma_end": pytest.approx(0.01)}
    assert exported.config["generate"]["sampler"] == "annealed_langevin"
    assert exported.config["generate"]["sampler_options"] == {"step_lr": 2e-5, "denoise": False}
    assert exported.config["data_range"] == [0.0, 1.0]  # the uniform start over [0, 1]
    assert main(["info", "--model", path]) == 0
    assert json.loads(capsys.readouterr().out)["source"]["model_type"] == "CondRefineNetDilated"


# ---------------------------------------------------------------------------- bad input


def _fails(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    return err


def test_bad_sources_exit_2_naming_them_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "export"
    missing = str(tmp_path / "no_such_checkpoint")
    err = _fails(capsys, ["convert", "--from", "diffusers", missing, "--out", str(out)], "argument SRC: Expected a diffusers")
    assert missing in err
    _fails(capsys, ["convert", "--from", "ncsn", missing, "--out", str(out)], "argument SRC:")
    not_diffusers = tmp_path / "folder"
    not_diffusers.mkdir()
    _fails(capsys, ["convert", "--from", "diffusers", str(not_diffusers), "--out", str(out)], "model_index.json")
    _fails(capsys, ["convert", "--from", "diffusers", NCSNPP, "--out", str(out), "--config", "celeba"],
           "--config only with --from ncsn")
    _fails(capsys, ["convert", "--from", "diffusers", NCSNPP, "--out", str(out), "--recipe", "ddim_50"],
           "argument --recipe: Expected a recipe for a sde")
    _fails(capsys, ["convert", "--from", "wrong", NCSNPP, "--out", str(out)], "invalid choice")
    assert sorted(os.listdir(tmp_path)) == ["folder"] and os.listdir(not_diffusers) == []


def test_an_existing_or_unplaced_out_exits_2_before_converting(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    _fails(capsys, ["convert", "--from", "diffusers", NCSNPP, "--out", str(taken)], "exists and is not empty")
    assert os.listdir(taken) == ["keep.txt"]
    _fails(capsys, ["convert", "--from", "diffusers", NCSNPP, "--out", str(tmp_path / "a" / "b")], "does not exist")
    assert sorted(os.listdir(tmp_path)) == ["taken"]


def test_a_diffusers_model_without_a_scheduler_exits_2_saying_how_to_pass_one(tmp_path, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(os.path.join(FIXTURES, "diffusers", "unet_multihead"), bare)
    os.remove(bare / "scheduler_config.json")
    out = tmp_path / "export"
    err = _fails(capsys, ["convert", "--from", "diffusers", str(bare), "--out", str(out)],
                 "argument SRC: Expected a scheduler for the diffusers model in")
    assert str(bare) in err and "--scheduler PATH|DDPMScheduler" in err
    _fails(capsys, ["convert", "--from", "diffusers", str(bare), "--out", str(out), "--scheduler", "PNDM"],
           "argument --scheduler: expected a scheduler_config.json, its folder or one of ['DDIMScheduler', ")
    _fails(capsys, ["convert", "--from", "ncsn", str(bare), "--out", str(out), "--scheduler", "DDPMScheduler"],
           "--scheduler only with --from diffusers")
    assert sorted(os.listdir(tmp_path)) == ["bare"]


@pytest.mark.slow
def test_convert_with_scheduler_records_it(tmp_path, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(os.path.join(FIXTURES, "diffusers", "unet_multihead"), bare)
    os.remove(bare / "scheduler_config.json")
    out = tmp_path / "export"
    assert _convert("diffusers", str(bare), out, "--scheduler", "DDPMScheduler") == 0
    with open(out / "config.json") as file:
        config = json.load(file)
    source = config["source"]
    assert (source["scheduler_type"], source["scheduler_source"]) == ("DDPMScheduler", "DDPMScheduler's defaults")
    process = kdiff.process.from_model_config(config)
    np.testing.assert_allclose(process.betas, kdiff.schedules.linear(T=1000).betas, rtol=1e-6)
