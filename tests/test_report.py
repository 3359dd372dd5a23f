"""The report stage and the sample stage's timings, on hand-written artifacts (no training).

The report must be readable without the project's notes: it cites its papers, renders
its Markdown with a real Markdown library, shows KID ×10³ and the sampling time with and
without the one-off graph tracing, and draws a one-epoch loss curve as a visible point.
"""

import json
import os
import re

import numpy as np
import pytest

from pipeline.stages import report, sample

PARAMS = {
    "dataset": "digits",
    "family": "ddpm",
    "network": "small",
    "image_size": 8,
    "epochs": 1,
    "batch_size": 64,
    "seed": 0,
}


def _write(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f)


def _row(fid, kid_mean, kid_std):
    return {
        "fid": fid,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "num_samples": 16,
        "classifier_confidence": 0.9,
        "num_classes_present": 10,
    }


def _artifacts(root, history=None):
    """The inputs of the report stage, as the other stages write them."""
    inputs = {name: str(root / name) for name in ("examples", "model", "samples", "metrics", "retrieval")}
    _write(os.path.join(inputs["examples"], "stats.json"), {"num_train": 90, "num_eval": 10})
    _write(
        os.path.join(inputs["model"], "history.json"),
        history or {"loss": [0.25], "val_loss": [0.3], "steps": 2, "seconds": 1.5, "steps_per_second": 1.3},
    )
    timing = sample.sampling_timing([
        {"images": 8, "seconds": 9.0, "warmup": True},
        {"images": 8, "seconds": 1.0, "warmup": False},
    ])
    timing.update({"num_samples": 16, "sampler": "ddim", "steps": 10, "shards": 2, "trajectory_seconds": 0.5})
    _write(os.path.join(inputs["samples"], "timings.json"), {"ddim_10": timing})
    _write(
        os.path.join(inputs["metrics"], "metrics.json"),
        {
            "samplers": {"ddim_10": dict(_row(12.5, 0.004255, 0.0014372), fid_infinity=10.5, fid_low=11.0, fid_high=14.5)},
            "real_heldout": {"fid": 7.0, "classifier_confidence": 0.99, "num_classes_present": 10},
            "baseline_gaussian": _row(50.0, 0.0325, 0.002),
            "classifier_accuracy_heldout": 0.97,
            "feature_space": "classifier penultimate layer (64-d) of a small CNN, not pool_3 <b>",
            "num_real": 90,
            "warnings": ["FID from fewer than 2,048 samples is biased upward: ddim_10 (16)."],
        },
    )
    _write(os.path.join(inputs["retrieval"], "retrieval.json"), {"ddim_10": {"memorization_ratio": 0.5}})
    return inputs


@pytest.fixture
def written(tmp_path):
    inputs = _artifacts(tmp_path)
    out = str(tmp_path / "report")
    report.Executor().Do(inputs, {"report": out}, PARAMS)
    with open(os.path.join(out, "report.html"), encoding="utf-8") as f:
        page = f.read()
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        summary = json.load(f)
    return {"out": out, "html": page, "md": text, "summary": summary}


# ----------------------------------------------------------------------------- timings


def test_sampling_timing_separates_the_warmup_by_hand():
    # Steady batches: 3 s for 6 images → 0.5 s/image. The 4-image warm-up took 10 s, of
    # which 4 × 0.5 = 2 s were sampling: 8 s of tracing.
    timing = sample.sampling_timing([
        {"images": 4, "seconds": 10.0, "warmup": True},
        {"images": 4, "seconds": 2.0, "warmup": False},
        {"images": 2, "seconds": 1.0, "warmup": False},
    ])
    assert timing["seconds"] == 13.0
    assert timing["warmup_seconds"] == 10.0 and timing["warmup_images"] == 4
    assert timing["trace_seconds"] == pytest.approx(8.0)
    assert timing["sampling_seconds"] == pytest.approx(5.0)
    assert timing["sampling_seconds"] < timing["seconds"]
    assert timing["images_per_second"] == pytest.approx(10 / 13, abs=1e-4)
    assert timing["sampling_images_per_second"] == pytest.approx(2.0)


