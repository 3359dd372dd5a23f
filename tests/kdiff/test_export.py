"""kdiff.export: SavedModels with `denoise` and `generate` signatures, loaded with TensorFlow alone.

The models are untrained tiny networks (T = 100, 8×8×1 images): what is tested is that
the exported graphs compute what the in-memory model computes, not image quality.
"""

import gc
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from paths import REPO
from tiny_network import TinyNet

import kdiff
from kdiff import export as export_lib
from kdiff import schedules
from kdiff import sde as sde_lib
from kdiff.diffusion import DDPM, NCSN, ScoreSDE

SHAPE = (8, 8, 1)


def _models():
    return {
        "ddpm": (DDPM(TinyNet(), schedule=schedules.linear(T=100), seed=1), {}),
        "ncsn": (NCSN(TinyNet(), sigmas=schedules.geometric_sigmas(1.0, 0.01, 10)), {}),
        "sde": (ScoreSDE(TinyNet(), sde=sde_lib.VPSDE(N=100)), {}),
        "cond": (DDPM(TinyNet(num_classes=3), schedule=schedules.linear(T=100), num_classes=3), {}),
        "hybrid": (DDPM(TinyNet(out_channels=2), schedule=schedules.cosine(T=100), loss="hybrid"), {}),
        # σ_max = 1: with VE's default 50 an untrained network's steps are chaotic enough to
        # turn float round-off into different pixels.
        "ve_em": (ScoreSDE(TinyNet(), sde=sde_lib.VESDE(0.01, 1.0, N=100)), {"sampler": "euler_maruyama"}),
        "ddim_eta": (DDPM(TinyNet(), schedule=schedules.linear(T=100)), {"sampler_options": {"eta": 1.0}}),
        # the fast samplers (kdiff.samplers) run in the export's graph like the others
        "dpm_solver": (DDPM(TinyNet(), schedule=schedules.linear(T=100), seed=2), {"sampler": "dpm_solver"}),
        "heun_sde": (ScoreSDE(TinyNet(), sde=sde_lib.VPSDE(N=100)), {"sampler": "heun"}),
        "euler_ancestral_ncsn": (
            NCSN(TinyNet(), sigmas=schedules.geometric_sigmas(1.0, 0.01, 10)), {"sampler": "euler_ancestral"},
        ),
    }


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """name → (in-memory model, export path, export kwargs)."""
    keras.utils.set_random_seed(0)
    keras_seed = 0
    out = {}
    root = tmp_path_factory.mktemp("exports")
    for name, (model, kwargs) in _models().items():
        # Weights differ from the EMA copy's so that ema=True is visibly what is exported.
        keras_seed += 1
        rng = np.random.default_rng(keras_seed)
        for variable in model.ema_network.weights:
            variable.assign(variable + 0.05 * rng.standard_normal(variable.shape).astype("float32"))
        path = export_lib.export(model, root / name, **kwargs)
        out[name] = (model, path, kwargs)
    return out


def _levels(family):
    if family == "ddpm":
        return tf.constant([0, 37, 99], tf.int32)
    if family == "ncsn":
        return tf.constant([1.0, 0.13, 0.01], tf.float32)
    return tf.constant([1e-3, 0.5, 1.0], tf.float32)


