"""The `kdiff` console command and kdiff.images (grids and trajectories as PNG)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from paths import REPO
from PIL import Image
from tiny_network import TinyNet

import kdiff
from kdiff import export as export_lib
from kdiff import images, schedules
from kdiff.cli import main
from kdiff.diffusion import DDPM, NCSN


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_exports")
    ddpm = DDPM(TinyNet(), schedule=schedules.linear(T=100))
    cond = DDPM(TinyNet(num_classes=3), schedule=schedules.linear(T=100), num_classes=3)
    ncsn = NCSN(TinyNet(), sigmas=schedules.geometric_sigmas(1.0, 0.01, 10))
    return {
        "ddpm": (ddpm, export_lib.export(ddpm, root / "ddpm")),
        "cond": (cond, export_lib.export(cond, root / "cond")),
        "ncsn": (ncsn, export_lib.export(ncsn, root / "ncsn")),
    }


def _png(path):
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return np.asarray(image)


# ------------------------------------------------------------------------------ sample


@pytest.mark.slow
def test_sample_writes_a_png_grid_of_the_samples(exports, tmp_path, capsys):
    model, path = exports["ddpm"]
    out = tmp_path / "grid.png"
    status = main(["sample", "--model", path, "--num", "6", "--sampler", "ddim", "--steps", "5",
                   "--seed", "3", "--out", str(out), "--batch_size", "4"])
    printed = capsys.readouterr().out
    assert status == 0 and "wrote" in printed
    # stdout is no terminal here (a log): the progress is one plain line, without a bar's control bytes
    assert "10/10 - " in printed and not [c for c in ("\x08", "\r", "\x1b[") if c in printed], repr(printed)
    grid = _png(out)
    assert grid.shape == (2 * 10 + 2, 3 * 10 + 2) and grid.dtype == np.uint8  # 3 per row, 2 px padding
    expected = kdiff.sample(model, 6, sampler="ddim", steps=5, seed=3, batch_size=4)
    np.testing.assert_array_equal(grid, images.make_grid(expected)[..., 0])
    np.testing.assert_array_equal(grid[2:10, 12:20], expected[1, ..., 0])


@pytest.mark.slow
def test_sample_with_a_trajectory_nrow_scale_and_class(exports, tmp_path):
    _, path = exports["cond"]
    out, trajectory = tmp_path / "sub" / "grid.png", tmp_path / "traj.png"
    out.parent.mkdir()  # kdiff sample creates no folders (a typo must not leave one behind)
    status = main(["sample", "--model", path, "--num", "3", "--steps", "20", "--out", str(out),
                   "--trajectory", str(trajectory), "--nrow", "3", "--scale", "2", "--class_label", "2",
                   "--sampler", "ddim", "--eta", "0.5"])
    assert status == 0
    assert _png(out).shape == (2 * (1 * 10 + 2), 2 * (3 * 10 + 2))
    picture = _png(trajectory)
    assert picture.shape == (2 * (3 * 10 + 2), 2 * (10 * 10 + 2))  # rows: samples; 10 states each


@pytest.mark.slow
def test_sample_uses_the_model_default_sampler(exports, tmp_path):
    model, path = exports["ncsn"]
    out = tmp_path / "ncsn.png"
    assert main(["sample", "--model", path, "--num", "4", "--steps", "2", "--out", str(out)]) == 0
    expected = kdiff.sample(model, 4, sampler="annealed_langevin", steps=2, seed=0)
    np.testing.assert_array_equal(_png(out), images.make_grid(expected)[..., 0])


@pytest.mark.slow
def test_info_prints_the_config(exports, capsys):
    assert main(["info", "--model", exports["ddpm"][1]]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["family"] == "ddpm" and config["image_shape"] == [8, 8, 1]


# ---------------------------------------------------------------------------- bad input


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--num", "0"], "--num: expected an integer >= 1"),
        (["--steps", "many"], "--steps: expected an integer"),
        (["--eta", "-1"], "--eta: expected a finite number >= 0"),
        (["--sampler", "bogus"], "--sampler: invalid choice"),
        (["--sampler", "annealed_langevin"], "--sampler: Expected a sampler for a schedule (Schedule) process"),
        (["--sampler", "ddpm", "--eta", "1"], "--eta: Expected sampler options of sampler 'ddpm' among"),
        (["--sampler", "dpm_solver", "--option", "bogus=1"], "--option: Expected sampler options of sampler 'dpm_solver'"),
        (["--steps", "101"], "--steps: Expected at most the model's T=100 steps"),
        (["--class_label", "1"], "--class_label: the model is not class-conditional"),
        (["--frames", "1"], "--frames: expected an integer >= 2"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(exports, tmp_path, capsys, args, message):
    out = tmp_path / "grid.png"
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--model", exports["ddpm"][1], "--out", str(out)] + args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_missing_or_foreign_model_exits_2_naming_the_path(exports, tmp_path, capsys):
    for model in (tmp_path / "no_such_model", tmp_path):
        out = tmp_path / "grid.png"
        with pytest.raises(SystemExit) as exit_info:
            main(["sample", "--model", str(model), "--out", str(out)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "--model" in err and str(model) in err
        assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--model", exports["cond"][1], "--out", str(tmp_path), "--class_label", "5"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["sample"])
    assert "--model" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_an_unwritable_out_exits_2_before_sampling(exports, tmp_path, capsys):
    model = exports["ddpm"][1]
    missing = tmp_path / "no_such_dir" / "grid.png"
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--model", model, "--out", str(missing)])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert not missing.parent.exists()  # no folder created for a typo
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    os.chmod(read_only, 0o555)
    try:
        if os.access(read_only, os.W_OK):
            pytest.skip("running as a user that may write anywhere (root): a read-only folder is writable")
        with pytest.raises(SystemExit):
            main(["sample", "--model", model, "--out", str(read_only / "grid.png")])
        assert "is not writable" in capsys.readouterr().err
    finally:
        os.chmod(read_only, 0o755)


@pytest.mark.slow
def test_a_garbage_saved_model_is_named(exports, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exports["ddpm"][1], broken)
    (broken / "saved_model.pb").write_bytes(b"not a protocol buffer")
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--model", str(broken), "--out", str(tmp_path / "grid.png")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Expected a readable SavedModel" in err and str(broken) in err and "Traceback" not in err


@pytest.mark.slow
def test_console_command_exit_status(tmp_path):
    """As a separate process (what the console script runs): status 2 and the path on stderr."""
    missing = tmp_path / "missing_model"
    result = subprocess.run(
        [sys.executable, "-m", "kdiff.cli", "sample", "--model", str(missing), "--out", str(tmp_path / "g.png")],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "missing_model" in result.stderr and "does not exist" in result.stderr
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ images


def test_make_grid_layout():
    batch = np.arange(5 * 2 * 3 * 3, dtype=np.uint8).reshape(5, 2, 3, 3)
    grid = images.make_grid(batch, nrow=2, padding=1)
    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1, 3)
    np.testing.assert_array_equal(grid[1:3, 5:8], batch[1])
    np.testing.assert_array_equal(grid[7:9, 1:4], batch[4])
    assert grid[7:9, 5:8].max() == 0  # the empty cell stays padding
    assert images.make_grid(batch[:, :, :, :1]).shape == (2 * 4 + 2, 3 * 5 + 2, 1)
    with pytest.raises(ValueError, match="uint8"):
        images.make_grid(batch.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        images.make_grid(np.zeros((2, 4, 4, 2), np.uint8))


def test_save_trajectory_picks_evenly_spaced_states(tmp_path):
    states, n = 51, 2
    trajectory = np.zeros((states, n, 2, 2, 1), np.uint8)
    for s in range(states):
        trajectory[s] = s  # each state's pixels hold its index
    np.testing.assert_array_equal(images.trajectory_frames(51, 10), [0, 6, 11, 17, 22, 28, 33, 39, 44, 50])
    np.testing.assert_array_equal(images.trajectory_frames(4, 10), [0, 1, 2, 3])
    picture = images.save_trajectory(trajectory, tmp_path / "t.png", num_frames=10, padding=0)
    assert picture.shape == (n * 2, 10 * 2, 1)
    np.testing.assert_array_equal(picture[0, ::2, 0], images.trajectory_frames(51, 10))
    np.testing.assert_array_equal(_png(tmp_path / "t.png"), picture[..., 0])
    rgb = images.save_grid(np.full((4, 3, 3, 3), 200, np.uint8), tmp_path / "rgb.png", scale=3)
    assert _png(tmp_path / "rgb.png").shape == (rgb.shape[0] * 3, rgb.shape[1] * 3, 3)


# ------------------------------------------------------------------------------ foreign checkpoints


def _diffusers_folder(root, kind):
    folder = root / kind
    folder.mkdir()
    if kind == "pipeline":
        (folder / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DModel"]}))
    elif kind == "unet_subfolder":
        (folder / "unet").mkdir()
        (folder / "unet" / "config.json").write_text("{}")
    elif kind == "weights":
        (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    else:
        (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    return folder


@pytest.mark.parametrize("kind, evidence", [
    ("pipeline", "(model_index.json)"), ("unet_subfolder", "(unet/config.json)"),
    ("weights", "(diffusion_pytorch_model.safetensors)"), ("config", "(config.json of a UNet2DModel)"),
])
def test_a_diffusers_folder_as_model_exits_2_with_the_convert_command(tmp_path, capsys, kind, evidence):
    import shlex

    folder = _diffusers_folder(tmp_path, kind)
    commands = (["sample", "--model", str(folder), "--out", str(tmp_path / "g.png")], ["info", "--model", str(folder)],
                ["img2img", "--model", str(folder), "--image", "a.png", "--strength", "0.5", "--out", str(tmp_path)],
                ["inpaint", "--model", str(folder), "--image", "a.png", "--mask", "m.png", "--out", str(tmp_path)])
    for argv in commands:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"kdiff {argv[0]}: error: argument --model: expected a kdiff "
                                                       f"export; '{folder}' is a diffusers checkpoint {evidence}")
        command = err.split("Convert it first: ")[1].split(", then")[0]
        assert command == f"kdiff convert --from diffusers {folder} --out {folder}_kdiff"
        convert = kdiff.cli.build_parser().parse_args(shlex.split(command)[1:])  # the real syntax
        assert (convert.source_kind, convert.src, convert.out) == ("diffusers", str(folder), f"{folder}_kdiff")
    assert sorted(os.listdir(tmp_path)) == [kind]


def test_an_ncsn_checkpoint_as_model_exits_2_with_the_convert_command(tmp_path, capsys):
    run = tmp_path / "celeba"
    run.mkdir()
    (run / "checkpoint.pth").write_bytes(b"")
    checkpoint = run / "checkpoint.pth"
    for given, out in ((run, f"{run}_kdiff"), (checkpoint, f"{run / 'checkpoint'}_kdiff")):
        with pytest.raises(SystemExit) as exit_info:
            main(["sample", "--model", str(given), "--out", str(tmp_path / "g.png")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is an ermongroup/ncsn checkpoint" in err
        assert (f"Convert it first: kdiff convert --from ncsn {checkpoint} --out {out} "
                f"[--config celeba|cifar10|mnist], then pass --model {out}") in err


def test_a_folder_that_is_no_checkpoint_keeps_the_plain_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "Something"}))
    with pytest.raises(SystemExit):
        main(["info", "--model", str(tmp_path)])
    err = capsys.readouterr().err
    assert "Expected a kdiff export" in err and "kdiff convert" not in err


# ------------------------------------------------------------------------------ inpaint / img2img: --model

OWN = {"inpaint": ["--mask", "m.png"], "img2img": ["--strength", "0"]}  # each command's required flag


@pytest.mark.parametrize("command", ["inpaint", "img2img"])
def test_edits_take_the_export_as_model_like_sample(command, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    usage = capsys.readouterr().out
    assert "--model PATH" in usage and "EXPORT_DIR" not in usage
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--image", "a.png", "--out", str(tmp_path / "out"), *OWN[command]])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --model" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["inpaint", "img2img"])
def test_the_positional_export_is_deprecated_with_a_warning(command, tmp_path, capsys):
    missing = str(tmp_path / "missing")
    with pytest.raises(SystemExit) as exit_info:
        main([command, missing, "--image", "a.png", "--out", str(tmp_path / "out"), *OWN[command]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (f"kdiff {command}: warning: the export as a positional argument is deprecated and will be removed in "
            f"the next release; pass --model {missing}") in err
    assert f"argument --model: Expected a kdiff export directory. Received: path='{missing}' does not exist" in err
    with pytest.raises(SystemExit):
        main([command, missing, "--model", str(tmp_path), "--image", "a.png", "--out", str(tmp_path / "out"),
              *OWN[command]])
    assert "differs from the positional export" in capsys.readouterr().err


@pytest.mark.slow
def test_the_positional_export_still_runs_for_one_release(exports, tmp_path, capsys):
    picture = tmp_path / "a.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L").save(picture)
    out = tmp_path / "out"
    assert main(["img2img", exports["ddpm"][1], "--image", str(picture), "--strength", "0", "--out", str(out)]) == 0
    assert "is deprecated" in capsys.readouterr().err
    np.testing.assert_array_equal(_png(out / "a.png"), _png(picture))
