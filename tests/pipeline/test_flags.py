"""Flags, config and defaults a user can trust: pipeline.run's parser, pipeline.config's checks.

Nothing here runs a stage: ``run_stages`` is replaced where ``run`` is called, so each test
takes well under a second (the subprocess ones, a few).
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import pytest
from paths import REPO

import kdiff_console

from pipeline import config, errors, orchestrator
from pipeline import run as run_lib
from pipeline.stages.base import StageError

FIELDS = [field.name for field in dataclasses.fields(config.RunConfig)]


@pytest.fixture
def captured_run(monkeypatch):
    """``run_lib.run`` with the stages replaced: returns what ``run_stages`` was given."""
    calls = []

    def fake_run_stages(cfg, output_dir, beam_args, *, force=False, resume=False, stages=run_lib.STAGE_ORDER,
                        lease_seconds=None):
        calls.append({
            "config": cfg, "output_dir": output_dir, "beam_args": list(beam_args), "stages": stages,
            "force": force, "resume": resume, "lease_seconds": lease_seconds,
        })
        return {}

    monkeypatch.setattr(orchestrator, "run_stages", fake_run_stages)
    return calls


def _exit_message(capsys, argv):
    with pytest.raises(SystemExit) as info:
        run_lib.run(argv)
    return info.value.code, capsys.readouterr().err


# ----------------------------------------------------------------------------- --help


def test_help_lists_every_field_with_its_default_in_its_stage_group():
    text = run_lib.build_parser().format_help()
    sections = {}  # group title → its text
    titles = [run_lib.GROUP_TITLES[stage] for stage in config.STAGE_GROUPS]
    ends = [f"\n{title}:\n" for title in titles[1:]] + ["\nApache Beam's own flags"]
    for title, end in zip(titles, ends):
        start = text.index(f"\n{title}:\n")
        sections[title] = text[start : text.index(end, start)]
    for field in dataclasses.fields(config.RunConfig):
        section = sections[run_lib.GROUP_TITLES[field.metadata["stage"]]]
        assert f"--{field.name} " in section, field.name
        default = "none" if field.default is None else str(field.default)
        assert f"(default: {default})" in " ".join(section.split()), field.name
    assert "SUPPRESS" not in text and "==SUPPRESS==" not in text
    for beam_flag in ("--runner", "--direct_num_workers", "apache_beam.options.pipeline_options", "--help_beam"):
        assert beam_flag in text


def test_field_groups_name_the_stage_that_reads_them():
    import importlib

    readers = {
        "ingest": ("ingest",),
        "train": ("train",),
        "sample": ("sample",),
        "evaluate": ("evaluate", "retrieve"),
    }
    for field in dataclasses.fields(config.RunConfig):
        stage = field.metadata["stage"]
        if stage == "run":
            continue
        specs = [importlib.import_module(f"pipeline.stages.{name}").SPEC for name in readers[stage]]
        assert any(field.name in spec.parameters for spec in specs), (field.name, stage)


def test_module_help_is_fast_and_quiet():
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.run", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for name in FIELDS:
        assert f"--{name} " in done.stdout, name
    assert done.stderr == ""  # no TensorFlow start-up lines: --help never imports it


# ----------------------------------------------------------------------------- unknown flags


@pytest.mark.parametrize(
    "argv, flag, closest",
    [
        (["--famly=ncsn"], "--famly", "--family"),
        (["--learning_rat", "1e-3"], "--learning_rat", "--learning_rate"),
        (["--direct_num_workerz=2"], "--direct_num_workerz", "--direct_num_workers"),
        (["--fid_feature=inception"], "--fid_feature", "--fid_features"),
    ],
)
def test_unknown_flag_fails_naming_it_and_the_closest_flag(tmp_path, capsys, captured_run, argv, flag, closest):
    code, err = _exit_message(capsys, [f"--output_dir={tmp_path}", *argv])
    assert code == 2
    assert f"unrecognized argument {flag}:" in err and f"did you mean {closest}?" in err
    assert captured_run == []  # nothing ran


def test_stray_positional_argument_fails(tmp_path, capsys, captured_run):
    code, err = _exit_message(capsys, [f"--output_dir={tmp_path}", "ncsn"])
    assert code == 2 and "'ncsn'" in err and captured_run == []


@pytest.mark.parametrize("flags, force, resume", [([], False, False), (["--force"], True, False), (["--force", "--resume"], True, True)])
def test_force_and_resume_reach_the_stages(tmp_path, captured_run, flags, force, resume):
    assert run_lib.run([f"--output_dir={tmp_path}", "--preset=tiny", *flags]) == 0
    (call,) = captured_run
    assert (call["force"], call["resume"]) == (force, resume)


def test_beam_flags_pass_through(tmp_path, captured_run):
    argv = [f"--output_dir={tmp_path}", "--preset=tiny", "--direct_num_workers=1",
            "--direct_running_mode", "in_memory", "--family=ncsn"]
    assert run_lib.run(argv) == 0
    (call,) = captured_run
    assert call["config"].family == "ncsn"
    args = call["beam_args"]
    assert args[0] == "--runner=DirectRunner" and args[-1] == "--save_main_session"
    assert "--direct_num_workers=1" in args and args[args.index("--direct_running_mode") + 1] == "in_memory"


def test_check_beam_args_accepts_beam_options_only():
    parser = run_lib.build_parser()
    good = ["--runner=DataflowRunner", "--project", "p", "--region=r", "--temp_location=gs://b/t"]
    assert run_lib.check_beam_args(parser, good) == good
    with pytest.raises(SystemExit):
        run_lib.check_beam_args(parser, ["--runer=DirectRunner"])


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--runner=DirectRuner"], ["Beam knows no runner 'DirectRuner'", "PortableRunner", "did you mean --runner=DirectRunner?"]),
        (["--runner=no_such_module.Runner"], ["cannot import no_such_module.Runner", "ModuleNotFoundError"]),
        (["--runner=pipeline.run.build_parser"], ["pipeline.run.build_parser is not a Beam PipelineRunner subclass"]),
        (["--runner=PortableRunner"], ["--runner=PortableRunner needs --job_endpoint=HOST:PORT", "local_job_service_main",
                                       "Received: no --job_endpoint"]),
        (["--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=EXTERNAL"],
         ["--environment_type=EXTERNAL needs --environment_config=HOST:PORT", "worker_pool_main"]),
    ],
)
def test_a_runner_that_cannot_start_fails_before_any_stage(tmp_path, capsys, captured_run, flags, expected):
    code, err = _exit_message(capsys, [f"--output_dir={tmp_path}", "--preset=tiny", *flags])
    assert code == 2 and captured_run == []  # nothing ran
    for text in expected:
        assert text in err, err


def test_known_runners_in_any_spelling_pass(tmp_path, captured_run):
    for runner in ("direct", "DirectRunner", "apache_beam.runners.direct.direct_runner.DirectRunner"):
        assert run_lib.run([f"--output_dir={tmp_path}", "--preset=tiny", f"--runner={runner}"]) == 0
    assert [call["beam_args"][0] for call in captured_run] == [
        "--runner=direct", "--runner=DirectRunner", "--runner=apache_beam.runners.direct.direct_runner.DirectRunner"]


def test_dataflow_needs_its_client_its_flags_and_a_run_folder_in_a_store(tmp_path, capsys, captured_run, monkeypatch):
    from pipeline import runners

    dataflow = ["--runner=DataflowRunner", "--project=p", "--region=europe-west1", "--temp_location=gs://kdiff-tmp/t"]
    monkeypatch.setattr(runners, "DATAFLOW_CLIENT", "no_such_package.dataflow")
    code, err = _exit_message(capsys, ["--output_dir=gs://kdiff-runs/r", *dataflow])
    assert code == 2 and "needs Beam's Dataflow client" in err and "pip install 'kdiff[dataflow]'" in err
    monkeypatch.setattr(runners, "DATAFLOW_CLIENT", "json")  # a client that is there
    code, err = _exit_message(capsys, ["--output_dir=s3://kdiff-runs/r", "--runner=DataflowRunner", "--project=p",
                                       "--temp_location=/tmp/t"])
    assert code == 2 and "needs --region, --temp_location=gs://BUCKET/PATH" in err
    assert "Received: --project=p, --region=None, --temp_location=/tmp/t" in err
    code, err = _exit_message(capsys, [f"--output_dir={tmp_path}", *dataflow])
    assert code == 2 and "Dataflow's workers cannot reach this machine's disk" in err and str(tmp_path) in err
    assert captured_run == []
    runners.check(dataflow, "gs://kdiff-runs/r")  # all there: passes (and contacts nothing)


def test_an_output_dir_of_an_unsupported_store_fails_naming_it(capsys, captured_run):
    code, err = _exit_message(capsys, ["--output_dir=hdfs://kdiff-runs/r", "--preset=tiny"])
    assert code == 2 and captured_run == []
    assert "argument --output_dir:" in err and "Received: 'hdfs://kdiff-runs/r'" in err


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("name", sorted(config.PRESETS))
@pytest.mark.parametrize(
    "field, value",
    [
        ("family", "gan"),
        ("network", "resnet"),
        ("schedule", "sigmoid"),
        ("sde", "vx"),
        ("precision", "float8"),
        ("strategy", "tpu_v9"),
        ("limit_order", "random"),
        ("fid_features", "clip"),
        ("image_size", 0),
        ("limit", 0),
        ("channels", 2),
        ("num_sigmas", 1),
        ("ema_decay", 1.5),
        ("learning_rate", -1.0),
        ("seed", -1),
        ("samplers", {"ddim": 50}),
    ],
)
def test_every_preset_checks_every_field(name, field, value):
    with pytest.raises(ValueError, match=f"`{field}`") as info:
        config.preset(name, **{field: value})
    assert "Received:" in str(info.value)


def test_bad_family_names_the_field_and_its_choices(tmp_path, capsys, captured_run):
    with pytest.raises(ValueError, match=r"Expected `family` to be one of \['ddpm', 'ncsn', 'sde'\]. Received: family='gan'"):
        config.preset("tiny", family="gan")
    code, err = _exit_message(capsys, [f"--output_dir={tmp_path}", "--preset=tiny", "--family=gan"])
    assert code == 2 and "family='gan'" in err and "['ddpm', 'ncsn', 'sde']" in err
    assert "KeyError" not in err and "Traceback" not in err


def test_cross_field_checks_apply_to_every_preset():
    for name in config.PRESETS:
        with pytest.raises(ValueError, match=r"family=.ncsn. to be one of \[.ncsn_small., .ncsn_cifar10.\]"):
            config.preset(name, family="ncsn", network="unet_small")
        with pytest.raises(ValueError, match="sigma_min"):
            config.preset(name, sigma_min=2.0)
        with pytest.raises(ValueError, match="unknown"):
            config.preset(name, famly="ncsn")
        for family in config.FAMILIES:
            assert config.preset(name, family=family).network == config.DEFAULT_NETWORKS[family]


def test_limit_none_means_every_image_and_bad_values_fail(tmp_path, capsys, captured_run):
    assert config.preset("tiny").limit == 96
    assert run_lib.run([f"--output_dir={tmp_path}", "--preset=tiny", "--limit=none"]) == 0
    assert captured_run[-1]["config"].limit is None  # not silently the preset's 96
    assert run_lib.run([f"--output_dir={tmp_path}", "--preset=tiny"]) == 0
    assert captured_run[-1]["config"].limit == 96
    code, err = _exit_message(capsys, [f"--output_dir={tmp_path}", "--limit=all"])
    assert code == 2 and "--limit" in err and "integer or none" in err
    code, err = _exit_message(capsys, [f"--output_dir={tmp_path}", "--image_size=none"])
    assert code == 2 and "--image_size" in err


def test_flags_override_the_config_file_which_overrides_the_preset(tmp_path, captured_run):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"epochs": 3, "family": "sde", "limit": 50}))
    assert run_lib.run([f"--output_dir={tmp_path}", "--preset=tiny", f"--config={path}", "--epochs=5"]) == 0
    cfg = captured_run[-1]["config"]
    assert (cfg.epochs, cfg.family, cfg.limit, cfg.num_samples) == (5, "sde", 50, 16)
    assert cfg.samplers == config.TINY_SAMPLERS["sde"]


def test_config_file_with_unknown_key_fails_naming_it(tmp_path, capsys, captured_run):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"famly": "ncsn", "epochs": 2}))
    with pytest.raises(ValueError, match=r"unknown: \['famly'\]") as info:
        config.read_file(str(path))
    assert "did you mean 'family'" in str(info.value)
    code, err = _exit_message(capsys, [f"--output_dir={tmp_path}", f"--config={path}"])
    assert code == 2 and "famly" in err and captured_run == []
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        config.read_file(str(path))


def test_default_run_uses_run_config_defaults(captured_run, tmp_path):
    assert run_lib.run([f"--output_dir={tmp_path}"]) == 0
    assert captured_run[-1]["config"] == config.RunConfig()
    default = config.RunConfig()
    assert (default.learning_rate, default.ema_decay, default.image_size, default.num_shards) == (1e-3, 0.999, 8, 4)
    assert (default.train_steps, default.epochs, default.lr_decay, default.warmup_steps) == (None, None, True, 200)
    # every default sampler row draws the run's count: their FIDs compare
    assert sorted(default.samplers) == ["ddim_50_clipped_eps", "dpm_solver_10"] and default.num_samples == 500
    assert not any("num_samples" in kwargs for kwargs in default.samplers.values())


def test_resolve_fills_run_config_defaults_and_checks():
    from pipeline.stages import ingest, train

    resolved = config.resolve({}, ingest.SPEC.parameters)
    assert {k: resolved[k] for k in ingest.SPEC.parameters} == config.RunConfig().section(ingest.SPEC.parameters)
    resolved = config.resolve({"family": "ncsn"}, train.SPEC.parameters)
    assert resolved["network"] == "ncsn_small" and resolved["data_range"] == [0.0, 1.0]
    assert resolved["learning_rate"] == config.RunConfig().learning_rate
    with pytest.raises(ValueError, match="image_size"):
        config.resolve({"image_size": "8"}, ingest.SPEC.parameters)


def test_data_range_is_derived_once():
    for family, expected in (("ddpm", (-1.0, 1.0)), ("ncsn", (0.0, 1.0)), ("sde", (-1.0, 1.0))):
        assert config.RunConfig(family=family).data_range == expected == config.family_data_range(family)


# ----------------------------------------------------------------------------- logs


def test_run_leaves_the_root_logger_and_log_levels_alone(tmp_path, captured_run, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    levels = {name: logging.getLogger(name).level for name in kdiff_console.QUIET_LOGGERS}
    seen = {}

    def spy(cfg, output_dir, beam_args, **kwargs):
        seen["tf"] = logging.getLogger("tensorflow").getEffectiveLevel()
        seen["env"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
        return {}

    monkeypatch.setattr(orchestrator, "run_stages", spy)
    assert run_lib.run([f"--output_dir={tmp_path}", "--preset=tiny"]) == 0
    assert seen == {"tf": logging.ERROR, "env": "3"}  # quiet while the stages run
    assert (root.level, list(root.handlers)) == before
    assert {name: logging.getLogger(name).level for name in kdiff_console.QUIET_LOGGERS} == levels
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert run_lib.run([f"--output_dir={tmp_path}", "--preset=tiny", "--verbose"]) == 0
    assert seen["tf"] == logging.getLogger("tensorflow").getEffectiveLevel() and seen["env"] is None


@pytest.mark.slow
def test_entry_point_is_quiet(tmp_path):
    """A bad value after the flags parse: TensorFlow is imported (quietly), the error printed."""
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    argv = [sys.executable, "-m", "pipeline.run", f"--output_dir={tmp_path}", "--epochs=0"]
    quiet = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines()[-1].endswith("Expected `epochs` >= 1. Received: epochs=0")
    assert "absl::InitializeLog" not in quiet.stderr and "oneDNN" not in quiet.stderr
    assert len(quiet.stderr.strip().splitlines()) == 2  # usage + error


# ----------------------------------------------------------------------------- Beam errors


def test_beam_error_message_unwraps_and_strips():
    inner = ValueError("bad pixel [while running 'ReadAndPreprocess']")
    try:
        try:
            raise inner
        except ValueError as error:
            raise RuntimeError("Pipeline failed [while running 'Outer']") from error
    except RuntimeError as error:
        assert errors.beam_error_message(error) == "bad pixel"
        assert errors.root_cause(error) is inner
    assert errors.beam_error_message(RuntimeError("")) == "RuntimeError"
    text = "a [while running 'A/B'] [while running 'C']"
    assert errors.strip_beam_suffixes(text) == "a"


def test_find_error_in_the_chain_and_in_a_worker_traceback():
    wrapped = RuntimeError("x")
    wrapped.__cause__ = StageError("Cannot read image /d/a.png: OSError [while running 'ReadAndPreprocess']")
    found = errors.find_error(wrapped, StageError)
    assert isinstance(found, StageError) and str(found) == "Cannot read image /d/a.png: OSError"
    remote = RuntimeError(
        "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
        "pipeline.stages.base.StageError: Cannot read image /d/b.png: truncated [while running 'ReadAndPreprocess']\n"
    )
    assert str(errors.find_error(remote, StageError)) == "Cannot read image /d/b.png: truncated"
    assert errors.find_error(RuntimeError("something else"), StageError) is None


def test_an_os_error_in_a_worker_traceback_is_read_back():
    """A worker process's OSError reaches the launcher as its traceback's text (the
    DirectRunner's worker processes, a portable runner's pool): it is named as an I/O
    failure all the same, with its path and errno."""
    import errno

    remote = RuntimeError(
        "Pipeline job-1 failed in state FAILED: Error running pipeline.\nTraceback (most recent call last):\n"
        "  File \"x.py\", line 1\nPermissionError: [Errno 13] no usable S3 credentials (Unable to locate "
        "credentials); set them with …: 's3://kdiff-runs/r/ingest/examples/stats.json' [while running 'WriteStats']\n"
    )
    assert errors.io_error(remote) == (
        "s3://kdiff-runs/r/ingest/examples/stats.json",
        "no usable S3 credentials (Unable to locate credentials); set them with …", errno.EACCES,
    )
    no_path = RuntimeError("Traceback …\nOSError: [Errno 28] No space left on device")
    assert errors.io_error(no_path) == (None, "No space left on device", errno.ENOSPC)
    assert errors.io_error(RuntimeError("ValueError: [Errno 5] not an OSError's name")) is None


# ----------------------------------------------------------------------------- parameters declared once

# Each stage's parameters as the stages listed them before the fields declared them (issue
# 24): the set must not change, or every cached run's fingerprints would.
PINNED_PARAMETERS = {
    "ingest": ("dataset", "limit", "limit_order", "image_size", "crop_size", "channels", "num_shards", "seed"),
    "train": (
        "family", "model_source", "network", "base_channels", "num_res_blocks", "schedule", "T", "loss",
        "sigma_max", "sigma_min", "num_sigmas", "sde", "sde_N", "train_steps", "epochs", "batch_size",
        "learning_rate", "warmup_steps", "warmup_from", "lr_decay", "ema_decay", "class_conditional",
        "label_dropout", "strategy", "precision", "checkpoint_every_steps", "seed",
    ),
    "sample": (
        "samplers", "guidance_scale", "nfe_sweep", "sweep_samplers", "num_samples", "sample_shards",
        "sample_batch_size", "trajectory_samples", "seed",
    ),
    "evaluate": ("fid_features", "fid_weights", "inception_weights", "inception_graph", "seed"),
    "retrieve": ("knn", "retrieval_features", "inception_weights"),
    "report": ("dataset", "family", "network", "image_size", "epochs", "batch_size", "seed"),
}

# The stages' fingerprints of these configs (each stage's inputs: the fingerprints of the
# stages that wrote them, as the orchestrator chains them). A refactoring keeps them; a change
# of what a stage computes changes them here, with a comment saying which.
PINNED_FINGERPRINTS = {
    "default": (
        {},
        # the sample stage on: the default DDIM row renamed ddim_50_clipped_eps (its clipped_eps explicit)
        ["f9934df660b6c308", "9d2d98ecf75a077b", "94061adafb5476de", "4ee5917fc7ee6b20", "d74a4db3d634fb4e",
         "d8bdf616e200beaf"],
    ),
    "tiny": (
        {"family": "ddpm"},
        ["cdb3f14555cd451a", "70c6a2d9ec6344a6", "342d39bee2a15312", "40239c80c5e57560", "2280cfc7288478f3",
         "e25c9df379ccbc8e"],
    ),
    "tiny_ncsn": (
        {"family": "ncsn"},
        ["cdb3f14555cd451a", "df4aca3944c74333", "b37fa3a901b32506", "3f83f4bb6148f455", "20e24f4993c2e514",
         "4e63746eb1057b59"],
    ),
    "tiny_sde": (
        {"family": "sde", "sde": "ve"},
        ["cdb3f14555cd451a", "ecffd399c91aa723", "e1624aa273ba08fc", "621e4c444b56345d", "b6cd29c06f07e603",
         "d4537d3d6c334ffd"],
    ),
    "tiny_guided_sweep": (
        {"class_conditional": True, "guidance_scale": 2.0, "nfe_sweep": "5,10", "train_steps": 7},
        ["cdb3f14555cd451a", "3a848708b4c1dc48", "6daa3c6dfcb88c3b", "12cf312df0663a9a", "c5a116055e833167",
         "9a45623905ec647a"],
    ),
}


def _stage_specs():
    import importlib

    return {name: importlib.import_module(f"pipeline.stages.{name}").SPEC for name in run_lib.STAGE_ORDER}


def _fingerprints(cfg, specs):
    """Each stage's fingerprint of ``cfg``, chained through the inputs as ``orchestrator`` does."""
    from pipeline.stages.base import fingerprint

    stamps = {}
    for name, spec in specs.items():
        upstream = {artifact: stamps[orchestrator.ARTIFACT_PATHS[artifact][0]] for artifact in spec.inputs}
        stamps[name] = fingerprint(spec, cfg.section(spec.parameters), upstream)
    return [stamps[name] for name in specs]