def _close_images(a, b):
    """Equal up to float round-off: at most 1 level apart, on under 1 % of the pixels."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


# ----------------------------------------------------------------------------- denoise


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddpm", "ncsn", "sde", "cond", "hybrid"])
def test_denoise_equals_the_in_memory_model(exported, name):
    model, path, _ = exported[name]
    loaded = export_lib.load(path)
    x = tf.random.stateless_normal((3,) + SHAPE, seed=[1, 2])
    level = _levels(model.family)
    y = tf.constant([0, 2, 1], tf.int32) if model.num_classes else None
    expected = model.model_fn(y=y, sampler="ddpm")(x, level)  # EMA weights
    out = loaded.denoise(x, level, y=y)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    raw = model.model_fn(ema=False, y=y, sampler="ddpm")(x, level)
    assert not np.allclose(out.numpy(), raw.numpy(), atol=1e-3)  # the EMA weights, not the raw ones
    key = "eps" if model.family == "ddpm" else "score"
    kwargs = {"x_t": x, "level": level} if y is None else {"x_t": x, "level": level, "y": y}
    signature_out = loaded.signatures["denoise"](**kwargs)
    assert list(signature_out) == [key]
    channels = 2 if name == "hybrid" else 1
    assert signature_out[key].shape == (3, 8, 8, channels)


# ---------------------------------------------------------------------------- generate


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, steps, sample_kwargs",
    [
        ("ddpm", 10, {}),
        ("ncsn", 3, {}),
        ("sde", 10, {}),
        ("ve_em", 10, {"sampler": "euler_maruyama"}),
        ("ddim_eta", 7, {"eta": 1.0}),
        ("dpm_solver", 8, {"sampler": "dpm_solver"}),
        ("heun_sde", 6, {"sampler": "heun"}),
        ("euler_ancestral_ncsn", 6, {"sampler": "euler_ancestral"}),
    ],
)
def test_generate_is_kdiff_sample_in_the_graph(exported, name, steps, sample_kwargs):
    model, path, _ = exported[name]
    loaded = export_lib.load(path)
    images = loaded.generate(6, seed=5, steps=steps)
    assert images.shape == (6,) + SHAPE and images.dtype == np.uint8
    np.testing.assert_array_equal(images, loaded.generate(6, seed=5, steps=steps))
    assert not np.array_equal(images, loaded.generate(6, seed=6, steps=steps))
    # the seeds line up with kdiff.sample's (one batch): the same images
    _close_images(images, kdiff.sample(model, 6, steps=steps, seed=5, **sample_kwargs))
    # and kdiff.sample runs on the export's `denoise` with the Python samplers
    _close_images(images, kdiff.sample(path, 6, steps=steps, seed=5, **sample_kwargs))


@pytest.mark.slow
def test_generate_with_class_labels(exported, grappler):
    model, path, _ = exported["cond"]
    loaded = export_lib.load(path)
    for labels in (None, 2, [0, 1, 2, 2, 1]):
        images = loaded.generate(5, seed=1, steps=8, class_labels=labels)
        _close_images(images, kdiff.sample(model, 5, steps=8, seed=1, class_labels=labels))
    signature = loaded.signatures["generate"]
    one = signature(seed=tf.constant(1, tf.int64), num_samples=tf.constant(5), steps=tf.constant(8),
                    class_labels=tf.constant([2]))["images"]
    np.testing.assert_array_equal(one.numpy(), loaded.generate(5, seed=1, steps=8, class_labels=2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_labels"):
        signature(seed=tf.constant(1, tf.int64), num_samples=tf.constant(5), steps=tf.constant(8),
                  class_labels=tf.constant([0, 1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_labels"):
        signature(seed=tf.constant(1, tf.int64), num_samples=tf.constant(2), steps=tf.constant(8),
                  class_labels=tf.constant([0, 3]))


@pytest.mark.slow
def test_learned_variance_export_runs_every_ddpm_sampler(exported):
    model, path, _ = exported["hybrid"]
    for sampler, steps in (("ddpm", 20), ("ddim", 10)):
        _close_images(
            kdiff.sample(path, 4, sampler=sampler, steps=steps, seed=2),
            kdiff.sample(model, 4, sampler=sampler, steps=steps, seed=2),
        )


@pytest.mark.slow
def test_model_fn_outlives_the_loaded_model_and_compiles_with_xla(exported):
    model, path, _ = exported["ddpm"]
    fn = export_lib.load(path).model_fn()  # the ExportedModel itself is dropped at once
    gc.collect()
    x, t = tf.ones((2,) + SHAPE), tf.constant([3, 60])
    np.testing.assert_allclose(fn(x, t).numpy(), model.model_fn()(x, t).numpy(), atol=1e-5)
    # kdiff.sample's default on a GPU is an XLA-compiled loop around the `denoise` signature
    _close_images(
        kdiff.sample(path, 3, steps=4, seed=1, jit_compile=True),
        kdiff.sample(model, 3, steps=4, seed=1, jit_compile=True),
    )


@pytest.mark.slow
def test_default_steps_and_the_raw_weights(tmp_path):
    model = DDPM(TinyNet(), schedule=schedules.linear(T=100))
    for variable in model.network.weights:
        variable.assign(variable * 1.5)
    path = model.export(tmp_path / "raw", ema=False, default_steps=4)  # the Keras-model method
    loaded = export_lib.load(path)
    assert loaded.config["generate"]["default_steps"] == 4 and loaded.config["ema"] is False
    x, t = tf.zeros((2,) + SHAPE), tf.constant([3, 4])
    np.testing.assert_allclose(loaded.denoise(x, t).numpy(), model.model_fn(ema=False)(x, t).numpy(), atol=1e-5)
    np.testing.assert_array_equal(loaded.generate(3, seed=0), loaded.generate(3, seed=0, steps=4))


@pytest.mark.slow
def test_a_real_unet_exports(tmp_path):
    """The library's U-Net (when kdiff.models has it): same ε, and `generate` runs; the
    SavedModel holds TensorFlow's ops only (no fused kdiff kernel, which TF Serving lacks:
    neither GroupNorm's nor, at 128 channels, the Winograd convolution's), even when the
    network ran with them before the export."""
    models = pytest.importorskip("kdiff.models")
    if not hasattr(getattr(models, "UNet", None), "small"):
        pytest.skip("kdiff.models.UNet.small is not there")
    keras.utils.set_random_seed(3)
    model = DDPM(models.UNet.small(image_size=16, in_channels=1, base_channels=128), schedule=schedules.linear(T=100))
    x, t = tf.random.stateless_normal((2, 16, 16, 1), seed=[0, 1]), tf.constant([5, 90])
    expected = model.model_fn()(x, t).numpy()
    path = export_lib.export(model, tmp_path / "unet")
    saved = saved_model_pb2.SavedModel.FromString((tmp_path / "unet" / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    op_types = {node.op for node in graph.node} | {
        node.op for function in graph.library.function for node in function.node_def
    }
    assert "Conv2D" in op_types and not any(op.startswith("Kdiff") for op in op_types)
    loaded = export_lib.load(path)
    np.testing.assert_allclose(loaded.denoise(x, t).numpy(), expected, atol=1e-4)
    images = loaded.generate(2, seed=4, steps=2)
    assert images.shape == (2, 16, 16, 1) and images.dtype == np.uint8


# ------------------------------------------------------------------------------ config


@pytest.mark.slow
def test_config_json(exported):
    model, path, _ = exported["cond"]
    with open(os.path.join(path, "config.json")) as file:
        config = json.load(file)
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    for key, value in model.export_config().items():
        assert config[key] == (list(value) if isinstance(value, tuple) else value), key
    assert config["format"] == export_lib.FORMAT_VERSION and config["kdiff_version"] == kdiff.__version__
    assert config["value_range"] == [-1.0, 1.0] == config["data_range"]
    assert config["num_classes"] == 3 and config["schedule"]["T"] == 100
    # generate clips the predicted x0 to the data range by default, as kdiff.sample does
    assert config["generate"] == {
        "sampler": "ddim",
        "sampler_options": {"eta": 0.0, "clip_x0": [-1.0, 1.0], "clipped_eps": True, "spacing": "leading",
                            "steps_offset": 0, "final_alpha_one": True, "grid": None},
        "default_steps": 50, "max_steps": 100,
    }
    assert config["default_sampler"] == "ddim" and config["sampler_defaults"] == {}
    signatures = config["signatures"]
    assert set(signatures["denoise"]["inputs"]) == {"x_t", "level", "y"}
    assert signatures["denoise"]["inputs"]["x_t"]["shape"] == [-1, 8, 8, 1]
    assert signatures["denoise"]["inputs"]["level"]["dtype"] == "int32"
    assert set(signatures["generate"]["inputs"]) == {"seed", "num_samples", "steps", "class_labels"}
    assert signatures["generate"]["outputs"]["images"]["dtype"] == "uint8"
    ncsn = export_lib.load(exported["ncsn"][1]).config
    assert ncsn["signatures"]["denoise"]["inputs"]["level"]["dtype"] == "float32"
    assert list(ncsn["signatures"]["denoise"]["outputs"]) == ["score"] and ncsn["value_range"] == [0.0, 1.0]
    hybrid = export_lib.load(exported["hybrid"][1])
    assert hybrid.config["learned_variance"] is True
    assert hybrid.config["sampler_defaults"] == {"ddpm": {"variance": "learned"}} == hybrid.sampling_spec().sampler_defaults


def test_an_export_keeps_the_models_own_sampling_defaults_and_an_older_one_its_learned_variance():
    """``config.json``'s ``default_sampler`` and ``sampler_defaults`` are the loaded model's; an
    export written before ``sampler_defaults`` was recorded gets a learned variance's, as then."""
    from types import SimpleNamespace

    model = DDPM(TinyNet(out_channels=2), schedule=schedules.cosine(T=100), loss="hybrid", default_sampler="ddpm",
                 sampler_defaults={"ddpm": {"spacing": "trailing"}, "ddim": {"eta": 0.5}})
    config = {**model.export_config(), "format": export_lib.FORMAT_VERSION, "learned_variance": True}
    loaded = SimpleNamespace(signatures={"denoise": None, "generate": None})
    spec = export_lib.ExportedModel("x", json.loads(json.dumps(config)), loaded).sampling_spec()
    assert spec.default_sampler == "ddpm"
    assert spec.sampler_defaults == {"ddpm": {"variance": "learned", "spacing": "trailing"}, "ddim": {"eta": 0.5}}
    entry, kwargs = spec.request()
    assert entry.name == "ddpm" and kwargs["spacing"] == "trailing" and kwargs["variance"] == "learned"
    del config["sampler_defaults"]
    older = export_lib.ExportedModel("x", config, loaded).sampling_spec()
    assert older.sampler_defaults == {"ddpm": {"variance": "learned"}}