def test_sampling_timing_without_steady_batches_and_bad_input():
    timing = sample.sampling_timing([{"images": 4, "seconds": 3.0, "warmup": True}])
    assert timing["seconds"] == 3.0 and timing["images_per_second"] == pytest.approx(4 / 3, abs=1e-4)
    assert timing["trace_seconds"] is None and timing["sampling_seconds"] is None
    assert timing["sampling_images_per_second"] is None
    # A warm-up faster than the steady rate (noise) is no negative tracing time.
    timing = sample.sampling_timing([
        {"images": 2, "seconds": 0.5, "warmup": True},
        {"images": 2, "seconds": 1.0, "warmup": False},
    ])
    assert timing["trace_seconds"] == 0.0 and timing["sampling_seconds"] == timing["seconds"]
    with pytest.raises(ValueError, match="Expected at least one timed batch"):
        sample.sampling_timing([])


def test_shards_time_the_warmup_batch_apart(tmp_path, monkeypatch):
    """SampleShards → AssembleSampler with a stand-in sampler whose first call is slow (the trace)."""
    import time

    import kdiff

    calls = []

    def fake_sample(model, n, seed=None, batch_size=None, **kwargs):
        time.sleep(0.4 if not calls else 0.02)  # the first call "traces"
        calls.append(n)
        return np.full((n, 2, 2, 1), 128, np.uint8)

    monkeypatch.setattr(kdiff, "sample", fake_sample)
    monkeypatch.setattr(kdiff.export, "load", lambda path: object())
    samplers = {"fake": {"sampler": "ddim", "steps": 3}}
    items = [i for i in sample.work_items(samplers, 6, 2, seed=0) if i["kind"] == "shard"]
    shards = sample.SampleShards("unused", str(tmp_path / "work"), batch_size=2)
    shards.setup()
    records = [record for item in items for _, record in shards.process(item)]
    flags = [[b["warmup"] for b in r["batches"]] for r in records]
    assert flags == [[True, False], [False, False]]  # only the worker's first batch of the sampler
    assert calls == [2, 1, 2, 1]  # shards of 3 in batches of 2
    out = tmp_path / "out"
    assert list(sample.AssembleSampler(str(out), samplers, 6).process(("fake", records))) == ["fake"]
    with open(tmp_path / "work" / "fake" / "timing.json", encoding="utf-8") as f:
        timing = json.load(f)
    assert timing["num_samples"] == 6 and timing["sampler"] == "ddim" and timing["shards"] == 2
    assert timing["trace_seconds"] > 0.3
    assert 0 < timing["sampling_seconds"] < timing["seconds"]
    assert timing["sampling_images_per_second"] > timing["images_per_second"]


# ----------------------------------------------------------------------------- report


def test_html_is_rendered_markdown(written):
    page = written["html"]
    assert "<table>" in page and "<th>" in page and "pictures/loss.png" in page
    assert '<img alt="Loss curve" src="pictures/loss.png"' in page
    text = re.sub(r"<[^>]+>", "", page)  # the visible text (and the style sheet)
    assert "*" not in text and "`" not in text  # no literal Markdown emphasis or code marks
    assert "**" not in page and "`" not in page
    assert "<strong>FID</strong>" in page and "<code>ddim_10</code>" in page
    # Text from the artifacts is shown as it is, never interpreted as Markdown or HTML.
    assert "not pool_3 &lt;b&gt;" in page
    assert "<li>FID from fewer than 2,048 samples" in page


def test_artifact_text_is_escaped_for_markdown():
    import markdown

    assert markdown.markdown(report._text("a *b* `c` [d](e) x_y_z <i>")) == "<p>a *b* `c` [d](e) x_y_z &lt;i&gt;</p>"


def test_report_cites_its_sources_and_not_our_notes(written):
    for text in (written["md"], written["html"]):
        assert "## References" in written["md"] and "<h2>References</h2>" in written["html"]
        for citation in (
            "Ho et al., 2020",
            "Song, Meng &",
            "Song & Ermon, 2019" if text is written["md"] else "Song &amp; Ermon, 2019",
            "Song et al., 2021",
            "Nichol &",
            "Heusel et al., 2017",
            "Bińkowski et al., 2018",
            "Cerizza",
            "Università di Milano-Bicocca",
        ):
            assert citation in text, citation
        lowered = text.lower()
        assert "the seed" not in lowered and "seed's" not in lowered and "shared/seed" not in lowered
        assert not re.search(r"seed \d+\.\d", lowered)  # "seed 5.3" (a section), not "random seed 0"