def test_each_stage_keeps_its_parameters():
    specs = _stage_specs()
    assert list(specs) == list(PINNED_PARAMETERS)
    for name, spec in specs.items():
        assert len(set(spec.parameters)) == len(spec.parameters), name
        assert set(spec.parameters) == set(PINNED_PARAMETERS[name]), name


def _machine_precision():
    """What --precision=auto resolves to on this machine (imports TensorFlow: only when asked)."""
    from kdiff import distribute

    return distribute.default_precision()


@pytest.mark.parametrize("case", sorted(PINNED_FINGERPRINTS))
def test_cached_fingerprints_do_not_change(case):
    overrides, expected = PINNED_FINGERPRINTS[case]
    # The precision pinned: its default, auto, is each machine's (another precision is
    # another training recipe, so auto's fingerprint is that of the precision it resolves to).
    overrides = dict(overrides, precision="float32")
    cfg = config.RunConfig(precision="float32") if case == "default" else config.preset("tiny", **overrides)
    assert _fingerprints(cfg, _stage_specs()) == expected
    resolved = config.preset("tiny", **dict(overrides, precision=_machine_precision()))
    assert _fingerprints(config.preset("tiny", **dict(overrides, precision="auto")), _stage_specs()) == _fingerprints(
        resolved, _stage_specs()
    )