# ------------------------------------------------------------------- writing the directory


def _small_ddpm():
    return DDPM(TinyNet(), schedule=schedules.linear(T=100))


@pytest.mark.slow
def test_overwrite_protection(tmp_path):
    target = tmp_path / "model"
    target.mkdir()  # an empty directory may be written into
    export_lib.export(_small_ddpm(), target)
    before = export_lib.load(target).generate(2, steps=3)
    other = _small_ddpm()
    with pytest.raises(ValueError, match=f"path={str(target)!r}.*overwrite=True"):
        export_lib.export(other, target)
    np.testing.assert_array_equal(export_lib.load(target).generate(2, steps=3), before)
    export_lib.export(other, target, overwrite=True)
    np.testing.assert_array_equal(
        export_lib.load(target).generate(2, steps=3), kdiff.sample(other, 2, steps=3, seed=0)
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file"):
        export_lib.export(other, tmp_path / "file")
    assert sorted(os.listdir(tmp_path)) == ["file", "model"]  # no temporary directories left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o777 & ~umask  # readable by a serving user


@pytest.mark.slow
def test_interrupted_export_leaves_nothing_behind(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    model = _small_ddpm()
    monkeypatch.setattr(tf.saved_model, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_lib.export(model, tmp_path / "model")
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    export_lib.export(model, tmp_path / "model")
    monkeypatch.setattr(tf.saved_model, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_lib.export(_small_ddpm(), tmp_path / "model", overwrite=True)
    assert os.listdir(tmp_path) == ["model"]
    np.testing.assert_array_equal(
        export_lib.load(tmp_path / "model").generate(2, steps=3), kdiff.sample(model, 2, steps=3, seed=0)
    )


def test_export_argument_errors(tmp_path):
    model = _small_ddpm()
    with pytest.raises(ValueError, match="sampler"):
        export_lib.export(model, tmp_path / "a", sampler="annealed_langevin")
    with pytest.raises(ValueError, match="sampler_options"):
        export_lib.export(model, tmp_path / "a", sampler_options={"snr": 0.1})
    with pytest.raises(ValueError, match="default_steps"):
        export_lib.export(model, tmp_path / "a", default_steps=101)
    with pytest.raises(ValueError, match="kdiff diffusion model"):
        export_lib.export(lambda x, t: x, tmp_path / "a")
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_load_errors_name_the_path(tmp_path, exported):
    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match="missing.*does not exist"):
        export_lib.load(missing)
    with pytest.raises(ValueError, match="missing"):
        kdiff.sample(str(missing), 2)
    plain = tmp_path / "plain"
    tf.saved_model.save(tf.Module(), str(plain))  # a SavedModel, but not a kdiff export
    with pytest.raises(ValueError, match="plain.*config.json"):
        export_lib.load(plain)
    no_graph = tmp_path / "no_graph"
    shutil.copytree(exported["ddpm"][1], no_graph)
    os.remove(no_graph / "saved_model.pb")
    with pytest.raises(ValueError, match="no_graph.*saved_model.pb"):
        export_lib.load(no_graph)


# -------------------------------------------------------------------------- bad requests


@pytest.mark.slow
def test_wrong_inputs_raise_errors_naming_the_input(exported, grappler):
    loaded = export_lib.load(exported["ddpm"][1])
    denoise, generate = loaded.signatures["denoise"], loaded.signatures["generate"]
    for shape in ((2, 4, 4, 1), (2, 8, 8, 3), (2, 8, 8)):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"x_t.*\[batch, 8, 8, 1\]"):
            denoise(x_t=tf.zeros(shape), level=tf.constant([1, 2]))
        with pytest.raises(ValueError, match=r"x_t.*\[batch, 8, 8, 1\]"):
            loaded.denoise(tf.zeros(shape), [1, 2])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"level.*\[0, 99\]"):
        denoise(x_t=tf.zeros((2,) + SHAPE), level=tf.constant([1, 100]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="level.*one value per image"):
        denoise(x_t=tf.zeros((2,) + SHAPE), level=tf.constant([1, 2, 3]))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match="int32"):
        denoise(x_t=tf.zeros((2,) + SHAPE), level=tf.constant([1.0, 2.0]))

    def request(num_samples=2, steps=3):
        return generate(seed=tf.constant(0, tf.int64), num_samples=tf.constant(num_samples), steps=tf.constant(steps))

    for steps in (0, 101):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"steps.*\[1, 100\]"):
            request(steps=steps)
        with pytest.raises(ValueError, match="steps"):
            loaded.generate(2, steps=steps)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples"):
        request(num_samples=0)
    sde = export_lib.load(exported["sde"][1]).signatures["denoise"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"level.*\(0, 1"):
        sde(x_t=tf.zeros((1,) + SHAPE), level=tf.constant([0.0]))


