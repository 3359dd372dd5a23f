"""The diffusion models (DDPM, NCSN, ScoreSDE) as Keras models: train, EMA, save / load, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tiny_network import TinyNet

import kdiff
from kdiff import optim, schedules
from kdiff import sde as sde_lib
from kdiff.diffusion import DDPM, NCSN, ScoreSDE


def _digits(n=128, data_range=(-1.0, 1.0)):
    """Real 8×8 digits from scikit-learn, scaled to ``data_range``."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:n, :, :, None].astype("float32") / 16.0
    low, high = data_range
    return images * (high - low) + low


FAMILIES = {
    "ddpm_simple": lambda: DDPM(TinyNet(), schedules.linear(T=100)),
    "ddpm_hybrid": lambda: DDPM(TinyNet(out_channels=2), schedules.cosine(T=100), loss="hybrid"),
    "ncsn_dsm": lambda: NCSN(TinyNet(), schedules.geometric_sigmas(1.0, 0.01, 10)),
    "ncsn_ssm": lambda: NCSN(TinyNet(), schedules.geometric_sigmas(1.0, 0.01, 10), loss="ssm"),
    "sde_vp": lambda: ScoreSDE(TinyNet(), sde_lib.VPSDE(N=100)),
    "sde_ve": lambda: ScoreSDE(TinyNet(), sde_lib.VESDE(sigma_max=5.0, N=100)),
}


def _build(name, **compile_kwargs):
    keras.utils.set_random_seed(0)
    model = FAMILIES[name]()
    model.compile(optimizer=optim.adam(3e-3, warmup_steps=0, **compile_kwargs))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_training_reduces_the_loss(name):
    model = _build(name)
    data = _digits(data_range=model.data_range)
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(32)
    before = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    history = model.fit(dataset, epochs=15, verbose=0, validation_data=dataset)
    after = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(history.history["loss"]).all()
    assert "val_loss" in history.history
    assert after < before, (before, after)
    # The validation loss is deterministic (a fixed seed): evaluating twice agrees.
    assert model.evaluate(dataset, verbose=0, return_dict=True)["loss"] == pytest.approx(after, rel=1e-6)


def test_ema_follows_the_warmup_formula():
    decay = 0.9
    keras.utils.set_random_seed(0)
    model = DDPM(TinyNet(), schedules.linear(T=100), ema_decay=decay)
    model.compile(optimizer=optim.adam(1e-2, warmup_steps=0))
    data = _digits(16)
    expected = [w.copy() for w in model.network.get_weights()]
    for n in range(5):
        model.train_on_batch(data)
        d = min(decay, (1 + n) / (10 + n))  # the optimizer's step count before this update
        expected = [d * e + (1 - d) * w for e, w in zip(expected, model.network.get_weights())]
    for e, got in zip(expected, model.ema_network.get_weights()):
        np.testing.assert_allclose(got, e, rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.ema_network.get_weights()[0], model.network.get_weights()[0])


def test_ema_update_is_the_closed_form_in_one_fused_op_a_weight():
    """decay·average + (1 − decay)·weight to float32 round-off, as one
    ResourceApplyGradientDescent a weight (four graph ops a weight, ten before)."""
    model = DDPM(TinyNet(), schedules.linear(T=100), ema_decay=0.9)
    rng = np.random.default_rng(0)
    for variables in (model.network.weights, model.ema_network.weights):
        for v in variables:
            v.assign(rng.standard_normal(v.shape).astype(np.float32))
    averages = [v.numpy().astype(np.float64) for v in model.ema_network.weights]
    values = [v.numpy().astype(np.float64) for v in model.network.weights]
    update = tf.function(lambda decay: model._update_ema(decay))
    update(tf.constant(0.37))
    for average, value, got in zip(averages, values, model.ema_network.get_weights()):
        np.testing.assert_allclose(got, 0.37 * average + 0.63 * value, rtol=1e-6, atol=1e-6)
    ops = [op.type for op in update.get_concrete_function(tf.constant(0.37)).graph.get_operations()]
    count = len(model.network.weights)
    assert ops.count("ResourceApplyGradientDescent") == count
    assert len(ops) <= 6 * count + 10


