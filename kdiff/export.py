"""SavedModels for TF Serving: ``export`` writes one, ``load`` reads it back with TensorFlow alone.

An export is a directory with a TensorFlow SavedModel (the EMA network's weights and two
serving signatures) and a ``config.json`` describing the model:

``denoise``
    One network evaluation, equal to ``model.model_fn(sampler="ddpm")``.
    Inputs ``x_t`` float32 [batch, H, W, C]; ``level`` [batch] — the integer timestep
    t ∈ [0, T) (int32) for DDPM, the noise level σ > 0 (float32, mapped to the nearest
    σ_i inside) for NCSN, the continuous time t ∈ (0, 1] (float32) for ScoreSDE; ``y``
    int32 [batch] class labels for a class-conditional model. Output ``eps`` (DDPM; 2·C
    channels [ε, v] with a learned variance) or ``score``, float32 shaped like ``x_t``
    (C channels).
``generate``
    The whole sampling loop in the graph. Inputs ``seed`` int64 scalar, ``num_samples``
    int32 scalar, ``steps`` int32 scalar (DDIM steps; Langevin steps per noise level for
    NCSN; predictor steps for ScoreSDE), and ``class_labels`` int32 [num_samples], [1]
    (one class for all) or [0] (the classes in turn) for a class-conditional model.
    Output ``images`` uint8 [num_samples, H, W, C], mapped from ``data_range`` as
    ``kdiff.sampling.to_uint8`` does. ``serving_default`` is ``generate``.

The signatures are plain graphs (no XLA: XLA-compiled SavedModels fail in TF Serving's
GPU image, tensorflow/serving#2214); their inputs are checked in the graph, so a bad
request gets an error naming the input. Randomness is stateless and derived from
``seed`` exactly as ``kdiff.sample`` derives it, so ``generate`` gives the images of
``kdiff.sample(model, n, sampler=<the export's sampler>, steps=k, seed=s)`` for
n ≤ 64 (one batch), up to float round-off.

``load(path)`` needs only TensorFlow (not the network's Python classes): it returns an
``ExportedModel`` whose ``sampling_spec()`` lets every kdiff sampler run on the
``denoise`` signature — ``kdiff.sample("path/to/export", 16, sampler="ddpm")``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

__all__ = ["export", "load", "ExportedModel", "FORMAT_VERSION", "GENERATE_SAMPLERS"]

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"

# family → the samplers ``generate`` can run in the graph (the first is the default)
GENERATE_SAMPLERS = {
    "ddpm": ("ddim",),
    "ncsn": ("annealed_langevin",),
    "sde": ("predictor_corrector", "euler_maruyama"),
}

# sampler → its options in ``generate`` and their defaults (those of kdiff.samplers)
_SAMPLER_OPTIONS = {
    "ddim": {"eta": 0.0},
    "annealed_langevin": {"step_lr": 2e-5, "denoise": False},
    "predictor_corrector": {"snr": 0.16, "n_corrector": 1, "eps": 1e-3, "denoise": True},
    "euler_maruyama": {"eps": 1e-3, "denoise": True},
}

# sampler → the default number of steps (kdiff.sample's; None: the SDE's N)
_DEFAULT_STEPS = {"ddim": 50, "annealed_langevin": 100, "predictor_corrector": None, "euler_maruyama": None}

_NCSN_MAX_STEPS = 1000  # Langevin steps per level accepted by an NCSN export's `generate`


# ----------------------------------------------------------------------------- export


def export(
    model,
    path,
    *,
    ema=True,
    default_steps=None,
    sampler=None,
    sampler_options=None,
    max_steps=None,
    overwrite=False,
):
    """Writes a diffusion model as a TF Serving SavedModel with ``denoise`` and ``generate``.

    The directory appears complete or not at all: the model is written to a temporary
    directory beside ``path`` and renamed into place.

    Args:
        model: a ``kdiff.DDPM``, ``NCSN`` or ``ScoreSDE`` (``kdiff.diffusion``).
        path: the directory to write (local file system).
        ema: export the EMA weights (True) or the raw network's.
        default_steps: the steps ``ExportedModel.generate`` uses when none are given
            (default: 50 DDIM steps, 100 Langevin steps per level, N SDE steps).
        sampler: the sampler of ``generate``: "ddim" (DDPM), "annealed_langevin"
            (NCSN), "predictor_corrector" or "euler_maruyama" (ScoreSDE); default: the
            family's first.
        sampler_options: options of that sampler, fixed in the graph: ``eta`` (ddim);
            ``step_lr``, ``denoise`` (annealed_langevin); ``snr``, ``n_corrector``,
            ``eps``, ``denoise`` (predictor_corrector); ``eps``, ``denoise``
            (euler_maruyama). Defaults are those of ``kdiff.samplers``.
        max_steps: the largest ``steps`` ``generate`` accepts (default: T for DDPM, N for
            ScoreSDE, 1000 per level for NCSN).
        overwrite: replace an existing non-empty ``path``.

    Returns:
        The absolute path written.

    Raises:
        ValueError: on a model that is not a kdiff diffusion model, an unknown sampler or
            option, or an existing non-empty ``path`` without ``overwrite``.
    """
    _check_model(model)
    family = model.family
    sampler = _check_sampler(family, sampler)
    options = _check_options(sampler, sampler_options)
    max_steps = _max_steps(model, max_steps)
    if default_steps is None:
        default_steps = _DEFAULT_STEPS[sampler]
        default_steps = model.process.N if default_steps is None else default_steps
    default_steps = _int_in_range(default_steps, "default_steps", 1, max_steps)
    path = os.path.abspath(os.fspath(path))
    _check_target(path, overwrite)

    graph = _Graph(model, ema=bool(ema), sampler=sampler, options=options, max_steps=max_steps)
    config = _export_config(model, graph, sampler, options, default_steps, max_steps, ema)
    # What the SavedModel holds: the network's variables (which the functions capture) and
    # the two functions. The Keras network itself is not saved, so loading needs no classes.
    module = tf.Module(name="kdiff_export")
    module.network_variables = graph.variables
    module.denoise = graph.denoise
    module.generate = graph.generate

    def write(directory):
        signatures = {
            "denoise": graph.denoise_concrete,
            "generate": graph.generate_concrete,
            "serving_default": graph.generate_concrete,
        }
        tf.saved_model.save(module, directory, signatures=signatures)
        with open(os.path.join(directory, CONFIG_NAME), "w", encoding="utf-8") as file:
            json.dump(config, file, indent=2, sort_keys=False)
            file.write("\n")

    _write_atomically(path, overwrite, write)
    return path


def _check_model(model):
    family = getattr(model, "family", None)
    if family not in GENERATE_SAMPLERS or not hasattr(model, "export_config") or not hasattr(model, "model_fn"):
        raise ValueError(
            "Expected `model` to be a kdiff diffusion model (kdiff.diffusion.DDPM, NCSN or "
            f"ScoreSDE). Received: model={model!r}"
        )


def _check_sampler(family, sampler):
    choices = GENERATE_SAMPLERS[family]
    if sampler is None:
        return choices[0]
    if sampler not in choices:
        raise ValueError(
            f"Expected `sampler` to be one of {list(choices)} for a {family!r} export (the "
            "samplers `generate` runs in the graph; every kdiff sampler runs on the exported "
            f"`denoise` through kdiff.sample). Received: sampler={sampler!r}"
        )
    return sampler


def _check_options(sampler, sampler_options):
    defaults = _SAMPLER_OPTIONS[sampler]
    options = dict(defaults)
    for key, value in dict(sampler_options or {}).items():
        if key not in defaults:
            raise ValueError(
                f"Expected `sampler_options` keys in {sorted(defaults)} for sampler={sampler!r}. "
                f"Received: {key}={value!r}"
            )
        options[key] = value
    from kdiff import _checks

    if "eta" in options:
        options["eta"] = _checks.non_negative(options["eta"], "eta")
    for key in ("step_lr", "snr", "eps"):
        if key in options:
            options[key] = _checks.positive(options[key], key)
    if "n_corrector" in options:
        options["n_corrector"] = _checks.int_in_range(options["n_corrector"], "n_corrector", 0, None)
    if "denoise" in options:
        options["denoise"] = bool(options["denoise"])
    if sampler in ("predictor_corrector", "euler_maruyama") and options["eps"] >= 1.0:
        raise ValueError(f"Expected 0 < eps < 1. Received: eps={options['eps']!r}")
    return options


def _max_steps(model, max_steps):
    limit = {"ddpm": lambda: model.process.T, "sde": lambda: model.process.N}.get(model.family, lambda: None)()
    if max_steps is None:
        return limit if limit is not None else _NCSN_MAX_STEPS
    return _int_in_range(max_steps, "max_steps", 1, limit)


def _int_in_range(value, name, low, high):
    from kdiff import _checks

    return _checks.int_in_range(value, name, low, high)


def _check_target(path, overwrite):
    if overwrite or not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
        return
    raise ValueError(
        f"Expected a new or empty directory to export to. Received: path={path!r} exists and is "
        "not empty (pass overwrite=True to replace it)."
    )


def _write_atomically(path, overwrite, write):
    """Calls ``write(tmp)`` on a fresh directory beside ``path``, then renames it into place."""
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the model from a serving user
        write(tmp)
        _check_target(path, overwrite)  # someone may have written there meanwhile
        if os.path.lexists(path):
            old = tmp + ".old"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- the graph


def _signature_description(model, graph, sampler):
    H, W, C = model.image_shape
    level = {
        "ddpm": ("int32", f"integer timestep t in [0, {model.process.T - 1}]"),
        "ncsn": ("float32", "noise level sigma > 0 (the nearest of the model's sigmas is used)"),
        "sde": ("float32", "continuous time t in (0, 1]"),
    }[model.family]
    denoise_inputs = {
        "x_t": {"dtype": "float32", "shape": [-1, H, W, C], "description": "noisy images"},
        "level": {"dtype": level[0], "shape": [-1], "description": level[1]},
    }
    generate_inputs = {
        "seed": {"dtype": "int64", "shape": [], "description": "same seed, same images"},
        "num_samples": {"dtype": "int32", "shape": [], "description": "how many images (>= 1)"},
        "steps": {
            "dtype": "int32",
            "shape": [],
            "description": {
                "ddim": "DDIM steps",
                "annealed_langevin": "Langevin steps per noise level",
                "predictor_corrector": "predictor steps",
                "euler_maruyama": "Euler-Maruyama steps",
            }[sampler]
            + f", in [1, {graph.max_steps}]",
        },
    }
    if model.num_classes is not None:
        denoise_inputs["y"] = {"dtype": "int32", "shape": [-1], "description": f"class labels in [0, {model.num_classes - 1}]"}
        generate_inputs["class_labels"] = {
            "dtype": "int32",
            "shape": [-1],
            "description": f"class labels in [0, {model.num_classes - 1}]: one per sample, "
            "one for all samples, or none (the classes in turn)",
        }
    output = graph.output_name
    channels = graph.output_channels
    return {
        "denoise": {
            "inputs": denoise_inputs,
            "outputs": {
                output: {
                    "dtype": "float32",
                    "shape": [-1, H, W, channels],
                    "description": "predicted noise" + (" and variance interpolation [eps, v]" if channels != C else "")
                    if output == "eps"
                    else "score, the gradient of log p(x_t) at the level",
                }
            },
        },
        "generate": {
            "inputs": generate_inputs,
            "outputs": {"images": {"dtype": "uint8", "shape": [-1, H, W, C], "description": "samples"}},
            "sampler": sampler,
        },
        "serving_default": "generate",
    }


def _export_config(model, graph, sampler, options, default_steps, max_steps, ema):
    import kdiff

    config = dict(model.export_config())
    config.update(
        format=FORMAT_VERSION,
        kdiff_version=kdiff.__version__,
        value_range=list(model.data_range),
        ema=bool(ema),
        learned_variance=graph.output_channels != model.image_shape[2],
        generate={
            "sampler": sampler,
            "sampler_options": options,
            "default_steps": default_steps,
            "max_steps": max_steps,
        },
        signatures=_signature_description(model, graph, sampler),
    )
    return _jsonable(config)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _fold_in(seed, data):
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(data, tf.int64))


def _to_uint8(x, data_range):
    """``kdiff.sampling.to_uint8`` in the graph: float64 math, round half to even, clip."""
    low, high = data_range
    x = tf.cast(x, tf.float64)
    return tf.cast(tf.clip_by_value(tf.round((x - low) / (high - low) * 255.0), 0.0, 255.0), tf.uint8)


class _Graph:
    """The exported functions, traced from a kdiff model (a plain object: nothing here is saved
    but the functions and the variables they capture)."""

    def __init__(self, model, *, ema, sampler, options, max_steps):
        network = model.ema_network if ema else model.network
        self.variables = [getattr(v, "value", v) for v in network.variables]  # the tf.Variables
        self._model = model
        self._ema = ema
        self.sampler = sampler
        self.options = options
        self.max_steps = int(max_steps)
        self.family = model.family
        self.image_shape = tuple(int(d) for d in model.image_shape)
        self.num_classes = model.num_classes
        self.data_range = tuple(float(v) for v in model.data_range)
        H, W, C = self.image_shape
        self.output_name = "eps" if self.family == "ddpm" else "score"
        self.output_channels = C * (2 if getattr(model, "loss_name", None) == "hybrid" else 1)

        level_dtype = tf.int32 if self.family == "ddpm" else tf.float32
        denoise_spec = [
            tf.TensorSpec([None, H, W, C], tf.float32, name="x_t"),
            tf.TensorSpec([None], level_dtype, name="level"),
        ]
        generate_spec = [
            tf.TensorSpec([], tf.int64, name="seed"),
            tf.TensorSpec([], tf.int32, name="num_samples"),
            tf.TensorSpec([], tf.int32, name="steps"),
        ]
        if self.num_classes is not None:
            denoise_spec.append(tf.TensorSpec([None], tf.int32, name="y"))
            generate_spec.append(tf.TensorSpec([None], tf.int32, name="class_labels"))

            def denoise(x_t, level, y):
                return self._denoise(x_t, level, y)

            def generate(seed, num_samples, steps, class_labels):
                return self._generate(seed, num_samples, steps, class_labels)

        else:

            def denoise(x_t, level):
                return self._denoise(x_t, level, None)

            def generate(seed, num_samples, steps):
                return self._generate(seed, num_samples, steps, None)

        self.denoise = tf.function(denoise, input_signature=denoise_spec, autograph=False)
        self.generate = tf.function(generate, input_signature=generate_spec, autograph=False)
        self.denoise_concrete = self.denoise.get_concrete_function()
        self.generate_concrete = self.generate.get_concrete_function()

    # ------------------------------------------------------------------ checks

    # TF Serving feeds whatever a request holds: the signature's shapes are not enforced
    # there, so the checks run in the graph. They use raw Shape / Size ops of tensors whose
    # traced shape is not fully known (a batch of None): those are not folded into constants
    # by Grappler, while tf.rank / tf.shape of a known shape would be.

    def _images(self, x_t):
        """x_t checked to hold [batch, H, W, C] images, reshaped to exactly that rank."""
        expected = list(self.image_shape)
        shape = tf.raw_ops.Shape(input=x_t)
        padded = tf.concat([shape[1:], tf.zeros([3], tf.int32)], 0)[:3]
        ok = tf.logical_and(
            tf.reduce_all(tf.equal(padded, tf.constant(expected, tf.int32))),
            tf.equal(tf.raw_ops.Size(input=x_t), shape[0] * int(np.prod(expected))),
        )
        check = tf.debugging.Assert(
            ok,
            [f"Expected `x_t` of shape [batch, {', '.join(map(str, expected))}] (height, width, channels). "
             "Received: x_t.shape =", shape],
            summarize=8,
        )
        with tf.control_dependencies([check]):
            return tf.reshape(x_t, [-1] + expected)

    @staticmethod
    def _vector(tensor, name, length, length_name):
        """A [batch] input checked to hold ``length`` values, as a vector."""
        size = tf.raw_ops.Size(input=tensor)
        check = tf.debugging.Assert(
            tf.equal(size, length),
            [f"Expected `{name}` with one value per {length_name}. Received:", size, f"values for {length_name} =", length],
            summarize=8,
        )
        with tf.control_dependencies([check]):
            return tf.reshape(tensor, [-1])

    @staticmethod
    def _scalar(tensor, name):
        """A scalar input; [1] is read as a scalar, more values are an error naming the input."""
        check = tf.debugging.Assert(
            tf.equal(tf.raw_ops.Size(input=tf.reshape(tensor, [-1])), 1),
            [f"Expected `{name}` to be a scalar. Received: shape =", tf.raw_ops.Shape(input=tf.reshape(tensor, [-1]))],
            summarize=8,
        )
        with tf.control_dependencies([check]):
            return tf.reshape(tensor, [])

    def _check_levels(self, level):
        model = self._model
        if self.family == "ddpm":
            T = model.process.T
            return [
                tf.debugging.assert_greater_equal(level, 0, message=f"Expected `level` (timesteps t) in [0, {T - 1}]. Received: a negative t"),
                tf.debugging.assert_less(level, T, message=f"Expected `level` (timesteps t) in [0, {T - 1}]. Received: t >= {T}"),
            ]
        if self.family == "ncsn":
            return [
                tf.debugging.assert_all_finite(level, message="Expected finite noise levels `level` (sigma)"),
                tf.debugging.assert_positive(level, message="Expected noise levels `level` (sigma) > 0"),
            ]
        T = model.process.T
        return [
            tf.debugging.assert_all_finite(level, message="Expected finite times `level` (t)"),
            tf.debugging.assert_positive(level, message=f"Expected times `level` (t) in (0, {T}]. Received: t <= 0"),
            tf.debugging.assert_less_equal(level, tf.constant(T, tf.float32), message=f"Expected times `level` (t) in (0, {T}]. Received: t > {T}"),
        ]

    def _check_labels(self, labels, name):
        K = self.num_classes
        return [
            tf.debugging.assert_greater_equal(labels, 0, message=f"Expected `{name}` in [0, {K - 1}]. Received: a negative label"),
            tf.debugging.assert_less(labels, K, message=f"Expected `{name}` in [0, {K - 1}]. Received: a label >= {K}"),
        ]

    def _model_fn(self, y, sampler):
        return self._model.model_fn(ema=self._ema, y=y, sampler=sampler)

    # ------------------------------------------------------------------ denoise

    def _denoise(self, x_t, level, y):
        x_t = self._images(x_t)
        batch = tf.shape(x_t)[0]
        level = self._vector(level, "level", batch, "image of x_t")
        checks = self._check_levels(level)
        if y is not None:
            y = self._vector(y, "y", batch, "image of x_t")
            checks += self._check_labels(y, "y")
        with tf.control_dependencies(checks):
            x_t, level = tf.identity(x_t), tf.identity(level)
            y = None if y is None else tf.identity(y)
        out = tf.cast(self._model_fn(y, "ddpm")(x_t, level), tf.float32)
        return {self.output_name: out}

    # ------------------------------------------------------------------ generate

    def _generate(self, seed, num_samples, steps, class_labels):
        seed, num_samples, steps = (self._scalar(v, n) for v, n in ((seed, "seed"), (num_samples, "num_samples"), (steps, "steps")))
        if class_labels is not None:
            class_labels = tf.reshape(class_labels, [-1])
        checks = [
            tf.debugging.assert_positive(num_samples, message="Expected `num_samples` >= 1"),
            tf.debugging.assert_positive(steps, message=f"Expected `steps` in [1, {self.max_steps}]. Received: steps <= 0"),
            tf.debugging.assert_less_equal(
                steps, self.max_steps, message=f"Expected `steps` in [1, {self.max_steps}]. Received: steps > {self.max_steps}"
            ),
        ]
        y = None
        if class_labels is not None:
            count = tf.shape(class_labels)[0]
            checks.append(
                tf.debugging.Assert(
                    tf.logical_or(count <= 1, tf.equal(count, num_samples)),
                    ["Expected `class_labels` with num_samples values, one value (for all samples) or none "
                     "(the classes in turn). Received: len(class_labels) =", count, "num_samples =", num_samples],
                )
            )
            checks += self._check_labels(class_labels, "class_labels")
        with tf.control_dependencies(checks):
            num_samples, steps = tf.identity(num_samples), tf.identity(steps)
            if class_labels is not None:
                count = tf.shape(class_labels)[0]
                in_turn = tf.math.floormod(tf.range(num_samples), self.num_classes)
                y = tf.case(
                    [
                        (tf.equal(count, 0), lambda: in_turn),
                        (tf.equal(count, 1), lambda: tf.fill([num_samples], class_labels[0])),
                    ],
                    default=lambda: tf.identity(class_labels),
                )
        # Seeds as kdiff.sample derives them for its first (only) batch.
        batch_seed = _fold_in(tf.stack([seed, tf.constant(0, tf.int64)]), 0)
        start_seed, step_seed = _fold_in(batch_seed, 0), _fold_in(batch_seed, 1)
        shape = tf.concat([[num_samples], tf.constant(self.image_shape, tf.int32)], 0)
        model_fn = self._model_fn(y, self.sampler)
        if self.family == "ddpm":
            x = tf.random.stateless_normal(shape, seed=start_seed)
            x = self._ddim(model_fn, x, steps, step_seed)
        elif self.family == "ncsn":
            low, high = self.data_range
            x = tf.random.stateless_uniform(shape, start_seed, low, high)
            x = self._annealed_langevin(model_fn, x, steps, step_seed)
        else:
            x = self._model.process.prior_sampling(shape, seed=start_seed)
            x = self._predictor_corrector(model_fn, x, steps, step_seed)
        x = tf.debugging.assert_all_finite(
            x, message=f"{self.sampler}: the samples became NaN or Inf (a diverged network, or a step size too large)"
        )
        return {"images": _to_uint8(x, self.data_range)}

    @staticmethod
    def _loop(step, x, num_steps):
        def body(i, x):
            return i + 1, tf.ensure_shape(step(i, x), x.shape)

        _, x = tf.while_loop(lambda i, x: i < num_steps, body, (tf.constant(0, tf.int32), x))
        return x

    @staticmethod
    def _noise(x, seed, index):
        return tf.random.stateless_normal(tf.shape(x), seed=_fold_in(seed, index), dtype=x.dtype)

    def _ddim(self, eps_fn, x, steps, seed):
        """``kdiff.samplers.ddim`` with a runtime number of steps: t_i = i·(T // steps)."""
        schedule = self._model.process
        eta = self.options["eta"]
        abar_table = tf.constant(schedule.alphas_cumprod, tf.float64)
        stride = schedule.T // steps

        def step(i, x):
            j = steps - 1 - i  # index into the ascending timesteps
            t = j * stride
            abar = tf.gather(abar_table, t)
            abar_prev = tf.where(j > 0, tf.gather(abar_table, tf.maximum(t - stride, 0)), tf.constant(1.0, tf.float64))
            sigma = eta * tf.sqrt((1 - abar_prev) / (1 - abar)) * tf.sqrt(1 - abar / abar_prev)
            direction = tf.sqrt(tf.maximum(1 - abar_prev - sigma**2, 0.0))
            eps = eps_fn(x, tf.fill([tf.shape(x)[0]], t))
            a, a_prev = tf.cast(abar, x.dtype), tf.cast(abar_prev, x.dtype)
            x0 = (x - tf.sqrt(1.0 - a) * eps) / tf.sqrt(a)
            x_next = tf.sqrt(a_prev) * x0 + tf.cast(direction, x.dtype) * eps
            if eta > 0:
                x_next = x_next + tf.cast(sigma, x.dtype) * self._noise(x, seed, i)
            return x_next

        return self._loop(step, x, steps)

    def _annealed_langevin(self, score_fn, x, steps, seed):
        """``kdiff.samplers.annealed_langevin`` with ``steps`` Langevin steps per level."""
        sigmas = np.asarray(self._model.process, dtype=np.float64)
        step_lr, denoise = self.options["step_lr"], self.options["denoise"]
        alphas = step_lr * sigmas**2 / sigmas[-1] ** 2
        levels, drift, noise = sigmas, alphas / 2, np.sqrt(alphas)
        if denoise:
            levels = np.append(levels, sigmas[-1])
            drift = np.append(drift, sigmas[-1] ** 2)
            noise = np.append(noise, 0.0)
        levels, drift, noise = (tf.constant(v, tf.float32) for v in (levels, drift, noise))
        L = len(sigmas)
        total = steps * L + (1 if denoise else 0)

        def step(i, x):
            k = tf.minimum(i // steps, L)  # the denoising step is entry L
            level = tf.fill([tf.shape(x)[0]], tf.gather(levels, k))
            score = tf.cast(score_fn(x, level), x.dtype)
            return x + tf.gather(drift, k) * score + tf.gather(noise, k) * self._noise(x, seed, i)

        return self._loop(step, x, total)

    def _predictor_corrector(self, score_fn, x, steps, seed):
        """``kdiff.samplers.predictor_corrector`` (Euler–Maruyama predictor, Langevin corrector)."""
        from kdiff import _ops

        sde = self._model.process
        n_corrector = self.options.get("n_corrector", 0) if self.sampler == "predictor_corrector" else 0
        snr, eps, denoise = self.options.get("snr", 0.16), self.options["eps"], self.options["denoise"]
        h64 = (tf.constant(sde.T, tf.float64) - eps) / tf.cast(steps, tf.float64)
        h, sqrt_h = tf.cast(h64, x.dtype), tf.cast(tf.sqrt(h64), x.dtype)
        reverse = sde.reverse(score_fn)
        draws = n_corrector + 1

        def correct(x, t, z):
            grad = score_fn(x, t)
            batch = tf.shape(x)[0]
            grad_norm = tf.reduce_mean(tf.norm(tf.reshape(grad, [batch, -1]), axis=1))
            noise_norm = tf.reduce_mean(tf.norm(tf.reshape(z, [batch, -1]), axis=1))
            alpha = tf.cast(sde.langevin_alpha(t), x.dtype)
            step_size = 2.0 * alpha * tf.math.square(snr * tf.math.divide_no_nan(noise_norm, grad_norm))
            return x + _ops.batch_view(step_size, x) * grad + _ops.batch_view(tf.sqrt(2.0 * step_size), x) * z

        def step(i, x):
            t_value = tf.cast(tf.constant(sde.T, tf.float64) - h64 * tf.cast(i, tf.float64), x.dtype)
            t = tf.fill([tf.shape(x)[0]], t_value)
            for k in range(n_corrector):
                x = correct(x, t, self._noise(x, seed, i * draws + k))
            z = self._noise(x, seed, i * draws + n_corrector)
            if denoise:
                z = z * tf.cast(i < steps - 1, x.dtype)
            drift, diffusion = reverse.sde(x, t)
            return x - drift * h + _ops.batch_view(diffusion * sqrt_h, x) * z

        return self._loop(step, x, steps)


# ------------------------------------------------------------------------------- load


class ExportedModel:
    """A model written by ``kdiff.export.export``, loaded with TensorFlow alone.

    Attributes:
        path: the export's directory.
        config: the parsed ``config.json``.
        family: "ddpm", "ncsn" or "sde".
        image_shape: (height, width, channels).
        data_range: (low, high) of the model's data.
        num_classes: classes of a class-conditional model, else None.
        signatures: the SavedModel's signatures (``denoise``, ``generate``).
    """

    def __init__(self, path, config, loaded):
        self.path = path
        self.config = config
        self._loaded = loaded  # keeps the variables the signatures use alive
        self.signatures = loaded.signatures
        self.family = config["family"]
        self.image_shape = tuple(int(d) for d in config["image_shape"])
        self.data_range = tuple(float(v) for v in config["data_range"])
        self.num_classes = config.get("num_classes")
        self._denoise = loaded.signatures["denoise"]
        self._generate = loaded.signatures["generate"]
        self._output = "eps" if self.family == "ddpm" else "score"
        self._level_dtype = tf.int32 if self.family == "ddpm" else tf.float32

    def __repr__(self):
        return (
            f"ExportedModel(path={self.path!r}, family={self.family!r}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes})"
        )

    def denoise(self, x, level, y=None):
        """One network evaluation through the ``denoise`` signature.

        Args:
            x: float images [batch, H, W, C] (``x_t``).
            level: [batch] (or a scalar, for every image) timesteps (DDPM), σ's (NCSN) or
                times (ScoreSDE).
            y: class labels [batch] (or a scalar) for a class-conditional model.

        Returns:
            A float32 tensor: ε (DDPM; [ε, v] with a learned variance) or the score.
        """
        x = tf.cast(x, tf.float32)
        if tuple(x.shape[1:]) != self.image_shape or len(x.shape) != 4:
            raise ValueError(
                f"Expected `x` (signature input x_t) of shape [batch, {', '.join(map(str, self.image_shape))}]. "
                f"Received: shape={x.shape.as_list()}"
            )
        batch = tf.shape(x)[:1]
        level = tf.broadcast_to(tf.cast(level, self._level_dtype), batch)
        kwargs = {"x_t": x, "level": level}
        if self.num_classes is not None:
            if y is None:
                raise ValueError("Expected class labels `y` for a class-conditional model. Received: y=None")
            kwargs["y"] = tf.broadcast_to(tf.cast(y, tf.int32), batch)
        elif y is not None:
            raise ValueError(f"Expected no `y` for an unconditional model. Received: y={y!r}")
        return self._denoise(**kwargs)[self._output]

    def generate(self, num_samples, seed=0, steps=None, class_labels=None):
        """Samples with the in-graph ``generate`` signature.

        Args:
            num_samples: how many images.
            seed: a non-negative int; same seed, same images.
            steps: sampling steps (default: the export's ``default_steps``).
            class_labels: for a class-conditional model, an int or [num_samples] ints
                (default: the classes in turn).

        Returns:
            uint8 images [num_samples, H, W, C].
        """
        from kdiff import _checks

        generate = self.config.get("generate", {})
        num_samples = _checks.positive_int(num_samples, "num_samples")
        steps = generate.get("default_steps") if steps is None else steps
        steps = _checks.int_in_range(steps, "steps", 1, generate.get("max_steps"))
        seed = _checks.int_in_range(seed, "seed", 0, 2**63 - 1)
        kwargs = {
            "seed": tf.constant(seed, tf.int64),
            "num_samples": tf.constant(num_samples, tf.int32),
            "steps": tf.constant(steps, tf.int32),
        }
        if self.num_classes is not None:
            labels = np.zeros([0], np.int32) if class_labels is None else np.atleast_1d(np.asarray(class_labels, np.int32))
            kwargs["class_labels"] = tf.constant(labels, tf.int32)
        elif class_labels is not None:
            raise ValueError(f"Expected no `class_labels` for an unconditional model. Received: {class_labels!r}")
        return self._generate(**kwargs)["images"].numpy()

    def model_fn(self, y=None, sampler=None):
        """``fn(x, level)`` through ``denoise``, as ``DiffusionModel.model_fn``: with a learned
        variance it gives [ε, v] to "ddpm" and ε alone to the other samplers."""
        channels = self.image_shape[2]
        learned = bool(self.config.get("learned_variance"))
        owner, output, dtype = self, self._output, self._level_dtype  # owner keeps the variables alive

        def fn(x, level):
            kwargs = {"x_t": tf.cast(x, tf.float32), "level": tf.cast(level, dtype)}
            if y is not None:
                kwargs["y"] = tf.cast(y, tf.int32)
            out = tf.cast(owner._denoise(**kwargs)[output], x.dtype)
            return out[..., :channels] if learned and sampler != "ddpm" else out

        return fn

    def sampling_spec(self):
        """What ``kdiff.sample`` needs, so that every kdiff sampler runs on the export."""
        from kdiff import schedules, sde
        from kdiff.sampling import SamplingSpec

        config = self.config
        if self.family == "ddpm":
            process = {"schedule": schedules.from_config(config["schedule"])}
        elif self.family == "ncsn":
            process = {"sigmas": np.asarray(config["sigmas"], dtype=np.float64)}
        else:
            process = {"sde": sde.from_config(config["sde"])}
        learned = bool(config.get("learned_variance"))
        return SamplingSpec(
            make_model_fn=lambda y=None, sampler=None: self.model_fn(y=y, sampler=sampler),
            process=process,
            image_shape=self.image_shape,
            data_range=self.data_range,
            default_sampler=config.get("default_sampler") or "ddim",
            sampler_defaults={"ddpm": {"variance": "learned"}} if learned else {},
            num_classes=self.num_classes,
        )


def read_config(path):
    """Reads an export's ``config.json``, checking that ``path`` is a kdiff export.

    Raises:
        ValueError: naming the path when it is missing or not a kdiff export.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"Expected a kdiff export directory. Received: path={path!r} does not exist")
    if not os.path.isdir(path):
        raise ValueError(f"Expected a kdiff export directory. Received: path={path!r} is not a directory")
    missing = [name for name in ("saved_model.pb", CONFIG_NAME) if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise ValueError(
            f"Expected a kdiff export (saved_model.pb and {CONFIG_NAME}, written by kdiff.export.export). "
            f"Received: path={path!r} has no {' or '.join(missing)}"
        )
    try:
        with open(os.path.join(path, CONFIG_NAME), encoding="utf-8") as file:
            config = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"Expected a readable JSON {CONFIG_NAME} in path={path!r}. Received: {error}") from error
    if not isinstance(config, dict) or config.get("family") not in GENERATE_SAMPLERS or "format" not in config:
        raise ValueError(f"Expected a kdiff export {CONFIG_NAME} (with family and format) in path={path!r}.")
    if int(config["format"]) > FORMAT_VERSION:
        raise ValueError(
            f"Expected an export of format <= {FORMAT_VERSION} (this kdiff's). Received: format={config['format']} "
            f"in path={path!r}; upgrade kdiff to load it."
        )
    return config


def load(path):
    """Loads a directory written by ``export`` (TensorFlow only; no network classes needed).

    Args:
        path: the export's directory.

    Returns:
        An ``ExportedModel``.

    Raises:
        ValueError: naming the path when it is missing or not a kdiff export.
    """
    config = read_config(path)
    loaded = tf.saved_model.load(os.fspath(path))
    missing = [name for name in ("denoise", "generate") if name not in loaded.signatures]
    if missing:
        raise ValueError(f"Expected the signatures denoise and generate in path={os.fspath(path)!r}. Missing: {missing}")
    return ExportedModel(os.fspath(path), config, loaded)
