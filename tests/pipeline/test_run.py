"""The whole pipeline on the tiny preset with Beam's DirectRunner: once per family, caching, bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from paths import REPO
from tiny_network import TinyNet

from pipeline import builders
from pipeline import run as run_lib


def _run(tmp_path, *args):
    return run_lib.run(["--preset=tiny", f"--output_dir={tmp_path}", "--runner=DirectRunner", *args])


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ddpm", "ncsn", "sde"])
def test_tiny_pipeline_runs_end_to_end(tmp_path, family, capsys, request, monkeypatch):
    """Every stage, for every family's process, data range and samplers. The ddpm run is
    the real one (the default family and network); ncsn and sde run with the test network
    in place of RefineNet / the U-Net, whose tracing would take most of the time (measured:
    the ncsn run 104 s): their real networks train and sample through the same stages in
    stages/test_train_sample.py::test_other_families_train_and_sample."""
    if family == "ddpm":
        tmp_path, out = request.getfixturevalue("ddpm_run")
    else:
        monkeypatch.setattr(builders, "build_network", lambda params, shape, loss=None: TinyNet(shape[0], shape[2]))
        assert _run(tmp_path, f"--family={family}") == 0
        out = capsys.readouterr().out
    report = tmp_path / "report" / "report"
    assert (report / "report.md").exists() and (report / "report.html").exists()
    summary = json.loads((report / "metrics.json").read_text())
    assert summary["samplers"], summary
    for name, row in summary["samplers"].items():
        assert row["fid"] >= 0 and row["num_samples"] == 16, (name, row)
        assert (tmp_path / "sample" / "samples" / name / "grid.png").exists()
    effective = json.loads((tmp_path / "config.json").read_text())
    assert effective["family"] == family and effective["image_size"] == 8
    assert "Report:" in out and "FID" in out
    html = (report / "report.html").read_text()
    assert "<table>" in html and "pictures/loss.png" in html


@pytest.mark.slow
def test_second_run_skips_completed_stages_and_force_reruns(tmp_path, capsys, ddpm_run):
    tmp_path = tmp_path / "run"
    shutil.copytree(ddpm_run[0], tmp_path)  # a completed run; its fingerprints hold no paths
    assert _run(tmp_path) == 0
    out = capsys.readouterr().out
    for stage in run_lib.STAGE_ORDER:
        assert f"[{stage}] cached" in out
    # A changed retrieval parameter reruns retrieval and what follows, not what precedes it.
    assert _run(tmp_path, "--knn=2") == 0
    out = capsys.readouterr().out
    for stage in ("ingest", "train", "sample", "evaluate"):
        assert f"[{stage}] cached" in out
    assert "[retrieve] running" in out and "[report] running" in out
    assert _run(tmp_path, "--knn=2", "--force", "--stages=ingest") == 0
    assert "[ingest] running" in capsys.readouterr().out


@pytest.mark.slow
def test_bad_dataset_fails_clearly_and_keeps_completed_outputs(tmp_path, capsys):
    assert _run(tmp_path, "--stages=ingest") == 0
    examples = tmp_path / "ingest" / "examples"
    before = sorted(os.listdir(examples))
    missing = tmp_path / "no_such_folder"
    code = _run(tmp_path, f"--dataset=folder:{missing}", "--stages=ingest")
    assert code == 1
    err = capsys.readouterr().err
    assert str(missing) in err
    assert sorted(os.listdir(examples)) == before  # nothing already written is lost


def test_flag_errors_name_the_flag(tmp_path):
    with pytest.raises(SystemExit):
        run_lib.run([f"--output_dir={tmp_path}", "--stages=ingest,paint"])
    with pytest.raises(SystemExit):
        run_lib.run([f"--output_dir={tmp_path}", "--family=gan"])


def test_module_entry_point_help():
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.run", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0 and "--output_dir" in done.stdout