def test_ema_disabled_tracks_the_raw_weights():
    model = DDPM(TinyNet(), schedules.linear(T=100), ema_decay=0.0)
    model.compile(optimizer=optim.adam(1e-2, warmup_steps=0))
    model.train_on_batch(_digits(16))
    for a, b in zip(model.ema_network.get_weights(), model.network.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.slow
def test_training_is_reproducible_with_the_same_seed():
    weights = []
    for _ in range(2):
        model = _build("ddpm_simple")
        model.fit(_digits(64), batch_size=16, epochs=1, verbose=0, shuffle=False)
        weights.append(model.network.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_keras_save_load_fit_generate_round_trip(tmp_path):
    model = _build("ddpm_hybrid")
    data = _digits(64)
    model.fit(data, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "ddpm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, DDPM) and loaded.loss_name == "hybrid"
    assert loaded.process.get_config() == model.process.get_config()
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 4
    x, t = tf.constant(data[:4]), tf.constant([0, 10, 50, 99])
    np.testing.assert_allclose(loaded.model_fn(sampler="ddpm")(x, t), model.model_fn(sampler="ddpm")(x, t), atol=1e-6)
    np.testing.assert_array_equal(loaded.generate(4, steps=10, seed=3), model.generate(4, steps=10, seed=3))
    # Training goes on from the saved optimizer state.
    loaded.fit(data, batch_size=16, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 8
    images = loaded.generate(4, sampler="ddpm", steps=20, seed=0)
    assert images.shape == (4, 8, 8, 1) and images.dtype == np.uint8


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ncsn_dsm", "sde_ve"])
def test_score_families_round_trip_and_generate(name, tmp_path):
    model = _build(name)
    model.fit(_digits(32, model.data_range), batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    a = loaded.generate(3, steps=5, seed=1)
    np.testing.assert_array_equal(a, model.generate(3, steps=5, seed=1))
    assert a.shape == (3, 8, 8, 1)


@pytest.mark.slow
def test_generate_is_reproducible_and_uses_the_ema_weights():
    model = _build("ddpm_simple")
    model.fit(_digits(32), batch_size=16, epochs=2, verbose=0)
    a = model.generate(6, steps=10, seed=5)
    np.testing.assert_array_equal(a, model.generate(6, steps=10, seed=5))
    assert not np.array_equal(a, model.generate(6, steps=10, seed=6))
    ema = kdiff.sample(model.model_fn(ema=True), 6, steps=10, seed=5, schedule=model.process, image_shape=(8, 8, 1))
    np.testing.assert_array_equal(a, ema)


@pytest.mark.slow
def test_class_conditional_training_and_generation():
    from sklearn.datasets import load_digits

    labels = load_digits().target[:64].astype("int32")
    keras.utils.set_random_seed(0)
    model = DDPM(TinyNet(num_classes=10), schedules.linear(T=100), num_classes=10)
    model.compile(optimizer=optim.adam(1e-3, warmup_steps=0))
    model.fit(tf.data.Dataset.from_tensor_slices((_digits(64), labels)).batch(16), epochs=1, verbose=0)
    images = model.generate(4, steps=5, class_labels=[0, 1, 2, 3])
    assert images.shape == (4, 8, 8, 1)
    with pytest.raises(ValueError, match="class_labels"):
        model.generate(2, steps=5, class_labels=[0, 12])
    with pytest.raises(ValueError, match="labels"):
        model.fit(_digits(16), batch_size=16, epochs=1, verbose=0)


@pytest.mark.slow
def test_mixed_bfloat16_training_is_finite(tmp_path):
    try:
        kdiff.distribute.set_precision("mixed_bfloat16")
        model = _build("ddpm_simple")
        assert model.network.compute_dtype == "bfloat16"
        history = model.fit(_digits(32), batch_size=16, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        assert model.network.weights[0].dtype == "float32"
        eps = model.model_fn()(tf.zeros((2, 8, 8, 1)), tf.constant([1, 2]))
        assert eps.dtype == tf.float32  # samplers and the export work in float32
        loaded = kdiff.export.load(model.export(tmp_path / "bf16"))
        assert loaded.generate(2, steps=3).shape == (2, 8, 8, 1)
    finally:
        kdiff.distribute.set_precision("float32")


@pytest.mark.slow
def test_mixed_float16_uses_loss_scaling():
    try:
        kdiff.distribute.set_precision("mixed_float16")
        model = _build("ddpm_simple")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        history = model.fit(_digits(32), batch_size=16, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
    finally:
        kdiff.distribute.set_precision("float32")


def test_optimizer_recipe_warmup_then_linear_decay():
    schedule = optim.WarmupLinearDecay(1e-4, warmup_steps=500, warmup_from=4e-5, decay_steps=1500, end=0.0)
    values = [float(schedule(step)) for step in (0, 250, 500, 1000, 1500, 2000)]
    np.testing.assert_allclose(values, [4e-5, 7e-5, 1e-4, 5e-5, 0.0, 0.0], rtol=1e-5, atol=1e-12)
    adam = optim.adam()
    assert adam.global_clipnorm == 1.0
    assert float(adam.learning_rate) == pytest.approx(4e-5)  # step 0 of the warm-up
    rebuilt = optim.WarmupLinearDecay.from_config(schedule.get_config())
    assert float(rebuilt(1000)) == pytest.approx(5e-5)
    with pytest.raises(ValueError, match="decay_steps"):
        optim.WarmupLinearDecay(decay_steps=100, warmup_steps=500)


def _adam_steps(make_optimizer, strategy=None, steps=4):
    """Weights and slots after ``steps`` updates by ``make_optimizer()`` of a small conv net."""
    strategy = strategy or tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((8, 6, 6, 2)), tf.float32)
    with strategy.scope():
        keras.utils.set_random_seed(3)
        net = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3), keras.layers.Dense(1)])
        optimizer = make_optimizer()
        optimizer.build(net.trainable_weights)

        @tf.function
        def step():
            def replica_step():
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(net(x) ** 2) * 100.0
                optimizer.apply(tape.gradient(loss, net.trainable_weights), net.trainable_weights)

            strategy.run(replica_step)

        for _ in range(steps):
            step()
    return [w.numpy() for w in net.weights] + [v.numpy() for v in optimizer.variables]


def test_fused_adam_is_kerass_adam():
    """Same weights, slots and step count as keras.optimizers.Adam, with the warm-up
    schedule and clipping (the loss's gradients exceed the clip norm), also under a
    MirroredStrategy and with amsgrad; the config round-trips."""
    def keras_adam(**kwargs):
        schedule = optim.WarmupLinearDecay(1e-2, warmup_steps=2, warmup_from=1e-3)
        return keras.optimizers.Adam(schedule, global_clipnorm=1.0, **kwargs)

    def fused_adam(**kwargs):
        return optim.adam(1e-2, warmup_steps=2, warmup_from=1e-3, **kwargs)

    assert isinstance(fused_adam(), optim.FusedAdam)
    expected = _adam_steps(keras_adam)
    got = _adam_steps(fused_adam)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
    # mirrored variables and the merge_call path (one replica per logical CPU device)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    for a, b in zip(_adam_steps(fused_adam, tf.distribute.MirroredStrategy(devices)), expected):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
    for a, b in zip(_adam_steps(lambda: fused_adam(amsgrad=True)), _adam_steps(lambda: keras_adam(amsgrad=True))):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
    rebuilt = keras.optimizers.deserialize(keras.optimizers.serialize(fused_adam()))
    assert isinstance(rebuilt, optim.FusedAdam) and rebuilt.global_clipnorm == 1.0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: DDPM(TinyNet(), sde_lib.VPSDE()), "schedule"),
        (lambda: NCSN(TinyNet(), schedules.linear()), "sigmas"),
        (lambda: NCSN(TinyNet(), [0.01, 0.1, 1.0]), "sigmas"),
        (lambda: ScoreSDE(TinyNet(), schedules.geometric_sigmas()), "sde"),
        (lambda: DDPM(TinyNet(), loss="hybrid"), "learned variance"),
        (lambda: DDPM(TinyNet(), loss="vlb"), "loss"),
        (lambda: DDPM(TinyNet(), image_shape=(16, 16, 1)), "image_size"),
        (lambda: DDPM(TinyNet(), image_shape=(8, 8, 3)), "in_channels"),
        (lambda: DDPM(lambda x, t: x), "network"),
        (lambda: DDPM(TinyNet(), ema_decay=1.5), "ema_decay"),
    ],
)
def test_bad_construction_fails_early(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_data_fails_with_a_clear_message():
    model = _build("ddpm_simple")
    with pytest.raises(ValueError, match=r"shape \[batch, \*\[8, 8, 1\]\]"):
        model.fit(np.zeros((16, 8, 8, 3), "float32"), batch_size=16, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="float images"):
        model.fit(np.zeros((16, 8, 8, 1), "uint8"), batch_size=16, epochs=1, verbose=0)


# ------------------------------------------------------------------------------ progress output in logs

CONTROL = ("\x08", "\r", "\x1b[")  # a progress bar's backspaces, carriage returns and ANSI codes


class _Terminal:
    def isatty(self):
        return True


def test_auto_verbosity_is_the_bar_on_a_terminal_and_lines_elsewhere(tmp_path):
    from kdiff import _terminal

    assert _terminal.keras_verbosity("auto", _Terminal()) == 1
    with open(tmp_path / "log.txt", "w") as log:
        assert _terminal.keras_verbosity("auto", log) == 2
    assert _terminal.keras_verbosity("auto", object()) == 2  # no isatty at all
    assert [_terminal.keras_verbosity(v, _Terminal()) for v in (0, 1, 2)] == [0, 1, 2]


@pytest.mark.slow
def test_fit_writes_plain_lines_when_stdout_is_not_a_terminal(capsys):
    model = _build("ddpm_simple")
    model.fit(_digits(32), batch_size=16, epochs=2)  # Keras' default verbose="auto"
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "loss:" in out
    assert not [c for c in CONTROL if c in out], repr(out)
    model.fit(_digits(32), batch_size=16, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_digits_train_writes_plain_lines_when_stdout_is_not_a_terminal(monkeypatch, capsys):
    """``kdiff.digits.train`` (``python -m kdiff.digits``) into a log: one line per epoch, no progress-bar bytes."""
    from kdiff import export as export_lib
    from kdiff import models

    monkeypatch.setattr(kdiff.digits, "load", lambda image_size: _digits(16))
    monkeypatch.setattr(models.UNet, "small", staticmethod(lambda **kwargs: TinyNet()))
    written = []
    monkeypatch.setattr(export_lib, "export", lambda model, path, **kwargs: written.append(path))
    kdiff.digits.train("unused", epochs=2, batch_size=8)  # its default verbose
    out = capsys.readouterr().out
    assert written == ["unused"] and "Epoch 2/2" in out and "2/2 - " in out and "trained 4 steps" in out
    assert not [c for c in CONTROL if c in out], repr(out)
