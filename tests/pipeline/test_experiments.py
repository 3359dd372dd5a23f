"""The survey's experiments (pipeline/experiments.py): definitions, configs, the side-by-side
report, equal-count comparisons, the stage times, the early failures, the CelebA-HQ /
CelebA loaders (end to end at --scale=small: test_experiments_e2e.py)."""

import os

import numpy as np
import pytest
from PIL import Image

from pipeline import config, data, experiment_runner, experiments, imports
from pipeline import run as run_lib

NAMES = ["table1", "table2", "ncsn", "sde", "retrieval"]


# ----------------------------------------------------------------------------- definitions


def test_the_five_experiments_and_the_survey_figures():
    table = experiments.experiments()
    assert list(table) == NAMES
    survey = {(run.name, row.key): dict(row.survey) for run in table["table1"].runs for row in run.rows}
    assert survey[("ddpm_linear", "ddpm_1000")] == {"fid": 99.802, "train_minutes": 138, "minutes_per_100": 80}
    assert survey[("ddpm_cosine", "ddpm_1000")] == {"fid": 115.659, "train_minutes": 140, "minutes_per_100": 75}
    assert survey[("ddpm_linear", "ddim_50")] == {"fid": 103.322, "train_minutes": 127, "minutes_per_100": 4}
    assert survey[("ddpm_cosine", "ddim_50")] == {"fid": 113.433, "train_minutes": 125, "minutes_per_100": 4}
    (run,) = table["table2"].runs_at("seed")
    assert [(r.key, r.survey["fid"], r.survey["minutes_per_100"]) for r in run.rows[:4]] == [
        ("ddpm_50", 459.211, 10), ("ddpm_1000", 77.659, 213), ("ddim_50", 81.006, 10), ("ddim_1000", 94.843, 213)]
    extra = run.rows[4]  # not in the survey: DDIM-1000 with ε recomputed from the clipped x̂₀
    assert extra.key == "ddim_1000_clipped_eps" and not extra.survey
    name, kwargs = experiments.sampler_config(extra)
    assert kwargs == {**experiments.sampler_config(run.rows[3])[1], "clipped_eps": True}
    assert experiments.sampler_config(run.rows[3])[1]["clipped_eps"] is False  # diffusers' DDIMPipeline
    assert table["ncsn"].runs[0].rows[0].survey == {"fid": 110.163, "seconds_per_sample": 100}
    sde_rows = table["sde"].runs[0].rows
    assert sde_rows[0].survey == {"fid": 63.514, "seconds_per_sample": 720}
    assert [r.key for r in sde_rows[1:]] == ["dpm_solver_20", "heun_20"] and not sde_rows[1].survey
    # retrieval covers every model and row of the others, at every scale
    for scale in experiments.SCALES:
        others = list(dict.fromkeys(run.name for name in NAMES[:-1] for run in table[name].runs_at(scale)))
        assert [run.name for run in table["retrieval"].runs_at(scale)] == others
        for run in table["retrieval"].runs_at(scale):
            assert [row.key for row in run.rows] == [row.key for row in experiments.shared_rows(run.name, scale)]
    with pytest.raises(ValueError, match="table1"):
        experiments.get("table3")
    with pytest.raises(ValueError, match="scale"):
        experiments.plan("table1", "large")


def test_every_row_at_the_trained_scales_comes_from_a_trained_model():
    """No random-weight stand-in beside the survey's figures: every run at small and
    medium trains (no model_source), and sampling uses the survey's step counts."""
    for scale in experiments.TRAINED_SCALES:
        for name, experiment in experiments.experiments().items():
            for run in experiment.runs_at(scale):
                cfg = experiments.run_config(run, scale)
                assert cfg.model_source is None, (scale, name, run.name)
                steps = {key: kwargs["steps"] for key, kwargs in cfg.samplers.items()}
                assert steps.get("ddpm_1000", 1000) == 1000 and steps.get("score_sde_ve_pc", 2000) == 2000
                if cfg.family == "ddpm":
                    assert cfg.T == 1000
    # table2 at the trained scales samples table1's linear DDPM: one run, every row drawn once
    (shared,) = experiments.get("table2").runs_at("medium")
    assert shared.name == "ddpm_linear"
    linear = experiments.run_config(experiments.get("table1").runs[0], "medium")
    assert sorted(linear.samplers) == ["ddim_1000", "ddim_1000_clipped_eps", "ddim_50", "ddpm_1000", "ddpm_50"]
    assert linear == experiments.run_config(shared, "medium")


