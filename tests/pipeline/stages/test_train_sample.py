"""The train and sample stages (and pipeline.builders) on tiny data the tests write.

The stages run on a two-convolution network (``tests/tiny_network.TinyNet``, patched in
for ``pipeline.builders.build_network``): the stage machinery — data, strategy, fit,
checkpoints, resume, NaN guard, export, Beam fan-out — is what is tested here, in
seconds; the real network presets are checked by construction.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap

import apache_beam as beam
import keras
import numpy as np
import pytest
import tensorflow as tf
from paths import REPO, TESTS
from tiny_network import TinyNet

import kdiff
from pipeline import builders, config
from pipeline.stages import sample, train
from pipeline.io import read_json
from pipeline.stages.base import StageError

HERE = os.path.dirname(os.path.abspath(__file__))  # this module's folder: the kill script imports the module
IMAGE_SIZE, CHANNELS = 8, 1
NUM_TRAIN, NUM_EVAL, BATCH = 48, 8, 8  # 6 steps per epoch
QUIET = "2"


# ----------------------------------------------------------------------------- helpers


def _png(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0], "L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_examples(directory, num_train=NUM_TRAIN, num_eval=NUM_EVAL, size=IMAGE_SIZE):
    """A tiny Examples artifact: blurry blobs as PNG-encoded tf.train.Examples, plus stats.json."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for split, count in (("train", num_train), ("eval", num_eval)):
        with tf.io.TFRecordWriter(os.path.join(directory, f"{split}-00000-of-00001.tfrecord")) as writer:
            for i in range(count):
                cy, cx = rng.uniform(2, size - 2, 2)
                image = (255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)).astype(np.uint8)[..., None]
                feature = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(image)])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    stats = {
        "source": "test-blobs", "num_train": num_train, "num_eval": num_eval, "image_size": size,
        "channels": CHANNELS, "num_classes": 2, "label_counts": [num_train // 2, num_train // 2],
        "pixel_mean": 0.2, "pixel_std": 0.3,
    }
    with open(os.path.join(directory, "stats.json"), "w") as f:
        json.dump(stats, f)
    return directory


def tiny_network(params, image_shape, loss=None):
    """Stands in for builders.build_network: a few hundred weights, traced in a second."""
    out = 2 * image_shape[2] if loss == "hybrid" else None
    return TinyNet(image_shape[0], image_shape[2], out_channels=out)


def train_params(family="ddpm", force=False, resume=False, **overrides):
    values = {"epochs": 2, "batch_size": BATCH, "checkpoint_every_steps": 2, "learning_rate": 1e-3}
    values.update(overrides)
    cfg = config.preset("tiny", family=family, **values)
    params = cfg.section(train.SPEC.parameters)
    params.update(beam_args=["--runner=DirectRunner"], data_range=list(cfg.data_range), force=force, resume=resume)
    return params


def sample_params(family="ddpm", **overrides):
    cfg = config.preset("tiny", family=family, **overrides)
    params = cfg.section(sample.SPEC.parameters)
    params.update(beam_args=["--runner=DirectRunner"], data_range=list(cfg.data_range))
    return params


def run_train(run_dir, examples, params):
    outputs = {"model": os.path.join(run_dir, "train", "model")}
    train.Executor().Do({"examples": examples}, outputs, params)
    return outputs["model"]


def run_sample(model_dir, out_dir, params):
    outputs = {"samples": os.path.join(out_dir, "samples")}
    sample.Executor().Do({"model": model_dir}, outputs, params)
    return outputs["samples"]


def leftovers(directory):
    return [name for name in os.listdir(directory) if ".tmp-" in name]


def assert_png(path):
    from PIL import Image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.verify()


@pytest.fixture(scope="session")
def examples(tmp_path_factory):
    return write_examples(str(tmp_path_factory.mktemp("ingest") / "examples"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory, examples):
    """One uninterrupted ddpm training run (2 epochs, 12 steps): its run directory."""
    run_dir = str(tmp_path_factory.mktemp("run"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builders, "build_network", tiny_network)
        run_train(run_dir, examples, train_params())
    return run_dir


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(builders, "build_network", tiny_network)


# ----------------------------------------------------------------------------- builders


def _config(family, **overrides):
    cfg = config.preset("tiny", family=family, **overrides)
    return dict(cfg.to_dict(), data_range=list(cfg.data_range))


@pytest.mark.parametrize(
    "family, network, extra, cls",
    [
        ("ddpm", "unet_small", {}, kdiff.DDPM),
        ("ncsn", "ncsn_small", {}, kdiff.NCSN),
        ("sde", "unet_small", {"sde": "ve"}, kdiff.ScoreSDE),
    ],
)
def test_build_model_families(family, network, extra, cls):
    params = _config(family, network=network, warmup_steps=10, **extra)
    model = builders.build_model(params, (IMAGE_SIZE, IMAGE_SIZE, CHANNELS))
    assert type(model) is cls
    assert model.image_shape == (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
    assert model.data_range == tuple(params["data_range"]) and model.seed == 0
    assert model.ema_decay == pytest.approx(params["ema_decay"])
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, kdiff.optim.WarmupLinearDecay)
    assert schedule.peak == pytest.approx(1e-3) and schedule.warmup_from == pytest.approx(1e-4)
    assert schedule.warmup_steps == 10
    if family == "ddpm":
        assert model.process.T == 100 and model.loss_name == "simple"
        assert model.network.base_channels == 32
    elif family == "ncsn":
        assert len(model.process) == 5 and model.process[0] == pytest.approx(1.0)
        assert model.network.num_classes == 5 and model.network.ngf == 32
    else:  # VE: σ_max at least the data's diameter bound 2·√64 = 16
        assert isinstance(model.process, kdiff.sde.VESDE) and model.process.N == 100
        assert model.process.sigma_max == pytest.approx(16.0)


@pytest.mark.slow
def test_build_network_presets():
    shape = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
    improved = builders.build_network(_config("ddpm", network="unet_improved"), shape,
                                      loss=builders.resolve_loss("ddpm", "unet_improved", None))
    assert improved.learned_variance and improved.compute_output_shape((1,) + shape)[-1] == 2
    assert builders.resolve_loss("ddpm", "unet_improved", None) == "hybrid"
    cifar = builders.build_network(_config("ddpm", network="unet_ddpm_cifar10"), shape, loss="simple")
    assert cifar.channel_mult == (1, 2, 2, 2) and cifar.attention_resolutions == (4,)
    hybrid_small = builders.build_network(_config("ddpm", loss="hybrid"), shape, loss="hybrid")
    assert hybrid_small.learned_variance
    assert hybrid_small.num_res_blocks == 1  # the tiny preset's; the field overrides the preset's 2
    two = builders.build_network(_config("ddpm", num_res_blocks=2), shape, loss="simple")
    assert two.num_res_blocks == 2 and two.count_params() > hybrid_small.count_params()
    assert isinstance(builders.build_process(_config("ddpm", schedule="cosine")), kdiff.schedules.Schedule)
    assert isinstance(builders.build_process(_config("sde", sde="subvp")), kdiff.sde.SubVPSDE)


@pytest.mark.parametrize(
    "family, overrides, message",
    [
        ("ddpm", {"network": "ncsn_small"}, "family='ddpm'"),
        ("ncsn", {"network": "unet_small"}, "one of ['ncsn_small', 'ncsn_cifar10']"),
        ("sde", {"network": "unet_improved"}, "learned variance"),
        ("ddpm", {"network": "unet_huge"}, "Expected `network` in"),
        ("ddpm", {"network": "unet_improved", "loss": "simple"}, "loss='hybrid'"),
        ("ddpm", {"loss": "dsm"}, "Expected `loss`"),
        ("ncsn", {"loss": "simple"}, "Expected `loss`"),
        ("sde", {"loss": "hybrid"}, "no `loss`"),
        ("ddpm", {"schedule": "sigmoid"}, "Expected `schedule`"),
        ("sde", {"sde": "vx"}, "Expected `sde`"),
        ("ddpm", {"base_channels": 48}, "divisible by 32"),
        ("ncsn", {"sigma_min": 2.0}, "sigma_min"),
        ("ncsn", {"num_res_blocks": 2}, "only with a U-Net"),
        ("ddpm", {"num_res_blocks": 0}, "num_res_blocks"),
    ],
)
def test_build_model_errors(family, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        builders.build_model(_config(family, **overrides), (IMAGE_SIZE, IMAGE_SIZE, CHANNELS))


# ----------------------------------------------------------------------------- train


@pytest.mark.slow
def test_train_writes_model(trained):
    model_dir = os.path.join(trained, "train", "model")
    export_config = kdiff.export.read_config(os.path.join(model_dir, "export"))
    assert export_config["family"] == "ddpm" and export_config["image_shape"] == [8, 8, 1]
    history = read_json(os.path.join(model_dir, "history.json"))
    assert len(history["loss"]) == len(history["val_loss"]) == 2
    assert all(np.isfinite(history["loss"])) and all(np.isfinite(history["val_loss"]))
    assert history["steps"] == 2 * NUM_TRAIN // BATCH
    assert history["seconds"] > 0 and history["steps_per_second"] > 0
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert isinstance(model, kdiff.DDPM) and int(model.optimizer.iterations) == history["steps"]
    for split in ("train", "validation"):
        events = os.listdir(os.path.join(model_dir, "logs", split))
        assert events and events[0].startswith("events.out.tfevents")
    tags = set()
    for event_file in os.listdir(os.path.join(model_dir, "logs", "train")):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(model_dir, "logs", "train", event_file)):
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_loss", "epoch_learning_rate", "epoch_steps_per_second"} <= tags
    # complete: the checkpoints are gone, no temporary directory is left
    assert not os.path.exists(os.path.join(trained, "train", "checkpoints"))
    assert leftovers(os.path.join(trained, "train")) == []


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ncsn", "sde"])
def test_other_families_train_and_sample(tmp_path, examples, tiny, family):
    model_dir = run_train(str(tmp_path), examples, train_params(family, epochs=1))
    assert kdiff.export.read_config(os.path.join(model_dir, "export"))["family"] == family
    history = read_json(os.path.join(model_dir, "history.json"))
    assert history["steps"] == NUM_TRAIN // BATCH and np.isfinite(history["loss"][0])
    samples_dir = run_sample(model_dir, str(tmp_path / "sample"), sample_params(family, num_samples=4))
    timings = read_json(os.path.join(samples_dir, "timings.json"))
    assert set(timings) == set(config.TINY_SAMPLERS[family])
    for name in timings:
        images = np.load(os.path.join(samples_dir, name, "samples.npz"))["images"]
        assert images.shape == (4, 8, 8, 1) and images.dtype == np.uint8


def test_checkpoints_of_another_model_are_discarded(tmp_path):
    directory = str(tmp_path / "checkpoints")
    os.makedirs(directory)
    open(os.path.join(directory, "ckpt-000000004.weights.h5"), "wb").close()
    with open(os.path.join(directory, "state.json"), "w") as f:
        json.dump({"key": "old", "step": 4, "epoch": 0, "batch": 4, "weights": "ckpt-000000004.weights.h5"}, f)
    assert train.Checkpoints(directory, "old").read()["step"] == 4
    assert train.Checkpoints(directory, "new").read() is None
    assert os.listdir(directory) == []


KILL_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    sys.path[:0] = [{here!r}, {tests!r}, {repo!r}]
    import keras
    from pipeline import builders
    from pipeline.stages import train
    import test_train_sample as t

    builders.build_network = t.tiny_network
    make_callbacks = train.make_callbacks

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) >= {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)  # as kill -9: no cleanup at all

    train.make_callbacks = lambda *a, **k: make_callbacks(*a, **k) + [Kill()]
    t.run_train({run_dir!r}, {examples!r}, json.loads({params!r}))
    """
)


@pytest.mark.slow
def test_resume_after_kill(tmp_path, examples, trained, tiny, capsys):
    """kill -9 after step 9 (checkpoints every 2 steps, epoch 2 batch 3): the rerun restores
    step 8 and ends exactly where the uninterrupted run ended."""
    run_dir = str(tmp_path / "run")
    params = train_params()
    script = tmp_path / "killed_run.py"
    script.write_text(KILL_SCRIPT.format(
        here=HERE, tests=TESTS, repo=REPO, kill_at=9, run_dir=run_dir, examples=examples, params=json.dumps(params),
    ))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=QUIET, PYTHONPATH=REPO)
    killed = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "epoch 1/2" in killed.stdout
    state = read_json(os.path.join(run_dir, "train", "checkpoints", "state.json"))
    assert (state["step"], state["epoch"], state["batch"]) == (8, 1, 2)
    assert not os.path.exists(os.path.join(run_dir, "train", "model"))

    run_train(run_dir, examples, params)  # started again
    assert "resuming from the checkpoint at step 8 (epoch 2, batch 2)" in capsys.readouterr().out
    resumed = read_json(os.path.join(run_dir, "train", "model", "history.json"))
    reference = read_json(os.path.join(trained, "train", "model", "history.json"))
    assert resumed["steps"] == reference["steps"] == 12
    np.testing.assert_allclose(resumed["loss"], reference["loss"], rtol=1e-5)
    np.testing.assert_allclose(resumed["val_loss"], reference["val_loss"], rtol=1e-5)
    a = keras.saving.load_model(os.path.join(run_dir, "train", "model", "model.keras"))
    b = keras.saving.load_model(os.path.join(trained, "train", "model", "model.keras"))
    for x, y in zip(a.ema_network.get_weights() + a.network.get_weights(),
                    b.ema_network.get_weights() + b.network.get_weights()):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert not os.path.exists(os.path.join(run_dir, "train", "checkpoints"))


class Crash(Exception):
    pass


@pytest.mark.slow
def test_resume_at_an_epoch_boundary(tmp_path, examples, trained, tiny, monkeypatch):
    """The checkpoint due at step 6, the first epoch's last batch, is written at the epoch's
    end (pointing at epoch 2, batch 0); a crash at step 7 resumes from it."""
    make_callbacks = train.make_callbacks

    class CrashAt7(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if train._step(self.model) >= 7:
                raise Crash()

    monkeypatch.setattr(train, "make_callbacks", lambda *a, **k: make_callbacks(*a, **k) + [CrashAt7()])
    with pytest.raises(Crash):
        run_train(str(tmp_path), examples, train_params())
    state = read_json(os.path.join(tmp_path, "train", "checkpoints", "state.json"))
    assert (state["step"], state["epoch"], state["batch"], len(state["history"]["loss"])) == (6, 1, 0, 1)
    monkeypatch.setattr(train, "make_callbacks", make_callbacks)
    run_train(str(tmp_path), examples, train_params())
    resumed = read_json(os.path.join(tmp_path, "train", "model", "history.json"))
    reference = read_json(os.path.join(trained, "train", "model", "history.json"))
    assert resumed["steps"] == 12
    np.testing.assert_allclose(resumed["val_loss"], reference["val_loss"], rtol=1e-5)


@pytest.mark.parametrize(
    "saved, diverged, flags, resumes, says",
    [
        ("same", None, {}, True, None),  # a crash's rerun
        (None, None, {}, True, None),  # a checkpoint from before recipes were recorded
        ("other", None, {}, False, "was written with learning_rate=0.002"),
        ("other", None, {"resume": True}, True, "--resume: continuing from"),
        ("same", None, {"force": True}, False, "--force: training afresh"),
        ("same", None, {"force": True, "resume": True}, True, "--resume: continuing from"),
        ("same", "same", {}, True, "expect the same NaN"),
        ("same", "other", {}, False, "preceded a divergence (NaN at step 9 with learning_rate=0.002"),
        ("other", "other", {"resume": True}, True, "preceded a divergence"),
    ],
)
def test_when_a_checkpoint_is_resumed(saved, diverged, flags, resumes, says, capsys):
    """A checkpoint is resumed with the recipe it was written with; --force or another
    recipe trains afresh unless --resume asks to continue from it."""
    recipe = {"learning_rate": 1e-3, "warmup_steps": 0, "precision": "float32"}
    other = dict(recipe, learning_rate=2e-3)
    recipes = {"same": recipe, "other": other, None: None}
    restored = {"step": 6}
    if saved is not None:
        restored["recipe"] = recipes[saved]
    if diverged is not None:
        restored["diverged"] = {"step": 9, "recipe": recipes[diverged]}
    assert train._should_resume(restored, recipe, flags, "/run/train/checkpoints") is resumes
    out = capsys.readouterr().out
    if says is None:
        assert out == ""
    else:
        assert says in out and "the checkpoint at step 6 in /run/train/checkpoints" in out


@pytest.mark.slow
def test_force_trains_afresh_and_resume_continues(tmp_path, examples, trained, tiny, monkeypatch, capsys):
    """After a crash at step 7 (checkpoint at 6): --force discards the checkpoint, --force
    --resume continues from it and takes the uninterrupted run's steps."""
    make_callbacks = train.make_callbacks

    class CrashAt7(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if train._step(self.model) >= 7:
                raise Crash()

    reference = read_json(os.path.join(trained, "train", "model", "history.json"))
    for flags, resumed in (({"force": True}, False), ({"force": True, "resume": True}, True)):
        run_dir = str(tmp_path / f"resume-{resumed}")
        monkeypatch.setattr(train, "make_callbacks", lambda *a, **k: make_callbacks(*a, **k) + [CrashAt7()])
        with pytest.raises(Crash):
            run_train(run_dir, examples, train_params())
        monkeypatch.setattr(train, "make_callbacks", make_callbacks)
        capsys.readouterr()
        run_train(run_dir, examples, train_params(**flags))
        out = capsys.readouterr().out
        assert ("resuming from the checkpoint at step 6" in out) is resumed
        assert ("--force: training afresh" in out) is not resumed
        history = read_json(os.path.join(run_dir, "train", "model", "history.json"))
        assert history["steps"] == 12
        # Either way the same seeded steps: resumed or from scratch, the uninterrupted run's.
        np.testing.assert_allclose(history["val_loss"], reference["val_loss"], rtol=1e-5)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_checkpoint(tmp_path, examples, tiny, monkeypatch):
    run_dir = str(tmp_path)
    loss = kdiff.DDPM._loss

    def diverging(self, network_fn, x, seed):  # NaN from the 6th step on
        value = loss(self, network_fn, x, seed)
        return tf.where(self.optimizer.iterations >= 5, tf.constant(float("nan")), value)

    monkeypatch.setattr(kdiff.DDPM, "_loss", diverging)
    checkpoints = os.path.join(run_dir, "train", "checkpoints")
    with pytest.raises(StageError) as error:
        run_train(run_dir, examples, train_params())
    message = str(error.value)
    assert "the loss became NaN at step 6" in message
    assert f"last good checkpoint (step 4) is kept at {checkpoints}" in message
    assert "lower --learning_rate" in message
    assert "the rerun trains from scratch" in message
    state = read_json(os.path.join(checkpoints, "state.json"))
    assert state["step"] == 4
    recipe = {"learning_rate": 1e-3, "warmup_steps": 0, "precision": kdiff.distribute.default_precision()}  # auto's
    assert state["diverged"] == {"step": 6, "recipe": recipe}
    assert not os.path.exists(os.path.join(run_dir, "train", "model"))
    assert leftovers(os.path.join(run_dir, "train")) == []

    monkeypatch.setattr(kdiff.DDPM, "_loss", loss)  # as the message says: lower the rate, rerun
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_train(run_dir, examples, train_params(learning_rate=5e-4))
    assert "preceded a divergence (NaN at step 6 with learning_rate=0.001" in out.getvalue()
    assert "training starts afresh" in out.getvalue()
    history = read_json(os.path.join(run_dir, "train", "model", "history.json"))
    assert history["steps"] == 12 and all(np.isfinite(history["loss"]))


@pytest.mark.slow
def test_resume_continues_a_diverged_run_from_its_last_good_checkpoint(tmp_path, examples, tiny, monkeypatch, capsys):
    run_dir = str(tmp_path)
    loss = kdiff.DDPM._loss

    def diverging(self, network_fn, x, seed):  # NaN at the 6th step only
        value = loss(self, network_fn, x, seed)
        return tf.where(self.optimizer.iterations == 5, tf.constant(float("nan")), value)

    monkeypatch.setattr(kdiff.DDPM, "_loss", diverging)
    with pytest.raises(StageError, match="with --resume as well it continues from step 4 with them"):
        run_train(run_dir, examples, train_params())
    monkeypatch.setattr(kdiff.DDPM, "_loss", loss)
    capsys.readouterr()
    run_train(run_dir, examples, train_params(learning_rate=5e-4, resume=True))
    out = capsys.readouterr().out
    assert "--resume: continuing from the checkpoint at step 4" in out and "preceded a divergence" in out
    assert "resuming from the checkpoint at step 4 (epoch 1, batch 4)" in out
    history = read_json(os.path.join(run_dir, "train", "model", "history.json"))
    assert history["steps"] == 12 and all(np.isfinite(history["loss"]))


@pytest.mark.slow
def test_a_loss_spike_is_not_checkpointed(tmp_path, examples, tiny, monkeypatch):
    """Weights whose loss has exploded are a divergence in progress: the last checkpoint kept
    is the one before the spike, so a rerun does not resume blown-up weights."""
    loss = kdiff.DDPM._loss

    def exploding(self, network_fn, x, seed):  # 10⁶× from the 3rd step, NaN from the 6th
        value = loss(self, network_fn, x, seed)
        value = tf.where(self.optimizer.iterations >= 2, value * 1e6, value)
        return tf.where(self.optimizer.iterations >= 5, tf.constant(float("nan")), value)

    monkeypatch.setattr(kdiff.DDPM, "_loss", exploding)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(StageError, match=r"last good checkpoint \(step 2\)"):
        run_train(str(tmp_path), examples, train_params())
    assert "not checkpointing step 4" in out.getvalue() and "the sign of a divergence" in out.getvalue()
    assert read_json(os.path.join(str(tmp_path), "train", "checkpoints", "state.json"))["step"] == 2
    assert train.exploding(float("inf"), 1.0) and train.exploding(101.0, 1.0) and not train.exploding(99.0, 1.0)
    assert not train.exploding(None, 1.0) and not train.exploding(5.0, None)


def test_train_bad_examples(tmp_path, tiny):
    with pytest.raises(StageError, match="no stats.json"):
        run_train(str(tmp_path), str(tmp_path / "missing"), train_params())


# ----------------------------------------------------------------------------- sample


@pytest.mark.slow
def test_sample_writes_samples(tmp_path, trained):
    model_dir = os.path.join(trained, "train", "model")
    # ddpm_20 draws its own count (a sampler config's num_samples), the others the run's
    samplers = dict(config.TINY_SAMPLERS["ddpm"])
    samplers["ddpm_20"] = dict(samplers["ddpm_20"], num_samples=3)
    params = sample_params(num_samples=7, sample_shards=3, sample_batch_size=2, samplers=samplers)  # shards of 3, 2, 2
    samples_dir = run_sample(model_dir, str(tmp_path / "a"), params)
    timings = read_json(os.path.join(samples_dir, "timings.json"))
    assert set(timings) == {"ddim_10", "ddpm_20"}
    for name, kwargs in samplers.items():
        count = 3 if name == "ddpm_20" else 7
        images = np.load(os.path.join(samples_dir, name, "samples.npz"))["images"]
        assert images.shape == (count, 8, 8, 1) and images.dtype == np.uint8
        assert images.std() > 0
        for picture in ("grid.png", "trajectory.png"):
            assert_png(os.path.join(samples_dir, name, picture))
        timing = timings[name]
        assert timing["num_samples"] == count and timing["shards"] == 3
        assert timing["sampler"] == kwargs["sampler"] and timing["steps"] == kwargs["steps"]
        assert timing["seconds"] > 0 and timing["images_per_second"] > 0
    from PIL import Image

    with Image.open(os.path.join(samples_dir, "ddim_10", "trajectory.png")) as picture:
        # 7 rows (one per sample, at most 8) of 10 columns of 8×8 images, padding 2, scaled ×8
        assert picture.size == ((10 * 10 + 2) * 8, (7 * 10 + 2) * 8)
    assert sorted(os.listdir(samples_dir)) == ["ddim_10", "ddpm_20", "timings.json"]
    assert leftovers(os.path.dirname(samples_dir)) == []


@pytest.mark.slow
def test_a_bfloat16_sampler_samples_the_trained_keras_model_in_bfloat16(tmp_path, trained):
    """The export computes in float32: a sampler config with precision "bfloat16" samples
    model.keras with the network in bfloat16 — the same images as kdiff.sample of that
    model in bfloat16 with the shard's seed, close to float32's but not equal."""
    model_dir = os.path.join(trained, "train", "model")
    kwargs = dict(config.TINY_SAMPLERS["ddpm"]["ddim_10"], precision="bfloat16")
    params = sample_params(num_samples=4, sample_shards=1, sample_batch_size=4, samplers={"ddim_bf16": kwargs})
    samples_dir = run_sample(model_dir, str(tmp_path / "a"), params)
    images = np.load(os.path.join(samples_dir, "ddim_bf16", "samples.npz"))["images"]
    model = sample.load_keras_model(os.path.join(model_dir, "export"))
    seed = sample.derive_seed(sample.derive_seed(params["seed"], "ddim_bf16", 0), "ddim_bf16", 0)
    options = {k: v for k, v in kwargs.items() if k != "precision"}
    bf16 = kdiff.sample(model, 4, seed=seed, batch_size=4, precision="bfloat16", **options)
    f32 = kdiff.sample(model, 4, seed=seed, batch_size=4, **options)
    np.testing.assert_array_equal(images, bf16)
    difference = np.abs(images.astype(int) - f32.astype(int))
    assert 0 < difference.mean() < 8, difference.mean()
    with pytest.raises(sample.StageError, match="model.keras"):
        sample.load_keras_model(str(tmp_path / "elsewhere" / "export"))


@pytest.mark.slow
def test_sample_is_reproducible(tmp_path, trained):
    model_dir = os.path.join(trained, "train", "model")
    samplers = {"ddim_10": config.TINY_SAMPLERS["ddpm"]["ddim_10"]}

    def images(out, seed):
        params = sample_params(num_samples=6, sample_shards=2, samplers=samplers, seed=seed)
        return np.load(os.path.join(run_sample(model_dir, str(out), params), "ddim_10", "samples.npz"))["images"]

    first, again, other = images(tmp_path / "a", 0), images(tmp_path / "b", 0), images(tmp_path / "c", 1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.slow
def test_sample_pipeline_in_test_pipeline(tmp_path, trained):
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    export = os.path.join(trained, "train", "model", "export")
    samplers = {"ddim_10": config.TINY_SAMPLERS["ddpm"]["ddim_10"]}
    items = sample.work_items(samplers, num_samples=5, shards=2, seed=0, trajectory_samples=2)
    assert [(i["kind"], i["count"]) for i in items] == [("shard", 3), ("shard", 2), ("trajectory", 2)]
    own = sample.work_items({"ddim_10": dict(samplers["ddim_10"], num_samples=1)}, 5, 2, 0, trajectory_samples=2)
    assert [(i["kind"], i["count"]) for i in own] == [("shard", 1), ("trajectory", 1)]
    assert all("num_samples" not in i["kwargs"] for i in own)  # the stage's key, not kdiff.sample's
    work, out = str(tmp_path / "work"), str(tmp_path / "out")
    with TestPipeline() as root:
        shards = (
            root
            | "Create" >> beam.Create(items[:2])
            | "Sample" >> beam.ParDo(sample.SampleShards(export, work, 2))
        )
        assert_that(
            shards | "Counts" >> beam.Map(lambda kv: (kv[0], kv[1]["shard"], kv[1]["count"])),
            equal_to([("ddim_10", 0, 3), ("ddim_10", 1, 2)]),
        )
    assert np.load(os.path.join(work, "ddim_10", "shard-00000.npz"))["images"].shape == (3, 8, 8, 1)
    with TestPipeline() as root:
        names = sample.build_pipeline(root, items, export, work, out, samplers, 5, 2)
        assert_that(names, equal_to(["ddim_10"]))
    assembled = np.load(os.path.join(out, "ddim_10", "samples.npz"))["images"]
    first = np.load(os.path.join(work, "ddim_10", "shard-00000.npz"))["images"]
    assert assembled.shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(assembled[:3], first)  # shards in order
    assert os.path.exists(os.path.join(out, "ddim_10", "trajectory.png"))


@pytest.mark.slow
def test_sample_bad_input(tmp_path, trained):
    model_dir = os.path.join(trained, "train", "model")
    with pytest.raises(StageError, match="no usable kdiff export"):
        run_sample(str(tmp_path / "nothing"), str(tmp_path / "x"), sample_params())
    bad = {"langevin": {"sampler": "annealed_langevin", "steps": 3}}
    with pytest.raises(StageError, match=r"sampler .langevin. \(annealed_langevin\): Expected a sampler for a schedule"):
        run_sample(model_dir, str(tmp_path / "y"), sample_params(samplers=bad))
    with pytest.raises(StageError, match="not usable as a directory name"):
        run_sample(model_dir, str(tmp_path / "z"), sample_params(samplers={"../up": {"sampler": "ddim"}}))
    with pytest.raises(StageError, match="Expected `sampler` to be one of"):
        run_sample(model_dir, str(tmp_path / "w"), sample_params(samplers={"x": {"sampler": "no_such_sampler"}}))
    with pytest.raises(StageError, match=r"unknown option\(s\) \['bogus'\]"):
        run_sample(model_dir, str(tmp_path / "v"), sample_params(samplers={"x": {"sampler": "ddim", "bogus": 1}}))
    for count in (0, "5", True):
        with pytest.raises(StageError, match=rf"sampler 'x' has num_samples={count!r}; expected a positive int"):
            run_sample(model_dir, str(tmp_path / "t"), sample_params(samplers={"x": {"sampler": "ddim", "num_samples": count}}))
    with pytest.raises(StageError, match=r"precision='float16'; expected one of \['float32', 'bfloat16'\]"):
        run_sample(model_dir, str(tmp_path / "u"), sample_params(samplers={"x": {"sampler": "ddim", "precision": "float16"}}))
    # an error inside the Beam DoFn: named by sampler and shard, without Beam's wrapping
    weird = {"weird": {"sampler": "ddpm", "steps": 5, "variance": "weird"}}
    with pytest.raises(StageError, match=r"sampling failed: ValueError: sampler 'weird' \(shard 1/2\): Expected `variance`"):
        run_sample(model_dir, str(tmp_path / "u"), sample_params(samplers=weird))
    assert os.listdir(tmp_path / "u") == []  # nothing half-written
    assert not os.path.exists(tmp_path / "y" / "samples")


def test_sample_check_names_the_sampler_short_of_samples(tmp_path):
    """The end-of-stage check: every sampler's files, with the samples asked for (one label
    each), or a StageError naming the sampler and the file."""
    directory = tmp_path / "a"
    directory.mkdir()
    for picture in ("grid.png", "trajectory.png"):
        (directory / picture).write_bytes(b"png")
    images = np.zeros((4, 8, 8, 1), np.uint8)
    np.savez(directory / "samples.npz", images=images, labels=np.arange(4, dtype=np.int32))
    samplers = {"a": {"sampler": "ddim", "steps": 3}}
    sample.check_written(str(tmp_path), samplers, 4, trajectory_samples=2)
    with pytest.raises(StageError, match=r"samples.npz holds 4 samples; sampler 'a' was asked for 5"):
        sample.check_written(str(tmp_path), samplers, 5, trajectory_samples=2)
    sample.check_written(str(tmp_path), {"a": dict(samplers["a"], num_samples=4)}, 5, trajectory_samples=2)
    np.savez(directory / "samples.npz", images=images, labels=np.arange(3, dtype=np.int32))
    with pytest.raises(StageError, match="holds arrays of different lengths"):
        sample.check_written(str(tmp_path), samplers, 4, trajectory_samples=2)
    np.savez(directory / "samples.npz", images=images)  # an unconditional model's: no labels
    sample.check_written(str(tmp_path), samplers, 4, trajectory_samples=0)
    (directory / "trajectory.png").unlink()
    sample.check_written(str(tmp_path), samplers, 4, trajectory_samples=0)  # none drawn: none expected
    with pytest.raises(StageError, match=r"sampler 'a' wrote no trajectory.png in .*a; the runner did not run"):
        sample.check_written(str(tmp_path), samplers, 4, trajectory_samples=2)