@pytest.mark.slow
def test_checks_hold_in_a_tf1_session_as_tf_serving_runs_the_graph(exported, grappler):
    """TF Serving runs the signatures through Session::Run, which feeds a request's tensors
    without checking them against the signature's shapes: the graph's own checks answer."""
    from tensorflow.core.protobuf import config_pb2

    path = exported["ddpm"][1]
    expected = export_lib.load(path).generate(2, seed=3, steps=4)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)

        def callable_for(name, inputs, output):
            signature = meta.signature_def[name]
            options = config_pb2.CallableOptions()
            options.feed.extend(signature.inputs[k].name for k in inputs)
            options.fetch.append(signature.outputs[output].name)
            run = session._make_callable_from_options(options)  # no Python-side shape checks
            return lambda *values: run(*values)[0]

        denoise = callable_for("denoise", ["x_t", "level"], "eps")
        generate = callable_for("generate", ["seed", "num_samples", "steps"], "images")
        assert denoise(np.zeros((2,) + SHAPE, np.float32), np.array([1, 2], np.int32)).shape == (2,) + SHAPE
        for shape in ((2, 4, 4, 1), (2, 8, 8, 3), (2, 8, 8), (8, 8, 1)):
            with pytest.raises(tf.errors.InvalidArgumentError, match=r"x_t.*\[batch, 8, 8, 1\]"):
                denoise(np.zeros(shape, np.float32), np.array([1, 2], np.int32))
        with pytest.raises(tf.errors.InvalidArgumentError, match="level"):
            denoise(np.zeros((2,) + SHAPE, np.float32), np.array([1], np.int32))
        images = generate(np.array(3, np.int64), np.array(2, np.int32), np.array(4, np.int32))
        np.testing.assert_array_equal(images, expected)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"steps.*\[1, 100\]"):
            generate(np.array(3, np.int64), np.array(2, np.int32), np.array(0, np.int32))
        with pytest.raises(tf.errors.InvalidArgumentError, match="steps.*scalar"):
            generate(np.array(3, np.int64), np.array(2, np.int32), np.array([4, 5], np.int32))