def test_long_rows_draw_fewer_samples_at_the_trained_scales():
    linear = experiments.run_config(experiments.get("table1").runs[0], "medium")
    counts = {name: kwargs.get("num_samples", linear.num_samples) for name, kwargs in linear.samplers.items()}
    assert linear.num_samples == 2048
    assert counts == {"ddpm_1000": 500, "ddim_50": 2048, "ddpm_50": 2048, "ddim_1000": 500, "ddim_1000_clipped_eps": 500}
    sde = experiments.run_config(experiments.get("sde").runs_at("small")[0], "small")
    assert sde.samplers["score_sde_ve_pc"]["num_samples"] == experiments.LONG_ROW_SAMPLES
    assert "num_samples" not in sde.samplers["dpm_solver_20"]
    # a command line's smaller count applies to every row
    few = experiments.run_config(experiments.get("ncsn").runs_at("small")[0], "small", overrides={"num_samples": 10})
    assert "num_samples" not in few.samplers["ncsn_annealed_langevin"] and few.num_samples == 10


def test_sampler_configs_follow_the_recipes():
    (run,) = experiments.get("table2").runs_at("seed")
    row = next(r for r in run.rows if r.key == "ddpm_1000")
    name, kwargs = experiments.sampler_config(row)
    assert name == "ddpm_1000" and kwargs["sampler"] == "ddpm" and kwargs["steps"] == 1000
    assert kwargs["variance"] == "beta_tilde" and kwargs["spacing"] == "leading"  # diffusers' DDPMPipeline
    pc = experiments.get("sde").runs[0].rows[0]
    assert experiments.sampler_config(pc)[1]["steps"] == 2000


def test_configs_follow_the_survey_and_the_scales(tmp_path):
    paths = {"celeba_hq": str(tmp_path), "ncsn_checkpoint": str(tmp_path / "checkpoint.pth")}
    linear = experiments.run_config(experiments.get("table1").runs[0], "seed", paths=paths)
    assert linear.dataset == f"folder:{tmp_path}" and linear.limit == 3000 and linear.limit_order == "file_number"
    assert (linear.image_size, linear.epochs, linear.batch_size, linear.schedule) == (128, 50, 16, "linear")
    assert (linear.learning_rate, linear.warmup_steps, linear.warmup_from, linear.lr_decay) == (1e-4, 500, 4e-5, True)
    assert linear.network == "unet_ddpm_cifar10" and linear.model_source is None
    assert (linear.fid_features, linear.retrieval_features, linear.num_samples) == ("fid_inception", "inception", 100)
    assert sorted(linear.samplers) == ["ddim_50", "ddpm_1000"]
    ncsn = experiments.run_config(experiments.get("ncsn").runs_at("seed")[0], "seed", paths=paths)
    assert (ncsn.dataset, ncsn.crop_size, ncsn.image_size) == ("tfds:celeb_a", 140, 32)
    assert ncsn.model_source == f"ncsn:{tmp_path / 'checkpoint.pth'}" and ncsn.family == "ncsn"
    sde = experiments.run_config(experiments.get("sde").runs_at("seed")[0], "seed", paths=paths,
                                 overrides={"num_samples": 7})
    assert sde.model_source == "diffusers:google/ncsnpp-celebahq-256" and (sde.sde, sde.image_size) == ("ve", 256)
    assert sde.num_samples == 7  # the command line's fields override the experiment's
    small = experiments.run_config(experiments.get("table2").runs_at("small")[0], "small")
    assert (small.dataset, small.image_size, small.network, small.model_source) == ("digits", 8, "unet_small", None)
    medium = {run.name: experiments.run_config(run, "medium") for run in experiments.get("retrieval").runs_at("medium")}
    assert sorted(medium) == ["ddpm_cosine", "ddpm_linear", "ncsn", "ncsnpp_ve"]
    assert {cfg.dataset for cfg in medium.values()} == {"fashion_mnist"}
    assert {cfg.image_size for cfg in medium.values()} == {32}
    assert [medium[n].network for n in ("ddpm_linear", "ncsn", "ncsnpp_ve")] == ["unet_medium", "ncsn_small",
                                                                                 "ncsnpp_small"]
    assert (medium["ncsnpp_ve"].sde, medium["ncsnpp_ve"].sde_N) == ("ve", 2000)
    assert medium["ddpm_cosine"].schedule == "cosine" and medium["ncsn"].num_sigmas == 10


