"""The pipeline's class-conditional runs: flags, the guided sampler rows, the samples' classes,
the evaluate stage's class agreement, and (slow) guidance raising it on the digits."""

import json

import numpy as np
import pytest

from pipeline import builders, config, orchestrator
from pipeline import run as run_lib
from pipeline.stages import evaluate, sample


@pytest.fixture
def captured_run(monkeypatch):
    calls = []

    def fake_run_stages(cfg, output_dir, beam_args, **kwargs):
        calls.append(cfg)
        return {}

    monkeypatch.setattr(orchestrator, "run_stages", fake_run_stages)
    return calls


def test_guidance_scale_adds_a_guided_row_per_sampler_and_reads_back_the_same(tmp_path, captured_run):
    assert run_lib.run([f"--output_dir={tmp_path}", "--class_conditional=true", "--guidance_scale=2.5"]) == 0
    cfg = captured_run[-1]
    assert cfg.class_conditional is True and cfg.label_dropout == 0.1
    assert sorted(cfg.samplers) == ["ddim_50_clipped_eps", "ddim_50_clipped_eps_guided", "dpm_solver_10", "dpm_solver_10_guided"]
    assert cfg.samplers["ddim_50_clipped_eps_guided"] == {**cfg.samplers["ddim_50_clipped_eps"], "guidance_scale": 2.5}
    again = config.RunConfig(**json.loads(json.dumps(cfg.to_dict())))  # a run's config.json read back
    assert again.samplers == cfg.samplers
    assert config.with_guided_samplers(cfg.samplers, 4.0)["ddim_50_clipped_eps_guided"]["guidance_scale"] == 4.0


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--guidance_scale=3"], "class_conditional"),
        (["--class_conditional=true", "--family=ncsn"], "noise levels"),
        (["--class_conditional=maybe"], "true or false"),
        (["--class_conditional=true", "--label_dropout=1"], "label_dropout"),
        (["--class_conditional=true", "--guidance_scale=-1"], "guidance_scale"),
    ],
)
def test_bad_class_conditional_flags_fail_naming_the_flag(tmp_path, capsys, captured_run, flags, match):
    with pytest.raises(SystemExit) as info:
        run_lib.run([f"--output_dir={tmp_path}", *flags])
    assert info.value.code == 2 and match in capsys.readouterr().err and captured_run == []


def test_a_class_conditional_model_has_a_null_class_and_needs_the_labels():
    params = dict(config.preset("tiny", class_conditional=True, label_dropout=0.2).to_dict())
    model = builders.build_model(params, (8, 8, 1), num_classes=10)
    assert (model.num_classes, model.null_label, model.label_dropout) == (10, 10, 0.2)
    assert model.network.num_classes == 11
    with pytest.raises(ValueError, match="labelled dataset"):
        builders.build_model(params, (8, 8, 1))


def test_samples_are_drawn_for_the_classes_in_turn_across_shards_and_batches():
    counts = sample.shard_counts(10, 3)
    items = [i for i in sample.work_items({"a": {"sampler": "ddim"}}, 10, 3, seed=0) if i["kind"] == "shard"]
    labels = np.concatenate([sample.sample_labels(4, {}, i["offset"], i["count"]) for i in items])
    np.testing.assert_array_equal(labels, np.arange(10) % 4)
    assert [i["count"] for i in items] == counts
    np.testing.assert_array_equal(sample.sample_labels(4, {"class_labels": 2}, 5, 3), [2, 2, 2])
    assert sample.sample_labels(None, {}, 0, 3) is None


def test_class_agreement_counts_the_samples_the_classifier_puts_in_their_class():
    probabilities = np.eye(3)[[0, 1, 2, 2]] * 0.8 + 0.2 / 3
    values = evaluate.classifier_statistics(probabilities, 3, labels=[0, 1, 1, 2])
    assert values["class_agreement"] == 0.75
    assert "class_agreement" not in evaluate.classifier_statistics(probabilities, 3)
    with pytest.raises(ValueError, match="one label per sample"):
        evaluate.classifier_statistics(probabilities, 3, labels=[0, 1])