def test_every_field_declares_its_stages_and_one_check():
    specs = _stage_specs()
    for field in dataclasses.fields(config.RunConfig):
        stages = field.metadata["stages"]
        assert stages and len(set(stages)) == len(stages) and set(stages) <= set(specs), field.name
        assert field.metadata["stage"] in config.STAGE_GROUPS, field.name  # its --help group
        assert callable(field.metadata["check"]), field.name
        for name, spec in specs.items():  # a stage's parameters are exactly the fields naming it
            assert (field.name in spec.parameters) == (name in stages), (field.name, name)
        resolved = _machine_precision() if field.default == config.AUTO_PRECISION else field.default
        assert config.check_field(field.name, field.default) == resolved
    assert not hasattr(config, "_FIELD_CHECKS")  # the checks live on the fields alone
    for stages, group in (((), None), (("trian",), None), (("train",), "model")):
        with pytest.raises(ValueError, match="Expected `stages`"):
            config.declare(1, stages=stages, group=group, help="x", check=lambda value, name: value)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("image_size", 0, "`image_size`"),
        ("family", "gan", r"`family` to be one of \['ddpm', 'ncsn', 'sde'\]"),
        ("limit_order", "random", "`limit_order`"),
        ("ema_decay", 1.5, r"`ema_decay` in \[0, 1\]"),
        ("label_dropout", 1.0, r"`label_dropout` in \[0, 1\)"),
        ("nfe_sweep", "5,5", "`nfe_sweep` as distinct"),
        ("knn", 0, "`knn`"),
        ("seed", -1, "`seed`"),
        ("samplers", {"ddim": 50}, "`samplers` to be a non-empty dict"),
        ("model_source", "hub:x", "`model_source` as KIND:TARGET"),
        ("lr_decay", "yes", "`lr_decay` to be true or false"),
        ("network", "resnet", "`network` in"),
    ],
)
def test_check_field_rejects_bad_values_naming_the_field(name, value, message):
    with pytest.raises(ValueError, match=message) as info:
        config.check_field(name, value)
    assert f"Received: {name}=" in str(info.value)


