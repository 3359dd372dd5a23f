"""The report stage and the sample stage's timings, on hand-written artifacts (no training).

The report must be readable without the project's notes: it cites its papers, renders
its Markdown with a real Markdown library, shows KID in one labelled unit (raw in the
classifier's features, ×10³ in Inception's) with its standard error, the sampling time
with and without the one-off graph tracing, flags rows no better than the Gaussian
baseline or spread over too few classes, withholds FID∞ below the count that supports it,
says which orderings are resolved, drops all-dash columns, captions every picture, and
draws a one-epoch loss curve as a visible point.
"""

import json
import os
import re

import numpy as np
import pytest
from paths import REPO

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


def _row(fid, kid_mean, kid_std, kid_standard_error=None):
    return {
        "fid": fid,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_standard_error": kid_standard_error,
        "num_samples": 16,
        "classifier_confidence": 0.9,
        "class_entropy": 0.95,
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
            "samplers": {
                "ddim_10": dict(
                    _row(12.5, 0.004255, 0.0014372, 0.00211), fid_infinity=10.5, fid_infinity_supported=True,
                    fid_low=11.0, fid_high=14.5, class_entropy_floor=0.8,
                )
            },
            "real_heldout": {"fid": 7.0, "classifier_confidence": 0.99, "class_entropy": 0.97, "num_classes_present": 10},
            "baseline_gaussian": _row(50.0, 0.0325, 0.002, 0.0031),
            "fid_features": "inception",
            "feature_dim": 2048,
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


def test_kid_is_shown_in_one_labelled_unit_with_its_standard_error(written, tmp_path):
    row = written["summary"]["samplers"]["ddim_10"]
    assert row["kid_x1000_mean"] == pytest.approx(1000 * row["kid_mean"])
    assert row["kid_x1000_std"] == pytest.approx(1000 * row["kid_std"])
    assert row["kid_x1000_standard_error"] == pytest.approx(2.11)
    assert row["kid_mean"] == pytest.approx(0.004255)  # the raw value is kept
    base = written["summary"]["baseline_gaussian"]
    assert base["kid_x1000_mean"] == pytest.approx(32.5)
    # Inception features: ×10³, the column says so, and only that unit appears.
    assert written["summary"]["kid_scale"] == 1000 and "| KID ×10³ ↓ (± s.e.) |" in written["md"]
    assert "| `ddim_10` | 10 | 16 | 12.5 | [11, 14.5] | 10.5 | 4.25 ± 2.1 |" in written["md"]  # no flags column: none flagged
    assert "| 32.5 ± 3.1 |" in written["md"]
    assert "KID (raw)" not in written["md"]
    assert "FID∞" in written["md"] and "Chong & Forsyth" in written["md"]
    # The classifier's features: raw, under its own label; ×10³ appears nowhere.
    inputs = _artifacts(tmp_path)
    path = os.path.join(inputs["metrics"], "metrics.json")
    metrics = json.load(open(path, encoding="utf-8"))
    metrics.update(fid_features="classifier", feature_dim=64)
    metrics["samplers"]["ddim_10"]["fid_infinity_supported"] = False
    metrics["samplers"]["ddim_10"]["kid_standard_error"] = None
    _write(path, metrics)
    text = _report(inputs, tmp_path)
    assert "| KID (raw) ↓ (± s.e.) |" in text and "×10³" not in text.split("## Training")[0].split("- **KID**")[0]
    assert "| 0.00426 ± n/a |" in text and "| 0.0325 ± 0.0031 |" in text


def _report(inputs, tmp_path, name="report"):
    """Runs the report stage on ``inputs`` and returns its report.md."""
    out = str(tmp_path / name)
    report.Executor().Do(inputs, {"report": out}, PARAMS)
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        return f.read()


def test_report_shows_time_with_and_without_tracing(written):
    row = written["summary"]["samplers"]["ddim_10"]
    # Warm-up 9 s for 8 images, steady 1 s for 8: 8 s of tracing, 2 s of sampling.
    assert row["seconds"] == 10.0 and row["trace_seconds"] == 8.0 and row["sampling_seconds"] == 2.0
    assert row["sampling_images_per_second"] == 8.0
    assert "time with tracing (s)" in written["md"] and "sampling time without tracing (s)" in written["md"]
    assert "| 10 | 8 | 2 | 8 |" in written["md"]
    # Only the sampler rows have times: the real and baseline rows show dashes there.
    assert "| held-out real images (reference) | – | – | 7 | – | – | – | – | – | – | – | 0.99 | 0.97 | 10 | – |" in written["md"]


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


def test_report_without_new_keys_degrades_to_dashes_and_drops_empty_columns(tmp_path):
    """Artifacts of an older run (raw KID only, total time only) still give a report; a
    column that is a dash in every row is left out."""
    inputs = _artifacts(tmp_path)
    _write(os.path.join(inputs["samples"], "timings.json"), {"ddim_10": {"seconds": 3.0, "num_samples": 16}})
    path = os.path.join(inputs["metrics"], "metrics.json")
    metrics = json.load(open(path, encoding="utf-8"))
    for key in ("fid_features", "feature_dim"):
        metrics.pop(key)
    for row in (metrics["samplers"]["ddim_10"], metrics["baseline_gaussian"]):
        row.pop("kid_standard_error")
    metrics["samplers"]["ddim_10"].pop("fid_infinity_supported")
    _write(path, metrics)
    text = _report(inputs, tmp_path)
    header = next(line for line in text.splitlines() if line.startswith("| sampler |"))
    # No steps, tracing or images/s anywhere, no flags: those columns are gone; FID∞ too,
    # since without the feature dimension its support cannot be shown.
    assert header == (
        "| sampler | samples | FID ↓ | FID 95 % interval | KID (raw) ↓ (± s.e.) | time with tracing (s) "
        "| classifier confidence | class entropy (1 = even) | classes present | memorization |"
    )
    assert "| `ddim_10` | 16 | 12.5 | [11, 14.5] | 0.00426 ± n/a | 3 | 0.9 | 0.95 | 10 | 0.5 |" in text
    assert report.table(["a", "b", "c"], [["x", "–", "1"], ["y", "–", "–"]]) == [
        "| a | c |", "|---|---|", "| x | 1 |", "| y | – |",
    ]


def test_user_facing_text_cites_sources_not_our_notes():
    """README and the report / metric modules name papers, never the unpublished notes."""
    notes = re.compile(r"the seed's|shared/seed|\bseed \d+\.\d|\bseed (?:fig|table|eq)|of the seed\b", re.IGNORECASE)
    for path in (
        "README.md",
        "kdiff/metrics.py",
        "pipeline/features.py",
        "pipeline/stages/evaluate.py",
        "pipeline/stages/report.py",
        "pipeline/stages/retrieve.py",
    ):
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
            found = notes.findall(f.read())
        assert not found, (path, found)
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
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


def _three_samplers(tmp_path):
    """ddim_10 and ddpm_20 close (FID and KID disagree), "noise" worse than the baseline and
    spread over few classes though the classifier is sure of it."""
    inputs = _artifacts(tmp_path)
    timings_path = os.path.join(inputs["samples"], "timings.json")
    timings = json.load(open(timings_path, encoding="utf-8"))
    timings["ddpm_20"] = dict(timings["ddim_10"], sampler="ddpm", steps=20)
    timings["noise"] = dict(timings["ddim_10"], sampler="ddim", steps=1)
    _write(timings_path, timings)
    path = os.path.join(inputs["metrics"], "metrics.json")
    metrics = json.load(open(path, encoding="utf-8"))
    ddim = metrics["samplers"]["ddim_10"]
    metrics["samplers"]["ddpm_20"] = dict(ddim, fid=13.0, fid_low=10.0, fid_high=16.0, fid_infinity=11.0, kid_mean=0.003)
    metrics["samplers"]["noise"] = dict(
        ddim, fid=80.0, fid_low=70.0, fid_high=90.0, fid_infinity=75.0, kid_mean=0.05, classifier_confidence=0.999,
        class_entropy=0.3, num_classes_present=2,
    )
    metrics["baseline_gaussian"].update(fid=40.0, fid_low=35.0, fid_high=46.0)
    _write(path, metrics)
    return inputs


def test_rows_no_better_than_the_baseline_or_over_few_classes_are_flagged(tmp_path):
    text = _report(_three_samplers(tmp_path), tmp_path)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| sampler |"))
    assert header.startswith("| sampler | flags |")
    assert next(line for line in lines if line.startswith("| `noise` |")).startswith(
        "| `noise` | ⚠ baseline ⚠ classes | 1 | 16 | 80 | [70, 90] |"
    )
    assert next(line for line in lines if line.startswith("| `ddim_10` |")).startswith("| `ddim_10` | – |")
    assert "**Flagged rows**" in text
    assert (
        "- **⚠ baseline**: not clearly better than the Gaussian baseline: its FID bootstrap interval is not "
        "wholly below the baseline's" in text
    )
    assert "Flagged: `noise` (its FID interval \\[70, 90\\] is not below the baseline's \\[35, 46\\])." in text
    assert "Flagged: `noise` (class entropy 0.3 is below 0.8, the floor for 16 draws" in text
    # The real held-out row is named as the classifier's reference.
    assert "The held-out real images are the reference (confidence 0.99, class entropy 0.97)" in text
    summary = json.load(open(os.path.join(tmp_path, "report", "metrics.json"), encoding="utf-8"))
    assert [flag["code"] for flag in summary["samplers"]["noise"]["flags"]] == ["baseline", "classes"]
    assert summary["samplers"]["ddim_10"]["flags"] == []


def test_the_report_says_which_orderings_are_resolved(tmp_path):
    text = _report(_three_samplers(tmp_path), tmp_path)
    section = text.split("### Which orderings are resolved")[1].split("How to read")[0]
    bullets = [line for line in section.splitlines() if line.startswith("- ")]
    assert bullets == [
        "- **Metrics disagree:** FID∞ and KID ×10³ order ddim_10 and ddpm_20 differently: FID∞ ranks ddim_10 "
        "better (10.5 against 11), KID ×10³ ranks ddpm_20 better (4.25 against 3).",
        "- **Resolved:** ddim_10 below noise by FID: intervals \\[11, 14.5\\] and \\[70, 90\\] are apart.",
        "- **Resolved:** ddpm_20 below noise by FID: intervals \\[10, 16\\] and \\[70, 90\\] are apart.",
        "- Within noise: ddim_10 and ddpm_20: FID intervals \\[11, 14.5\\] and \\[10, 16\\] overlap — their "
        "order is within noise.",
    ]


def test_fid_infinity_is_withheld_below_its_supported_count(tmp_path):
    inputs = _three_samplers(tmp_path)
    path = os.path.join(inputs["metrics"], "metrics.json")
    metrics = json.load(open(path, encoding="utf-8"))
    metrics["samplers"]["ddpm_20"]["fid_infinity_supported"] = False
    _write(path, metrics)
    text = _report(inputs, tmp_path)
    ddpm = next(line for line in text.splitlines() if line.startswith("| `ddpm_20` |"))
    assert "| [10, 16] | – |" in ddpm  # the interval, then FID∞ withheld
    assert "FID∞ is shown only from 20,480 samples, 10 per feature dimension (2,048 here)" in text
    assert "Withheld (a dash) for: `ddpm_20` (16); `metrics.json` keeps the values" in text
    summary = json.load(open(os.path.join(tmp_path, "report", "metrics.json"), encoding="utf-8"))
    assert summary["samplers"]["ddpm_20"]["fid_infinity"] == 11.0  # kept, flagged unsupported
    assert summary["samplers"]["ddpm_20"]["fid_infinity_supported"] is False
    # FID∞ no longer orders ddim_10 and ddpm_20: raw FID does (equal counts), against KID.
    assert "FID and KID ×10³ order ddim_10 and ddpm_20 differently: FID ranks ddim_10 better (12.5 against 13)," in text


def test_every_picture_has_a_caption_and_the_introduction_names_the_samplers(tmp_path):
    inputs = _three_samplers(tmp_path)
    for name in ("ddim_10", "ddpm_20", "noise"):
        for kind in ("grid", "trajectory"):
            os.makedirs(os.path.join(inputs["samples"], name), exist_ok=True)
            with open(os.path.join(inputs["samples"], name, f"{kind}.png"), "wb") as f:
                f.write(b"png")
    os.makedirs(os.path.join(inputs["retrieval"], "panels"))
    with open(os.path.join(inputs["retrieval"], "panels", "ddim_10.png"), "wb") as f:
        f.write(b"png")
    _write(
        os.path.join(inputs["retrieval"], "retrieval.json"),
        {"ddim_10": {"memorization_ratio": 0.5, "knn": 5, "panel": {"sample_indices": list(range(8))}}},
    )
    text = _report(inputs, tmp_path)
    assert (
        "drew samples from it with `ddim_10` (ddim sampler, 10 steps), `ddpm_20` (ddpm sampler, 20 steps) and "
        "`noise` (ddim sampler, 1 step), and scored them" in text
    )
    lines = text.splitlines()
    pictures = [i for i, line in enumerate(lines) if line.startswith("![")]
    assert len(pictures) == 1 + 3 * 2 + 1  # loss, grids and trajectories, one retrieval panel
    for i in pictures:
        assert lines[i + 1] == "" and lines[i + 2].startswith("*") and lines[i + 2].endswith("*"), lines[i : i + 3]
    assert "*The first 16 of the 16 samples of `ddpm_20` (ddpm sampler, 20 steps), one image per tile" in text
    assert "*Denoising trajectories of `noise` (ddim sampler, 1 step): each row is one sample" in text
    assert (
        "*Similarity retrieval for `ddim_10` (ddim sampler, 10 steps): each row is one generated sample (left of "
        "the red bar, column \"sample\"), then its 5 nearest training images in the FID features, nearest first" in text
    )
    assert "*The training loss (and the validation loss, where recorded) at the end of each of the 1 epochs" in text
    page = open(os.path.join(tmp_path, "report", "report.html"), encoding="utf-8").read()
    assert "<em>Denoising trajectories of <code>noise</code>" in page


def test_the_report_says_what_the_network_trained_and_sampled_in(tmp_path):
    history = {"loss": [0.25], "val_loss": [0.3], "steps": 2, "seconds": 1.5, "steps_per_second": 1.3,
               "precision": "mixed_bfloat16", "export_precision": "float32"}
    inputs = _artifacts(tmp_path, history)
    assert (
        "Precision: trained in mixed_bfloat16 (bfloat16 arithmetic; float32 weights, optimizer state and EMA); "
        "the export computes in float32; every sampler's network computed in float32." in _report(inputs, tmp_path)
    )
    path = os.path.join(inputs["samples"], "timings.json")
    timings = json.load(open(path, encoding="utf-8"))
    timings["ddim_10_bf16"] = dict(timings["ddim_10"], precision="bfloat16")
    _write(path, timings)
    assert "the samplers' networks computed in: `ddim_10` in float32; `ddim_10_bf16` in bfloat16." in _report(
        inputs, tmp_path / "second"
    )
    # A run written before precisions were recorded says nothing of them.
    assert "Precision:" not in _report(_artifacts(tmp_path / "old"), tmp_path / "old")
