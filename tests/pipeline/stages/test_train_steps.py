"""The training length: ``train_steps`` or ``epochs`` (pipeline/config.py), what the train stage runs.

The units (the derived epochs, the layering of presets, files and flags, the errors) take
milliseconds; the train-stage runs use the two-convolution ``TinyNet`` of
``test_train_sample`` and are marked slow.
"""

import json
import os
import re

import keras
import numpy as np
import pytest

from pipeline import builders, config, orchestrator
from pipeline import run as run_lib
from pipeline.stages import train
from pipeline.io import read_json
from pipeline.stages.base import StageError

import test_train_sample as stage_tests

BATCH = stage_tests.BATCH  # 48 training images in batches of 8: 6 batches an epoch


# ----------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    "num_train, batch, train_steps, epochs, expected",
    [
        # train_steps: exactly that many steps; the epochs follow, the last one partial
        (300, 64, 100, None, (100, 20, 5, "train_steps")),
        (300, 64, 103, None, (103, 21, 5, "train_steps")),
        (1617, 64, 3000, None, (3000, 116, 26, "train_steps")),
        # epochs: every batch of every epoch (a partial last batch counts as a step)
        (300, 64, None, 3, (15, 3, 5, "epochs")),
        (1617, 64, None, 50, (1300, 50, 26, "epochs")),
        # neither: the default step count, whatever the dataset's size
        (300, 64, None, None, (config.DEFAULT_TRAIN_STEPS, -(-config.DEFAULT_TRAIN_STEPS // 5), 5, "default")),
        (1617, 64, None, None, (config.DEFAULT_TRAIN_STEPS, -(-config.DEFAULT_TRAIN_STEPS // 26), 26, "default")),
        (10, 64, 7, None, (7, 7, 1, "train_steps")),
    ],
)
def test_training_length_derives_epochs_from_the_dataset(num_train, batch, train_steps, epochs, expected):
    length = config.training_length(num_train, batch, train_steps, epochs)
    assert (length.steps, length.epochs, length.batches_per_epoch, length.source) == expected
    # the epochs' batches add up to the steps, and only the last epoch may be partial
    batches = [length.batches_in(e) for e in range(length.epochs)]
    assert sum(batches) == length.steps
    assert all(b == length.batches_per_epoch for b in batches[:-1]) and 1 <= batches[-1] <= length.batches_per_epoch
    assert length.whole_epochs == sum(b == length.batches_per_epoch for b in batches)


def test_300_images_train_as_many_steps_as_the_digits_by_default():
    default = config.RunConfig()
    assert default.train_steps is None and default.epochs is None
    small = config.training_length(300, default.batch_size, default.train_steps, default.epochs)
    digits = config.training_length(1617, default.batch_size, default.train_steps, default.epochs)
    assert small.steps == digits.steps == config.DEFAULT_TRAIN_STEPS
    assert small.epochs > digits.epochs


def test_train_steps_and_epochs_together_fail_naming_both():
    with pytest.raises(ValueError, match=r"at most one of `train_steps`.*Received: train_steps=10, epochs=2"):
        config.RunConfig(train_steps=10, epochs=2)
    with pytest.raises(ValueError, match="at most one of"):
        config.training_length(100, 10, train_steps=10, epochs=2)
    with pytest.raises(ValueError, match=r"Expected `train_steps` >= 1. Received: train_steps=0"):
        config.RunConfig(train_steps=0)
    with pytest.raises(ValueError, match="num_train"):
        config.training_length(0, 10)


def test_a_layer_s_training_length_replaces_the_one_below():
    tiny = config.preset("tiny")
    assert (tiny.epochs, tiny.train_steps) == (1, None)
    assert (config.preset("tiny", train_steps=5).epochs, config.preset("tiny", train_steps=5).train_steps) == (None, 5)
    assert config.preset("tiny", epochs=3).epochs == 3
    assert config.layered({"epochs": 3, "limit": 5}, {"train_steps": 7}) == {"limit": 5, "train_steps": 7}
    assert config.layered({"train_steps": 7}, {"epochs": None}) == {"train_steps": 7, "epochs": None}
    with pytest.raises(ValueError, match="at most one of"):
        config.preset("tiny", train_steps=5, epochs=2)  # both in one layer


@pytest.fixture
def captured_run(monkeypatch):
    calls = []
    monkeypatch.setattr(orchestrator, "run_stages", lambda config, *a, **k: calls.append(config) or {})
    monkeypatch.setattr(orchestrator, "check_samplers", lambda config: None)
    return calls


def test_flags_train_steps_over_a_file_s_epochs(tmp_path, captured_run, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"epochs": 3, "limit": 50}))
    assert run_lib.run([f"--output_dir={tmp_path}", "--preset=tiny", f"--config={path}", "--train_steps=7"]) == 0
    assert (captured_run[-1].train_steps, captured_run[-1].epochs, captured_run[-1].limit) == (7, None, 50)
    with pytest.raises(SystemExit) as info:
        run_lib.run([f"--output_dir={tmp_path}", "--train_steps=7", "--epochs=2"])
    assert info.value.code == 2
    assert "Received: train_steps=7, epochs=2" in capsys.readouterr().err


def test_describe_length_says_steps_epochs_and_why():
    text = train.describe_length(config.training_length(300, 64), 300, 64)
    assert text.startswith(f"training {config.DEFAULT_TRAIN_STEPS:,} steps: ")
    assert "epochs of 5 batches (300 images, batch 64); the default length" in text
    assert "2 epochs of 5 batches" in train.describe_length(config.training_length(300, 64, epochs=2), 300, 64)
    assert "2.6 epochs" in train.describe_length(config.training_length(300, 64, train_steps=13), 300, 64)
    assert [train._duration(s) for s in (40, 330, 9000)] == ["40 s", "5.5 min", "2.5 h"]


def test_the_builders_decay_over_a_length_known_without_the_data():
    decay = {"lr_decay": True, "warmup_steps": 200}
    assert builders.make_optimizer(decay)._learning_rate.decay_steps == config.DEFAULT_TRAIN_STEPS
    assert builders.make_optimizer({**decay, "train_steps": 500})._learning_rate.decay_steps == 500
    assert builders.make_optimizer({**decay, "epochs": 3, "decay_steps": 420})._learning_rate.decay_steps == 420
    with pytest.raises(ValueError, match=r"Expected `decay_steps`.*Received: decay_steps=None, epochs=3"):
        builders.make_optimizer({**decay, "epochs": 3})  # an epoch's steps depend on the data
    assert builders.make_optimizer({"lr_decay": False, "epochs": 3})._learning_rate.decay_steps is None


def test_the_train_stage_reads_train_steps_and_keeps_it_out_of_the_checkpoint_key():
    assert "train_steps" in train.SPEC.parameters
    assert "train_steps" not in train.CHECKPOINT_KEY_PARAMETERS and "epochs" not in train.CHECKPOINT_KEY_PARAMETERS


# ----------------------------------------------------------------------------- the train stage


def _params(train_steps, **overrides):
    """The train stage's params: the tiny preset at ``train_steps``, batch 8, checkpoints every 2 steps."""
    values = {"batch_size": BATCH, "checkpoint_every_steps": 2, "learning_rate": 1e-3, **overrides}
    cfg = config.preset("tiny", train_steps=train_steps, **values)
    params = cfg.section(train.SPEC.parameters)
    params.update(beam_args=["--runner=DirectRunner"], data_range=list(cfg.data_range), force=False, resume=False)
    return params


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return stage_tests.write_examples(str(tmp_path_factory.mktemp("ingest") / "examples"))


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(builders, "build_network", stage_tests.tiny_network)


@pytest.mark.slow
def test_train_steps_runs_exactly_that_many_steps_and_resumes_in_a_partial_epoch(tmp_path, examples, tiny,
                                                                                  monkeypatch, capsys):
    """train_steps=29 on 6 batches an epoch: 5 epochs, the last of 5 batches; the optimizer
    counts 29 steps. A crash at step 27 (checkpoint at 26) resumes into the partial last
    epoch and ends with the uninterrupted run's weights."""
    params = _params(train_steps=29, lr_decay=True)
    assert params["epochs"] is None  # the tiny preset's epochs gave way
    reference_dir = str(tmp_path / "reference")
    stage_tests.run_train(reference_dir, examples, params)
    out = capsys.readouterr().out
    assert "train: training 29 steps: 4.8 epochs of 6 batches (48 images, batch 8); --train_steps" in out
    # the time left, from the second epoch on (the first one's end traces the validation)
    assert re.search(r"train: epoch 1/5 - loss \S+ - val_loss \S+ - \S+ steps/s - step 6 - \S+ s\n", out)
    assert re.search(r"train: epoch 2/5 - .* - step 12 - \S+ s - ≈ \d+ s left\n", out)
    assert "epoch 5/5" in out
    model_dir = os.path.join(reference_dir, "train", "model")
    history = read_json(os.path.join(model_dir, "history.json"))
    assert history["steps"] == 29 and history["epochs"] == 5 and len(history["loss"]) == 5
    reference = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert int(reference.optimizer.iterations) == 29
    # lr_decay ends at the last of the 29 steps
    assert float(keras.ops.convert_to_numpy(reference.optimizer.learning_rate)) == pytest.approx(0.0, abs=1e-12)

    make_callbacks = train.make_callbacks

    class CrashAt27(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if train._step(self.model) >= 27:
                raise stage_tests.Crash()

    run_dir = str(tmp_path / "crashed")
    monkeypatch.setattr(train, "make_callbacks", lambda *a, **k: make_callbacks(*a, **k) + [CrashAt27()])
    with pytest.raises(stage_tests.Crash):
        stage_tests.run_train(run_dir, examples, params)
    state = read_json(os.path.join(run_dir, "train", "checkpoints", "state.json"))
    assert (state["step"], state["epoch"], state["batch"]) == (26, 4, 2)
    monkeypatch.setattr(train, "make_callbacks", make_callbacks)
    capsys.readouterr()
    stage_tests.run_train(run_dir, examples, params)
    assert "resuming from the checkpoint at step 26 (epoch 5, batch 2)" in capsys.readouterr().out
    resumed = keras.saving.load_model(os.path.join(run_dir, "train", "model", "model.keras"))
    assert int(resumed.optimizer.iterations) == 29
    for x, y in zip(resumed.ema_network.get_weights() + resumed.network.get_weights(),
                    reference.ema_network.get_weights() + reference.network.get_weights()):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_console_says_the_time_left_20_steps_in_and_an_epoch_line_a_tenth(tmp_path, examples, tiny, capsys):
    """264 steps of 24 batches an epoch (batch 2): 11 epochs, a line every 2nd (and the first and last);
    the first time left 20 steps past the first step (which traces the train step)."""
    stage_tests.run_train(str(tmp_path), examples, _params(train_steps=264, batch_size=2))
    out = capsys.readouterr().out
    assert "train: training 264 steps: 11 epochs of 24 batches (48 images, batch 2); --train_steps" in out
    assert re.findall(r"train: step (\d+)/264 - \S+ steps/s - ≈ \S+ s left\n", out) == ["21"]
    assert re.findall(r"train: epoch (\d+)/11 ", out) == ["1", "2", "4", "6", "8", "10", "11"]
    assert "left" not in out.split("epoch 11/11")[1].split("\n")[0]  # nothing left after the last


@pytest.mark.slow
def test_a_checkpoint_past_a_shorter_length_is_exported_as_it_is(tmp_path, examples, tiny, monkeypatch, capsys):
    make_callbacks = train.make_callbacks

    class CrashAt9(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if train._step(self.model) >= 9:
                raise stage_tests.Crash()

    monkeypatch.setattr(train, "make_callbacks", lambda *a, **k: make_callbacks(*a, **k) + [CrashAt9()])
    with pytest.raises(stage_tests.Crash):
        stage_tests.run_train(str(tmp_path), examples, _params(train_steps=12))
    monkeypatch.setattr(train, "make_callbacks", make_callbacks)
    capsys.readouterr()
    stage_tests.run_train(str(tmp_path), examples, _params(train_steps=5))  # the rerun asks for fewer
    assert "the checkpoint already holds 8 steps, the 5 asked for; exporting it" in capsys.readouterr().out
    history = read_json(os.path.join(tmp_path, "train", "model", "history.json"))
    assert history["steps"] == 8


def test_stats_without_num_train_fail_clearly(tmp_path, examples, tiny):
    broken = tmp_path / "examples"
    broken.mkdir()
    stats = read_json(os.path.join(examples, "stats.json"))
    stats.pop("num_train")
    (broken / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(StageError, match="lacks num_train"):
        stage_tests.run_train(str(tmp_path / "run"), str(broken), _params(train_steps=3))


def test_lr_decay_over_a_run_no_longer_than_its_warm_up_fails_naming_the_flags(tmp_path, examples, tiny):
    with pytest.raises(StageError, match=r"no more than --warmup_steps=10.*Received: train_steps=10, epochs=None"):
        stage_tests.run_train(str(tmp_path), examples, _params(train_steps=10, warmup_steps=10, lr_decay=True))