def test_check_field_normalizes_and_names_unknown_fields():
    assert config.check_field("nfe_sweep", "5, 10") == "5,10"
    assert config.check_field("learning_rate", 1) == 1.0 and isinstance(config.check_field("learning_rate", 1), float)
    with pytest.raises(ValueError, match="did you mean 'family'"):
        config.check_field("famly", "ddpm")


def test_a_field_declared_for_a_stage_is_its_parameter_and_in_its_fingerprint(monkeypatch):
    def fraction_below_one(value, name):
        if not 0 <= value < 1:
            raise ValueError(f"Expected `{name}` in [0, 1). Received: {name}={value!r}")
        return float(value)

    @dataclasses.dataclass
    class Extended(config.RunConfig):
        dropout: float = config.declare(0.0, stages=("train",), help="the network's dropout", check=fraction_below_one)

    monkeypatch.setattr(config, "RunConfig", Extended)  # as if the field were RunConfig's own
    specs = _stage_specs()
    assert set(specs["train"].parameters) == set(PINNED_PARAMETERS["train"]) | {"dropout"}
    for name, spec in specs.items():
        if name != "train":
            assert set(spec.parameters) == set(PINNED_PARAMETERS[name]), name
    plain, other = _fingerprints(Extended(), specs), _fingerprints(Extended(dropout=0.3), specs)
    assert plain[0] == other[0]  # ingest does not read it
    assert plain[1] != other[1]  # train does, and the stages after it read train's output
    with pytest.raises(ValueError, match=r"Expected `dropout` in \[0, 1\). Received: dropout=2"):
        Extended(dropout=2)
    assert config.check_field("dropout", 0) == 0.0
    train_group = run_lib.build_parser().format_help().split(f"\n{run_lib.GROUP_TITLES['train']}:\n")[1]
    assert "--dropout " in train_group.split(f"\n{run_lib.GROUP_TITLES['sample']}:\n")[0]