# ------------------------------------------------------------------ outside this process


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    return env


_PLAIN_TF = r"""
import json, sys
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
path, out = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(path)
images = loaded.signatures["generate"](
    seed=tf.constant(7, tf.int64), num_samples=tf.constant(3), steps=tf.constant(5))["images"].numpy()
eps = loaded.signatures["denoise"](x_t=tf.ones([2, 8, 8, 1]), level=tf.constant([4, 50]))["eps"].numpy()
plain = not any(name == "kdiff" or name.startswith("kdiff.") for name in sys.modules)
import kdiff  # now kdiff, but not the network's class (tests/tiny_network.py is never imported)
via_sample = kdiff.sample(path, 3, sampler="ddpm", steps=10, seed=2)
np.savez(out, images=images, eps=eps, via_sample=via_sample, plain=plain,
         tiny=any("tiny_network" in name for name in sys.modules))
"""


@pytest.mark.slow
def test_plain_tensorflow_loads_the_export_in_another_process(exported, tmp_path):
    model, path, _ = exported["ddpm"]
    out = tmp_path / "out.npz"
    result = subprocess.run(
        [sys.executable, "-c", _PLAIN_TF, str(path), str(out)],
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = np.load(out)
    assert bool(data["plain"]) and not bool(data["tiny"])
    _close_images(data["images"], kdiff.sample(model, 3, steps=5, seed=7))
    expected = model.model_fn()(tf.ones([2, 8, 8, 1]), tf.constant([4, 50])).numpy()
    np.testing.assert_allclose(data["eps"], expected, atol=1e-5)
    _close_images(data["via_sample"], kdiff.sample(model, 3, sampler="ddpm", steps=10, seed=2))


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures(exported, tmp_path):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        cli = shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli is not installed")
    listing = tmp_path / "saved_model_cli.txt"
    with open(listing, "w") as file:
        result = subprocess.run(
            [cli, "show", "--all", "--dir", str(exported["cond"][1])],
            env=_env(), cwd=tmp_path, stdout=file, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    text = listing.read_text()
    for expected in (
        "signature_def['denoise']", "signature_def['generate']", "signature_def['serving_default']",
        "inputs['x_t']", "inputs['level']", "inputs['y']", "outputs['eps']", "shape: (-1, 8, 8, 1)",
        "inputs['seed']", "DT_INT64", "inputs['num_samples']", "inputs['steps']",
        "inputs['class_labels']", "outputs['images']", "DT_UINT8",
    ):
        assert expected in text, expected
    assert "XlaLaunch" not in text and "_XlaCompile" not in text  # a plain graph, servable on GPUs


def test_kdiff_load_is_a_handle_that_keeps_the_compiled_loop(exported):
    """``kdiff.load`` once, sample many times: the same images as sampling the path, and
    the second call reuses the first call's traced loop (a path reloads every call)."""
    _, path, _ = exported["ddpm"]
    handle = kdiff.load(path)
    assert isinstance(handle, kdiff.export.ExportedModel)
    first = kdiff.sample(handle, 3, sampler="ddim", steps=3, seed=1)
    cache = handle.sampling_spec().draw_cache
    ((function, _relay),) = cache._functions.values()
    again = kdiff.sample(handle, 3, sampler="ddim", steps=3, seed=1)
    assert function.experimental_get_tracing_count() == 1
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(kdiff.sample(path, 3, sampler="ddim", steps=3, seed=1), first)
