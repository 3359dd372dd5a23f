"""The survey's experiments end to end at --scale=small (slow: one shared run of all five).

Its own module, so that pytest-xdist can run it beside the rest of the experiments' tests:
it is the suite's longest test (four models trained for one step each, then sampled with
the survey's step counts: DDPM-1000, annealed Langevin's 1,000 and the predictor–corrector's
2,000 steps).
"""

import json
import os

import pytest

from pipeline import experiment_runner, experiments

NAMES = ["table1", "table2", "ncsn", "sde", "retrieval"]


# ----------------------------------------------------------------------------- end to end, small


# The smallest settings that still fill every column: 24 digits, one training step per model,
# 10 samples (FID∞ needs 10) in one batch, no trajectory pictures (each traces its own loop).
# The samplers keep the survey's step counts (DDPM-1000, the 2,000-step predictor–corrector).
TINY = {
    "limit": 24, "epochs": 1, "batch_size": 22, "warmup_steps": 0, "num_samples": 10, "sample_batch_size": 10,
    "knn": 2, "trajectory_samples": 0,
}


def _results(path):
    with open(os.path.join(os.path.dirname(path), "results.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
def test_each_experiment_runs_end_to_end_at_small_scale(tmp_path):
    # One test for the five: retrieval reuses the others' runs (a module fixture shared by
    # parametrized tests can be set up twice when pytest-xdist interleaves other modules).
    # --stages=ingest,train first: every model trains, no report; the full run then finds
    # those stages cached and goes on from there.
    first = experiment_runner.run_experiment("table1", "small", str(tmp_path), ["--runner=DirectRunner"], overrides=TINY,
                                   stages=("ingest", "train"))
    assert first is None and not os.path.exists(os.path.join(tmp_path, "small", "table1"))
    for run in ("ddpm_linear", "ddpm_cosine"):
        run_dir = os.path.join(tmp_path, "small", "runs", run)
        assert os.path.exists(os.path.join(run_dir, "train", "_DONE.json"))
        assert not os.path.exists(os.path.join(run_dir, "sample"))
    trained_at = os.path.getmtime(os.path.join(tmp_path, "small", "runs", "ddpm_linear", "train", "_DONE.json"))
    paths = {}
    for name in NAMES:
        paths[name] = experiment_runner.run_experiment(name, "small", str(tmp_path), ["--runner=DirectRunner"], overrides=TINY)
        _check_report(name, paths[name])
    assert os.path.getmtime(os.path.join(tmp_path, "small", "runs", "ddpm_linear", "train", "_DONE.json")) == trained_at


def _check_report(name, path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert "Trained at --scale=small" in text and "stand-in" not in text.lower()
    assert "| kdiff (small, trained):" in text and "| survey:" in text and "| measured on |" in text
    assert "## The survey's claims, checked" in text and "## Time per stage" in text
    assert os.path.exists(os.path.join(os.path.dirname(path), "report.html"))
    results = _results(path)
    assert results["scale"] == "small" and "cores" in results["measured_on"]
    experiment = experiments.get(name)
    assert len(results["rows"]) == sum(len(run.rows) for run in experiment.runs_at("small"))
    assert results["claims"] and all(c["verdict"] in ("supports", "contradicts", "cannot resolve")
                                     for c in results["claims"])
    for run_name, times in results["stage_seconds"].items():
        assert all(times[stage] is not None for stage in ("ingest", "train", "sample", "evaluate")), run_name
    for row in results["rows"]:
        assert row["num_samples"] == 10 and row["survey_count"] == 10 and row["equal_count"] == 10
        assert row["imported"] is None and row["train_seconds"] > 0  # every row from a model the run trained
        if "fid" in experiment.columns:
            assert row["fid"] is not None and row["fid_infinity"] is not None
            assert row["fid_survey_count"] == pytest.approx(row["fid"], rel=1e-3)  # all 10 are the first 100
            assert row["fid_equal"] == pytest.approx(row["fid"], rel=1e-3)
        assert row["sampling_seconds"] > 0
    if name == "table1":
        assert "99.802" in text and "138 min" in text
    if name == "retrieval":
        assert all(row["memorization_ratio"] is not None for row in results["rows"])
        assert text.count("nearest training images](pictures/") == len(results["rows"])
        assert len(os.listdir(os.path.join(os.path.dirname(path), "pictures"))) == len(results["rows"])