def test_values_are_resolved_once(monkeypatch):
    from tiny_network import TinyNet

    from pipeline import builders
    from pipeline.stages import train

    cfg = config.preset("tiny", family="ncsn")
    resolved = cfg.resolved(train.SPEC.parameters)
    assert isinstance(resolved, config.ResolvedParams)
    assert resolved["network"] == "ncsn_small" and resolved["data_range"] == [0.0, 1.0]
    assert config.resolve(resolved, train.SPEC.parameters) is resolved  # taken as it is
    calls = []
    check_model = config.check_model
    monkeypatch.setattr(config, "check_model", lambda params: calls.append(1) or check_model(params))
    assert len(builders.build_process(resolved)) == cfg.num_sigmas
    builders.make_optimizer(resolved)
    assert calls == []  # the builders took the resolved values as they were
    monkeypatch.setattr(builders, "build_network", lambda params, shape, loss=None: TinyNet(shape[0], shape[2]))
    model = builders.build_model(cfg.section(train.SPEC.parameters), (8, 8, 1))  # a plain dict
    assert calls == [1] and model.data_range == (0.0, 1.0)  # resolved once, for all the builders
    twin = resolved.replace(precision="mixed_bfloat16")
    assert isinstance(twin, config.ResolvedParams) and twin["precision"] == "mixed_bfloat16"
    assert resolved["precision"] == _machine_precision()  # "auto", resolved for this machine
    with pytest.raises(ValueError, match="`precision`"):
        resolved.replace(precision="float8")