@pytest.mark.slow
def test_table1_seed_recipe_builds_the_surveys_model_and_trains_a_step(tmp_path):
    """The seed scale's table1 model as the train stage builds it: Ho et al.'s CIFAR-10
    layout at 128×128 (attention at 16×16), the survey's learning-rate recipe (5.2.1),
    and a train step at that size."""
    import keras
    import tensorflow as tf

    from pipeline import builders

    run = experiments.get("table1").runs[0]
    cfg = experiments.run_config(run, "seed", paths={"celeba_hq": str(tmp_path)})
    params = {**cfg.section(builders.MODEL_FIELDS), "decay_steps": 9375}  # 50 epochs of 3,000 / 16
    model = builders.build_model(params, (128, 128, 3))
    network = model.network
    assert network.count_params() == 35_746_307  # the CIFAR-10 U-Net's: convolutions do not grow with size
    assert tuple(network.get_config()["attention_resolutions"]) == (16,)
    schedule = keras.optimizers.schedules.deserialize(model.optimizer.get_config()["learning_rate"])
    rates = [float(schedule(step)) for step in (0, 250, 500, 4937.5, 9375)]
    np.testing.assert_allclose(rates, [4e-5, 7e-5, 1e-4, 5e-5, 0.0], atol=1e-9)
    before = [w.numpy() for w in network.trainable_weights]
    images = tf.random.stateless_uniform((2, 128, 128, 3), seed=[3, 4], minval=-1, maxval=1)
    logs = model.train_on_batch(images, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0
    changed = [w.path for a, w in zip(before, network.trainable_weights) if not np.array_equal(a, w.numpy())]
    assert changed and all("conv_out" in path for path in changed)  # the zero-initialized output conv
    # is the first step's only nonzero gradient (Ho et al.'s initialization)


def test_seed_scale_fails_early_naming_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(imports, "reachable", lambda *args, **kwargs: False)  # offline, without waiting
    monkeypatch.setattr(experiments, "gpus", lambda: [])
    monkeypatch.setenv("KDIFF_FID_WEIGHTS", str(tmp_path / "absent.pth"))
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        experiment_runner.run_experiment("table1", "seed", str(out), [])
    text = str(info.value)
    assert "--celeba_hq=PATH" in text and "not given" in text and "a GPU" in text and "--allow_cpu" in text
    assert "pytorch-fid's weights" in text and not out.exists()  # nothing ran, nothing written
    with pytest.raises(ValueError, match="--ncsn_checkpoint=PATH"):
        experiment_runner.run_experiment("ncsn", "seed", str(out), [], paths={"ncsn_checkpoint": str(tmp_path / "no.pth")})
    with pytest.raises(ValueError) as info:
        experiment_runner.run_experiment("table2", "seed", str(out), [], paths={"celeba_hq": str(tmp_path)})
    assert "google/ddpm-celebahq-256" in str(info.value) and "--celeba_hq" not in str(info.value)
    assert experiments.requirements(experiments.get("table1"), "small") == []


def test_medium_scale_stops_before_anything_runs_without_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("KDIFF_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))  # the only place looked at
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        experiment_runner.run_experiment("table1", "medium", str(out), [])
    text = str(info.value)
    assert "--scale=medium needs what is missing" in text and "fashion_mnist" in text.lower()
    assert not out.exists()  # nothing ran, nothing written


def test_imports_parse_and_check_their_sources(tmp_path):
    assert imports.parse_model_source("standin:ncsnpp") == ("standin", "ncsnpp")
    assert imports.parse_model_source("diffusers:google/ddpm-celebahq-256") == ("diffusers", "google/ddpm-celebahq-256")
    with pytest.raises(ValueError, match="stand-in"):
        imports.parse_model_source("standin:gan")
    with pytest.raises(ValueError, match="model_source"):
        config.preset("tiny", model_source="torch:model.pt")
    assert imports.missing("standin:ddpm") is None
    assert "no file" in imports.missing(f"ncsn:{tmp_path / 'checkpoint.pth'}")
    assert imports.missing(f"diffusers:{tmp_path}") is None


def _result(**values):
    row = {
        "run": "ddpm_linear", "row": "ddpm_1000", "sampler": "ddpm_20", "label": "DDPM linear", "steps": 20,
        "nfe": 20, "num_samples": 2048, "fid_survey_count": 31.5, "survey_count": 100, "fid": 12.25,
        "fid_infinity": 10.5, "fid_low": 11.0, "fid_high": 14.0, "train_seconds": 90.0, "imported": None,
        "sampling_seconds": 20.48, "seconds_per_sample": 0.01, "memorization_ratio": 0.25, "mean_nn_distance": 3.5,
        "retrieval_features": "x", "retrieval_panel": None,
        "survey": {"fid": 99.802, "train_minutes": 138, "minutes_per_100": 80},
    }
    row.update(values)
    return row


def test_the_table_sets_kdiff_beside_the_survey_with_the_hardware():
    experiment = experiments.get("table1")
    lines = experiments.render_table(experiment, [_result()], "seed", "Test CPU, 2 cores, no GPU")
    header, rule, row, hardware = lines
    assert header.count("|") == rule.count("|") == row.count("|") == hardware.count("|")
    assert "kdiff: FID (100 samples)" in header and "survey: FID (100 samples)" in header
    assert "kdiff: training time" in header and "survey: time for 100 samples" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:9] == ["31.5 (100)", "12.2 (2,048)", "[11, 14]", "10.5", "90 s"]
    assert cells[9] == "1 s" and cells[10:] == ["99.802", "138 min", "80 min"]
    assert "Test CPU, 2 cores, no GPU" in hardware and "Google Colaboratory" in hardware
    small = experiments.render_table(experiment, [_result()], "small", "cpu")
    assert "kdiff (small, trained): FID (100 samples)" in small[0]
    text = experiments.render_report(experiment, [_result()], "medium", "cpu")
    assert "Trained at --scale=medium" in text and "Fashion-MNIST" in text and "stand-in" not in text.lower()
    assert "## References" in text and "Chong & Forsyth" in text
    assert "Trained at" not in experiments.render_report(experiment, [_result()], "seed", "cpu")
    retrieval = experiments.render_table(experiments.get("retrieval"), [_result()], "seed", "cpu")
    assert "memorization ratio" in retrieval[0] and "0.25" in retrieval[2] and "judged by eye" in retrieval[2]


def test_rows_are_compared_at_the_count_they_share(tmp_path):
    """Equal-count FIDs: the long row's 500 samples set the count; its FID and interval
    are those of kdiff.metrics on the first 500 of every row."""
    from kdiff import metrics

    rng = np.random.default_rng(0)
    train = rng.normal(size=(800, 4))
    near, far = rng.normal(size=(2048, 4)), rng.normal(loc=1.0, size=(500, 4))
    path = tmp_path / "features.npz"
    np.savez(path, train=train, **{"samples/ddim_50": near, "samples/ddpm_1000": far})
    rows = [_result(sampler="ddim_50", row="ddim_50", num_samples=2048, features=str(path)),
            _result(sampler="ddpm_1000", row="ddpm_1000", num_samples=500, features=str(path))]
    experiments.add_equal_count_fids(rows, bootstrap_rounds=20)
    assert [r["equal_count"] for r in rows] == [500, 500]
    assert rows[0]["fid_equal"] == pytest.approx(metrics.fid_from_features(train, near[:500]))
    assert rows[1]["fid_equal"] == pytest.approx(metrics.fid_from_features(train, far))
    assert rows[0]["fid_equal_low"] <= rows[0]["fid_equal"] <= rows[0]["fid_equal_high"] < rows[1]["fid_equal_low"]
    text = experiments.render_report(experiments.get("table1"), rows, "small", "cpu")
    assert "## Which orderings are resolved" in text and "`ddpm_linear/ddim_50` below `ddpm_linear/ddpm_1000` by FID" in text


def test_stage_times_come_from_each_stages_done_file(tmp_path):
    from pipeline.io import write_json

    for stage, seconds in (("ingest", 1.5), ("train", 600.0)):
        os.makedirs(tmp_path / stage)
        write_json(str(tmp_path / stage / "_DONE.json"), {"seconds": seconds})
    times = experiments.stage_seconds(str(tmp_path))
    assert times["ingest"] == 1.5 and times["train"] == 600.0 and times["sample"] is None
    lines = experiments.render_stage_times({"ddpm_linear": times})
    assert lines[-1].startswith("| `ddpm_linear` | 1.5 s | 10 min | – |") and lines[-1].endswith("| 10 min |")


def test_hardware_describes_this_machine():
    text = experiments.hardware()
    assert f"{os.cpu_count()} cores" in text and ("GPU" in text)


def test_the_command_line_runs_an_experiment_with_its_overrides(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(experiment_runner, "run_experiment", lambda *args, **kwargs: calls.append((args, kwargs)))
    argv = [f"--output_dir={tmp_path}", "--experiment=table2", "--num_samples=5", "--celeba_hq=/data/hq"]
    assert run_lib.run(argv) == 0
    ((args, kwargs),) = calls
    assert args[:3] == ("table2", "small", str(tmp_path)) and args[3][0] == "--runner=DirectRunner"
    assert kwargs["overrides"] == {"num_samples": 5} and kwargs["paths"]["celeba_hq"] == "/data/hq"


# ----------------------------------------------------------------------------- data loaders


def test_celeba_hq_folder_numeric_order_and_3000_image_limit(tmp_path):
    folder = tmp_path / "celeba_hq_256"
    folder.mkdir()
    for number in range(3005):  # the Kaggle layout: 0.jpg … 29999.jpg in one folder (empty files: not decoded)
        (folder / f"{number}.jpg").touch()
    plan = data.plan_source(f"folder:{folder}", limit=3000, limit_order="file_number")
    keys = [record[0] for record in plan.records]
    assert keys == [f"{n}.jpg" for n in range(3000)]  # 2.jpg before 10.jpg; 3000.jpg … 3004.jpg left out
    assert plan.num_classes is None and plan.default_channels == 3


def test_celeba_hq_images_resize_to_128(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "7.jpg"
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(path)
    image = data.read_image_file(str(path))
    array = data.preprocess(image, 128, 3)
    assert array.shape == (128, 128, 3) and array.dtype == np.uint8
    expected = np.asarray(Image.open(path).convert("RGB").resize((128, 128), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(array, expected)


def test_celeba_center_crop_140_then_32(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)  # CelebA's aligned images: 178 wide, 218 high
    path = tmp_path / "000001.png"
    Image.fromarray(pixels).save(path)
    array = data.preprocess(Image.open(path), 32, 3, crop_size=140)
    # torchvision's CenterCrop(140), as NCSN's loader: top round((218-140)/2) = 39, left 19
    expected = Image.fromarray(pixels[39:179, 19:159]).resize((32, 32), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(array, np.asarray(expected))
    assert not np.array_equal(array, data.preprocess(Image.open(path), 32, 3))  # the default crops 178
    with pytest.raises(ValueError, match="crop_size"):
        data.preprocess(Image.open(path), 32, 3, crop_size=200)
    # ingest's reader applies it
    from pipeline.stages import ingest

    fn = ingest.ReadAndPreprocessFn(data.parse_source(f"folder:{tmp_path}"), {}, 32, 3, crop_size=140)
    fn.setup()
    plan = data.plan_source(f"folder:{tmp_path}")
    ((key, image, label),) = list(fn.process(plan.records[0]))
    assert key == "000001.png" and label == -1
    np.testing.assert_array_equal(image, np.asarray(expected))
