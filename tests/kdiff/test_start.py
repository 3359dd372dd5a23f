"""Commands that start at once: ``import kdiff``, ``kdiff --help``, ``kdiff info`` and
``python -m kdiff.fid --help`` import neither TensorFlow nor Keras, each in a fresh
interpreter; the lazy names still resolve; ``kdiff info`` summarizes long lists."""

import json
import os
import subprocess
import sys

import pytest
from paths import REPO

SHIPPED = os.path.join(REPO, "saved_models", "ddpm_digits")

# Runs one command in this interpreter, then prints which heavy modules it imported.
_PROBE = """
import json, runpy, sys
kind, argv = sys.argv[1], sys.argv[2:]
try:
    if kind == "kdiff":
        import kdiff_console
        status = kdiff_console.kdiff_main(argv)
    elif kind == "module":
        sys.argv = argv
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
        status = 0
    else:
        exec(argv[0])
        status = 0
except SystemExit as exit:
    status = exit.code
print(json.dumps({"status": status, "heavy": sorted(m for m in ("tensorflow", "keras") if m in sys.modules)}))
"""


def _probe(kind, *argv):
    """Runs a command in a fresh interpreter; returns its exit status, the heavy modules it
    imported, its stdout (the probe's own line removed) and its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, kind, *argv], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_GCE_CHECK": "True"},
    )
    *printed, last = done.stdout.rstrip("\n").split("\n")
    report = json.loads(last)
    return report["status"], report["heavy"], "\n".join(printed), done.stderr


@pytest.mark.parametrize("kind, argv", [
    ("code", ["import kdiff; from kdiff.samplers import recipes, registry; registry.names(); recipes.names()"]),
    ("kdiff", ["--help"]),
    ("kdiff", ["sample", "--help"]),
    ("kdiff", ["convert", "--help"]),
    ("kdiff", ["inpaint", "--help"]),
    ("kdiff", ["img2img", "--help"]),
    ("kdiff", ["sample", "--model", SHIPPED, "--out", "g.png", "--sampler", "no_such_sampler"]),  # a usage error
    ("kdiff", ["info", "--model", SHIPPED]),
    ("module", ["kdiff.fid", "--help"]),
], ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_the_command_imports_no_tensorflow(kind, argv):
    status, heavy, out, _ = _probe(kind, *argv)
    assert heavy == [] and status in (0, 2, None)
    if argv[-1] == "--help":
        assert status == 0 and "usage:" in out
    if argv[0] == "info":
        assert json.loads(out)["family"] == "ddpm"


@pytest.mark.slow
def test_a_command_that_runs_a_model_still_imports_tensorflow_quietly(tmp_path):
    """The other side of the probe: ``sample`` does import TensorFlow (so the probe can tell),
    after the arguments parsed, with its start-up lines hidden."""
    status, heavy, out, err = _probe("kdiff", "sample", "--model", SHIPPED, "--num", "1", "--steps", "1",
                                     "--out", str(tmp_path / "g.png"))
    assert status == 0 and "tensorflow" in heavy and "wrote" in out
    assert "oneDNN" not in err and "absl::InitializeLog" not in err


def test_the_lazy_names_resolve_to_their_modules():
    import kdiff
    import kdiff.samplers

    assert kdiff.DDPM is sys.modules["kdiff.diffusion"].DDPM and "DDPM" in vars(kdiff)  # kept after the first use
    assert kdiff.sample is sys.modules["kdiff.sampling"].sample
    assert kdiff.samplers.ddim is sys.modules["kdiff.samplers.ddpm_ddim"].ddim
    assert kdiff.grids is sys.modules["kdiff.grids"]  # any submodule, as the eager __init__ bound them
    assert {"DDPM", "samplers", "sample", "metrics", "__version__"} <= set(dir(kdiff))
    assert set(kdiff.__all__) <= set(dir(kdiff))
    with pytest.raises(AttributeError, match="module 'kdiff.samplers' has no attribute 'nothing'"):
        kdiff.samplers.nothing  # noqa: B018


def test_every_name_the_stubs_list_resolves():
    """kdiff's and kdiff.samplers' public names are listed once, in their __init__.pyi."""
    import kdiff
    import kdiff.samplers

    for package in (kdiff, kdiff.samplers):
        assert len(package.__all__) == len(set(package.__all__)) > 10
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)


def test_a_stub_whose_all_differs_from_its_imports_is_refused(tmp_path):
    from kdiff import _lazy

    (tmp_path / "__init__.pyi").write_text("from kdiff.sampling import sample as sample\n__all__ = ['sample', 'slerp']\n")
    with pytest.raises(ValueError, match=r"__all__ in .*__init__.pyi.*missing \[\], unknown \['slerp'\]"):
        _lazy.read_stub("package", str(tmp_path / "__init__.py"))
    (tmp_path / "__init__.pyi").write_text("from kdiff.sampling import sample as draw\n__all__ = ['draw']\n")
    with pytest.raises(ValueError, match=r"Expected `sample as sample`.*line 1"):
        _lazy.read_stub("package", str(tmp_path / "__init__.py"))


def _export_with_betas(folder, betas):
    """A folder that reads as a kdiff export (``kdiff info`` opens only its config.json)."""
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")
    config = {"family": "ddpm", "format": 2, "schedule": {"name": "custom", "betas": betas},
              "image_shape": [32, 32, 3], "source": {"kind": "diffusers", "path": "google/ddpm-cifar10-32"}}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_info_summarizes_long_lists_and_full_prints_them(tmp_path, capsys):
    from kdiff import cli

    betas = [0.0001 + i * (0.02 - 0.0001) / 999 for i in range(1000)]
    path = _export_with_betas(tmp_path / "export", betas)
    assert cli.main(["info", "--model", path]) == 0
    out = capsys.readouterr().out
    assert '"betas": "1000 values, 0.0001 … 0.02"' in out and out.count("\n") < 30
    shown = json.loads(out)
    assert next(iter(shown)) == "source" and shown["image_shape"] == [32, 32, 3]  # short lists as they are
    assert cli.main(["info", "--model", path, "--full"]) == 0
    assert json.loads(capsys.readouterr().out)["schedule"]["betas"] == betas
    assert cli.summarized({"a": [[1, 2]] * 9, "b": list(range(9))}) == {
        "a": '9 values, [1, 2] … [1, 2]', "b": "9 values, 0 … 8"}