def test_kid_is_shown_times_1000(written):
    row = written["summary"]["samplers"]["ddim_10"]
    assert row["kid_x1000_mean"] == pytest.approx(1000 * row["kid_mean"])
    assert row["kid_x1000_std"] == pytest.approx(1000 * row["kid_std"])
    assert row["kid_mean"] == pytest.approx(0.004255)  # the raw value is kept
    base = written["summary"]["baseline_gaussian"]
    assert base["kid_x1000_mean"] == pytest.approx(32.5)
    assert "KID ×10³" in written["md"]
    assert "| `ddim_10` | 10 | 16 | 12.5 | [11, 14.5] | 10.5 | 4.25 ± 1.44 |" in written["md"]
    assert "FID∞" in written["md"] and "Chong & Forsyth" in written["md"]
    assert "| 32.5 ± 2 |" in written["md"]


def test_report_shows_time_with_and_without_tracing(written):
    row = written["summary"]["samplers"]["ddim_10"]
    # Warm-up 9 s for 8 images, steady 1 s for 8: 8 s of tracing, 2 s of sampling.
    assert row["seconds"] == 10.0 and row["trace_seconds"] == 8.0 and row["sampling_seconds"] == 2.0
    assert row["sampling_images_per_second"] == 8.0
    assert "time with tracing (s)" in written["md"] and "sampling time without tracing (s)" in written["md"]
    assert "| 10 | 8 | 2 | 8 |" in written["md"]


def _line_pixels(path):
    """Pixels of matplotlib's first line colour (C0, #1f77b4) in a PNG."""
    from PIL import Image

    with Image.open(path) as picture:
        rgb = np.asarray(picture.convert("RGB")).astype(int)
    return int(np.sum(np.abs(rgb - np.array([31, 119, 180])).sum(-1) < 40))


def test_one_epoch_loss_curve_is_not_empty(tmp_path, written):
    assert _line_pixels(os.path.join(written["out"], "pictures", "loss.png")) > 20  # a visible marker
    # A curve with no finite loss at all still writes a picture (saying so) instead of failing.
    path = str(tmp_path / "empty.png")
    report._loss_curve({"loss": [None], "val_loss": []}, path)
    assert os.path.getsize(path) > 0 and _line_pixels(path) == 0


def test_report_without_new_keys_degrades_to_dashes(tmp_path):
    """Artifacts of an older run (raw KID only, total time only) still give a report."""
    inputs = _artifacts(tmp_path)
    _write(os.path.join(inputs["samples"], "timings.json"), {"ddim_10": {"seconds": 3.0, "num_samples": 16}})
    out = str(tmp_path / "report")
    report.Executor().Do(inputs, {"report": out}, PARAMS)
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        text = f.read()
    assert "| `ddim_10` | – | 16 | 12.5 | [11, 14.5] | 10.5 | 4.25 ± 1.44 | 3 | – | – | – |" in text


def test_user_facing_text_cites_sources_not_our_notes():
    """README and the report / metric modules name papers, never the unpublished notes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    notes = re.compile(r"the seed's|shared/seed|\bseed \d+\.\d|\bseed (?:fig|table|eq)|of the seed\b", re.IGNORECASE)
    for path in (
        "README.md",
        "kdiff/metrics.py",
        "pipeline/features.py",
        "pipeline/stages/evaluate.py",
        "pipeline/stages/report.py",
        "pipeline/stages/retrieve.py",
    ):
        with open(os.path.join(root, path), encoding="utf-8") as f:
            found = notes.findall(f.read())
        assert not found, (path, found)
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert "## References" in readme
    for short, _ in report.REFERENCES:  # the README lists every work the report cites
        first_author = short.split(",")[0].split(" ")[0]
        assert first_author in readme, short


def test_samplers_of_different_counts_are_compared_by_fid_infinity(tmp_path, written):
    """A sampler config's own num_samples: the report says the counts differ and what to compare."""
    assert "drew different numbers of images" not in written["md"]  # one count: no such note
    inputs = _artifacts(tmp_path)
    timings = json.load(open(os.path.join(inputs["samples"], "timings.json"), encoding="utf-8"))
    timings["ddpm_1000"] = dict(timings["ddim_10"], num_samples=8, sampler="ddpm", steps=1000)
    _write(os.path.join(inputs["samples"], "timings.json"), timings)
    path = os.path.join(inputs["metrics"], "metrics.json")
    metrics = json.load(open(path, encoding="utf-8"))
    metrics["samplers"]["ddpm_1000"] = dict(metrics["samplers"]["ddim_10"], num_samples=8)
    _write(path, metrics)
    out = str(tmp_path / "report")
    report.Executor().Do(inputs, {"report": out}, PARAMS)
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        text = f.read()
    assert "drew different numbers of images (`ddim_10` 16, `ddpm_1000` 8" in text
    assert "compare their FID∞ and KID rather than their FID" in text
