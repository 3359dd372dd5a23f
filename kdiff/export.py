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
    int32 scalar, ``steps`` int32 scalar (the sampler's steps argument: DDIM steps,
    Langevin steps per noise level, predictor steps …), and ``class_labels`` int32
    [num_samples], [1] (one class for all) or [0] (the classes in turn) for a
    class-conditional model; ``guidance_scale`` float32 scalar for a model trained with a
    null class (classifier-free guidance, ``kdiff.samplers.guidance``: 1 is the conditional model,
    0 the unconditional one; ``denoise`` then accepts the null class as ``y``). Output
    ``images`` uint8 [num_samples, H, W, C], mapped from
    ``data_range`` as ``kdiff.samplers.draw.to_uint8`` does. ``serving_default`` is ``generate``.

``generate`` holds no sampling code of its own: it traces ``kdiff.samplers.draw.draw_batch`` —
the registry's sampler function, the code ``kdiff.sample`` runs — with ``steps`` and
``num_samples`` as graph tensors. Every sampler computes its per-step tables in
TensorFlow (``kdiff._steps``), so one traced loop serves every number of steps; any
registered sampler that accepts the model's process and runs in a graph can be the
export's (``kdiff.samplers.registry.Sampler.in_graph``). Randomness is stateless and derived from
``seed`` exactly as ``kdiff.sample`` derives it, so ``generate`` gives the images of
``kdiff.sample(model, n, sampler=<the export's sampler>, steps=k, seed=s)`` for n ≤ 64
(one batch), up to float round-off.

The signatures are plain graphs (no XLA: XLA-compiled SavedModels fail in TF Serving's
GPU image, tensorflow/serving#2214); their inputs are checked in the graph, so a bad
request gets an error naming the input.

``load(path)`` needs only TensorFlow (not the network's Python classes): it returns an
``ExportedModel`` whose ``sampling_spec()`` lets every kdiff sampler run on the
``denoise`` signature — ``kdiff.sample("path/to/export", 16, sampler="ddpm")``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from kdiff import _random, atomic_io, checks, export_config, kernels
from kdiff.export_config import CONFIG_NAME, FORMAT_VERSION
from kdiff.process import from_model_config
from kdiff.samplers import registry
from kdiff.samplers.draw import DrawCache, SamplingSpec, draw_batch, to_uint8_tensor

__all__ = ["export", "load", "read_config", "ExportedModel", "FORMAT_VERSION"]

UNBOUNDED_MAX_STEPS = 1000  # `generate`'s largest steps where the process sets no limit (NCSN)


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
    precision="float32",
    overwrite=False,
    source=None,
):
    """Writes a diffusion model as a TF Serving SavedModel with ``denoise`` and ``generate``.

    The directory appears complete or not at all: the model is written to a temporary
    directory beside ``path`` and renamed into place.

    Args:
        model: a ``kdiff.DDPM``, ``NCSN`` or ``ScoreSDE`` (``kdiff.diffusion``).
        path: the directory to write (local file system).
        ema: export the EMA weights (True) or the raw network's.
        default_steps: the steps ``ExportedModel.generate`` uses when none are given
            (default: the registry's, as ``kdiff.sample``: 50 DDIM steps, 100 Langevin
            steps per level, N SDE steps).
        sampler: the sampler of ``generate``: any name in ``kdiff.samplers.registry`` that fits
            the model's process and runs in a graph (default: the process's, as
            ``kdiff.sample``).
        sampler_options: that sampler's options, fixed in the graph (the function's
            keyword arguments; defaults as ``kdiff.sample``'s, so DDPM / DDIM clip x₀ to
            the data range unless ``{"clip_x0": None}``).
        max_steps: the largest ``steps`` ``generate`` accepts (default: the process's
            ``max_steps``, T or N, or 1000 where it has none).
        precision: what the exported network computes in: "float32", or "bfloat16"
            (``model.inference_network``: the same float32 weights, bfloat16 arithmetic;
            inputs, outputs and the sampler's state stay float32). Recorded in
            ``config.json``; ``kdiff.sample`` on the export runs in it.
        overwrite: replace an existing non-empty ``path``.
        source: where the model came from, recorded as ``config.json``'s ``source`` (a
            JSON-serializable dict, e.g. ``{"kind": "diffusers", "path": "google/ddpm-celebahq-256",
            "model_type": "UNet2DModel", ...}`` as ``kdiff convert`` writes); None records none.

    Returns:
        The absolute path written.

    Raises:
        ValueError: on a model that is not a kdiff diffusion model, an unknown sampler or
            option, or an existing non-empty ``path`` without ``overwrite``.
    """
    _check_model(model)
    spec = model.sampling_spec().with_precision(precision)
    entry, options = spec.request(sampler, None, _options_dict(sampler_options), name="`sampler_options`")
    if entry.steps_arg is None:
        raise ValueError(
            f"Expected a sampler with a steps argument for `generate`. Received: sampler={entry.name!r}"
        )
    options.pop(entry.steps_arg, None)
    if not entry.runs_in_graph(options):
        raise ValueError(
            f"Expected a sampler that runs in a graph for `generate` (an adaptive ODE solver runs "
            f"outside it; kdiff.sample runs it on the exported `denoise`). Received: sampler={entry.name!r}, "
            f"options={options}"
        )
    max_steps = _max_steps(spec.process, max_steps)
    if default_steps is None:
        default_steps = entry.steps_for(spec.process)
        if default_steps is None:
            raise ValueError(
                f"Expected `default_steps` for sampler {entry.name!r} (it has no registry default). Received: None"
            )
    default_steps = checks.int_in_range(default_steps, "default_steps", 1, max_steps)
    if source is not None and not isinstance(source, dict):
        raise ValueError(f"Expected `source` to be a dict or None. Received: source={source!r}")
    path = os.path.abspath(os.fspath(path))
    _check_target(path, overwrite)

    with kernels.without_fused_kernels():  # TensorFlow's own ops only: TF Serving loads them
        graph = _Graph(model, spec, entry, options, ema=bool(ema), max_steps=max_steps, precision=spec.precision)
    config = _export_config(model, graph, default_steps, ema)
    if source is not None:
        config["source"] = _jsonable(source)
        try:  # a value JSON cannot hold fails here, before anything is written
            json.dumps(config["source"])
        except TypeError as error:
            raise ValueError(f"Expected a JSON-serializable `source`. Received: {error}") from None
    # What the SavedModel holds: the network's variables (which the functions capture) and
    # the two functions. The Keras network itself is not saved, so loading needs no classes.
    module = tf.Module(name="kdiff_export")
    module.network_variables = graph.variables
    module.denoise = graph.denoise_concrete
    module.generate = graph.generate_concrete
    signatures = {
        "denoise": graph.denoise_concrete,
        "generate": graph.generate_concrete,
        "serving_default": graph.generate_concrete,
    }
    with atomic_io.atomic_directory(path, before_replace=lambda p: _check_target(p, overwrite)) as directory:
        with kernels.without_fused_kernels():
            tf.saved_model.save(module, directory, signatures=signatures)
        with open(os.path.join(directory, CONFIG_NAME), "w", encoding="utf-8") as file:
            json.dump(config, file, indent=2, sort_keys=False)
            file.write("\n")
    return path


def _options_dict(sampler_options):
    """``sampler_options`` as a dict (None → {}), or ValueError."""
    if sampler_options is None:
        return {}
    if not isinstance(sampler_options, dict):
        raise ValueError(f"Expected `sampler_options` to be a dict. Received: sampler_options={sampler_options!r}")
    return dict(sampler_options)


def _check_model(model):
    if not hasattr(model, "sampling_spec") or not hasattr(model, "export_config") or not hasattr(model, "model_fn"):
        raise ValueError(
            "Expected `model` to be a kdiff diffusion model (kdiff.diffusion.DDPM, NCSN or "
            f"ScoreSDE). Received: model={model!r}"
        )


def _max_steps(process, max_steps):
    limit = process.max_steps
    if max_steps is None:
        return limit if limit is not None else UNBOUNDED_MAX_STEPS
    return checks.int_in_range(max_steps, "max_steps", 1, limit)


def _check_target(path, overwrite):
    if overwrite or not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
        return
    raise ValueError(
        f"Expected a new or empty directory to export to. Received: path={path!r} exists and is "
        "not empty (pass overwrite=True to replace it)."
    )


# --------------------------------------------------------------------------- the graph


def _signature_description(model, graph):
    H, W, C = model.image_shape
    process, entry = graph.spec.process, graph.entry
    denoise_inputs = {
        "x_t": {"dtype": "float32", "shape": [-1, H, W, C], "description": "noisy images"},
        "level": {"dtype": process.level_dtype.name, "shape": [-1], "description": process.level_description},
    }
    generate_inputs = {
        "seed": {"dtype": "int64", "shape": [], "description": "same seed, same images"},
        "num_samples": {"dtype": "int32", "shape": [], "description": "how many images (>= 1)"},
        "steps": {
            "dtype": "int32",
            "shape": [],
            "description": f"{entry.name}'s {entry.steps_arg}, in [1, {graph.max_steps}]",
        },
    }
    if model.num_classes is not None:
        top = model.num_classes - (1 if model.null_label is None else 0)
        null = "" if model.null_label is None else f" ({model.null_label}: the null class, unconditional)"
        denoise_inputs["y"] = {"dtype": "int32", "shape": [-1], "description": f"class labels in [0, {top}]{null}"}
        generate_inputs["class_labels"] = {
            "dtype": "int32",
            "shape": [-1],
            "description": f"class labels in [0, {model.num_classes - 1}]: one per sample, "
            "one for all samples, or none (the classes in turn)",
        }
    if model.null_label is not None:
        generate_inputs["guidance_scale"] = {
            "dtype": "float32",
            "shape": [],
            "description": "classifier-free guidance scale s >= 0: eps_u + s (eps_c - eps_u); 1: conditional",
        }
    output, channels = graph.output_name, graph.output_channels
    if output == "eps":
        description = "predicted noise" + (" and variance interpolation [eps, v]" if channels != C else "")
    else:
        description = "score, the gradient of log p(x_t) at the level"
    return {
        "denoise": {
            "inputs": denoise_inputs,
            "outputs": {output: {"dtype": "float32", "shape": [-1, H, W, channels], "description": description}},
        },
        "generate": {
            "inputs": generate_inputs,
            "outputs": {"images": {"dtype": "uint8", "shape": [-1, H, W, C], "description": "samples"}},
            "sampler": entry.name,
        },
        "serving_default": "generate",
    }


def _export_config(model, graph, default_steps, ema):
    import kdiff

    config = dict(model.export_config())
    config.update(
        format=FORMAT_VERSION,
        kdiff_version=kdiff.__version__,
        value_range=list(graph.spec.data_range),
        ema=bool(ema),
        precision=graph.precision,
        learned_variance=graph.output_channels != model.image_shape[2],
        generate={
            "sampler": graph.entry.name,
            "sampler_options": graph.options,
            "default_steps": default_steps,
            "max_steps": graph.max_steps,
        },
        signatures=_signature_description(model, graph),
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


class _Graph:
    """The exported functions, traced from a kdiff model (a plain object: nothing here is saved
    but the functions and the variables they capture)."""

    def __init__(self, model, spec, entry, options, *, ema, max_steps, precision="float32"):
        network = model.inference_network(ema, precision)  # eagerly: a copy takes the current weights
        self.variables = [getattr(v, "value", v) for v in network.variables]  # the tf.Variables
        self._model = model
        self._ema = ema
        self.precision = precision
        self.spec = SamplingSpec(
            make_model_fn=lambda y=None, sampler=None: model.model_fn(ema=ema, y=y, sampler=sampler, precision=precision),
            precision=precision,
            process=spec.process,
            image_shape=spec.image_shape,
            data_range=spec.data_range,
            sampler_defaults=spec.sampler_defaults,
            num_classes=spec.num_classes,
            null_label=spec.null_label,
        )
        self.entry = entry
        self.options = options
        self.max_steps = int(max_steps)
        self.image_shape = spec.image_shape
        self.num_classes = spec.num_classes
        self.null_label = spec.null_label
        H, W, C = self.image_shape
        self.output_name = spec.process.model_output
        self.output_channels = C * (2 if getattr(model, "loss_name", None) == "hybrid" else 1)

        denoise_spec = [
            tf.TensorSpec([None, H, W, C], tf.float32, name="x_t"),
            tf.TensorSpec([None], spec.process.level_dtype, name="level"),
        ]
        generate_spec = [
            tf.TensorSpec([], tf.int64, name="seed"),
            tf.TensorSpec([], tf.int32, name="num_samples"),
            tf.TensorSpec([], tf.int32, name="steps"),
        ]
        if self.null_label is not None:
            denoise_spec.append(tf.TensorSpec([None], tf.int32, name="y"))
            generate_spec.append(tf.TensorSpec([None], tf.int32, name="class_labels"))
            generate_spec.append(tf.TensorSpec([], tf.float32, name="guidance_scale"))

            def denoise(x_t, level, y):
                return self._denoise(x_t, level, y)

            def generate(seed, num_samples, steps, class_labels, guidance_scale):
                return self._generate(seed, num_samples, steps, class_labels, guidance_scale)

        elif self.num_classes is not None:
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

    def _check_labels(self, labels, name, allow_null=False):
        K = self.num_classes + (1 if allow_null and self.null_label is not None else 0)
        return [
            tf.debugging.assert_greater_equal(labels, 0, message=f"Expected `{name}` in [0, {K - 1}]. Received: a negative label"),
            tf.debugging.assert_less(labels, K, message=f"Expected `{name}` in [0, {K - 1}]. Received: a label >= {K}"),
        ]

    # ------------------------------------------------------------------ denoise

    def _denoise(self, x_t, level, y):
        x_t = self._images(x_t)
        batch = tf.shape(x_t)[0]
        level = self._vector(level, "level", batch, "image of x_t")
        checks = self.spec.process.level_checks(level)
        if y is not None:
            y = self._vector(y, "y", batch, "image of x_t")
            checks += self._check_labels(y, "y", allow_null=True)
        with tf.control_dependencies(checks):
            x_t, level = tf.identity(x_t), tf.identity(level)
            y = None if y is None else tf.identity(y)
        model_fn = self._model.model_fn(ema=self._ema, y=y, sampler="ddpm", precision=self.precision)
        out = tf.cast(model_fn(x_t, level), tf.float32)
        return {self.output_name: out}

    # ------------------------------------------------------------------ generate

    def _generate(self, seed, num_samples, steps, class_labels, guidance_scale=None):
        seed, num_samples, steps = (self._scalar(v, n) for v, n in ((seed, "seed"), (num_samples, "num_samples"), (steps, "steps")))
        spec = self.spec
        if guidance_scale is not None:
            guidance_scale = self._scalar(guidance_scale, "guidance_scale")
            check = tf.debugging.Assert(
                tf.logical_and(guidance_scale >= 0.0, tf.math.is_finite(guidance_scale)),
                ["Expected `guidance_scale` a finite number >= 0. Received: guidance_scale =", guidance_scale],
            )
            with tf.control_dependencies([check]):
                spec = spec.with_guidance(tf.identity(guidance_scale))
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
        # The seed of kdiff.sample's first (only) batch, and the library's own batch.
        batch_seed = _random.fold_in(_random.seed_pair(tf.stack([seed, tf.constant(0, tf.int64)])), 0)
        options = {**self.options, self.entry.steps_arg: steps}
        x = draw_batch(spec, self.entry, options, num_samples, batch_seed, y)
        x = tf.debugging.assert_all_finite(
            x, message=f"{self.entry.name}: the samples became NaN or Inf (a diverged network, or a step size too large)"
        )
        return {"images": to_uint8_tensor(x, self.spec.data_range)}


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
        precision: what the exported network computes in ("float32" or "bfloat16").
        signatures: the SavedModel's signatures (``denoise``, ``generate``).
    """

    def __init__(self, path, config, loaded):
        self.path = path
        self.config = config
        self._loaded = loaded  # keeps the variables the signatures use alive
        self.signatures = loaded.signatures
        self.family = config["family"]
        self.process = from_model_config(config, f"export config of {path!r}")
        self.image_shape = tuple(int(d) for d in config["image_shape"])
        self.data_range = tuple(float(v) for v in config["data_range"])
        self.num_classes = config.get("num_classes")
        self.null_label = config.get("null_label")  # classifier-free guidance's null class
        self.precision = config.get("precision", "float32")  # what the exported network computes in
        self._denoise = loaded.signatures["denoise"]
        self._generate = loaded.signatures["generate"]
        self._output = self.process.model_output
        self._level_dtype = self.process.level_dtype
        self._draw_cache = DrawCache()  # kdiff.sample's traced loops around `denoise`

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

    def generate(self, num_samples, seed=0, steps=None, class_labels=None, guidance_scale=None):
        """Samples with the in-graph ``generate`` signature.

        Args:
            num_samples: how many images.
            seed: a non-negative int; same seed, same images.
            steps: sampling steps (default: the export's ``default_steps``).
            class_labels: for a class-conditional model, an int or [num_samples] ints
                (default: the classes in turn).
            guidance_scale: classifier-free guidance's s, for a model with a null class
                (None: 1, the conditional model).

        Returns:
            uint8 images [num_samples, H, W, C].
        """
        from kdiff.samplers import guidance

        generate = self.config.get("generate", {})
        num_samples = checks.positive_int(num_samples, "num_samples")
        steps = generate.get("default_steps") if steps is None else steps
        steps = checks.int_in_range(steps, "steps", 1, generate.get("max_steps"))
        seed = checks.int_in_range(seed, "seed", 0, 2**63 - 1)
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
        scale = guidance.check_scale(guidance_scale, self.num_classes, self.null_label)
        if self.null_label is not None:
            kwargs["guidance_scale"] = tf.constant(1.0 if scale is None else scale, tf.float32)
        return self._generate(**kwargs)["images"].numpy()

    def model_fn(self, y=None, sampler=None):
        """``fn(x, level)`` through ``denoise``, as ``DiffusionModel.model_fn``: with a learned
        variance it gives [ε, v] to the samplers that use it ("ddpm") and ε alone to the others."""
        channels = self.image_shape[2]
        learned = bool(self.config.get("learned_variance"))
        owner, output, dtype = self, self._output, self._level_dtype  # owner keeps the variables alive

        def fn(x, level):
            kwargs = {"x_t": tf.cast(x, tf.float32), "level": tf.cast(level, dtype)}
            if y is not None:
                kwargs["y"] = tf.cast(y, tf.int32)
            out = tf.cast(owner._denoise(**kwargs)[output], x.dtype)
            return out[..., :channels] if learned and not registry.uses_learned_variance(sampler) else out

        return fn

    def sampling_spec(self):
        """What ``kdiff.sample`` needs, so that every kdiff sampler runs on the export: with
        the model's ``default_sampler`` and ``sampler_defaults`` as ``config.json`` holds them
        (an export written before ``sampler_defaults`` was recorded gets a learned
        variance's, as then)."""
        learned = bool(self.config.get("learned_variance"))
        defaults = self.config.get("sampler_defaults")
        if defaults is None:
            defaults = registry.learned_variance_defaults() if learned else {}
        return SamplingSpec(
            make_model_fn=lambda y=None, sampler=None: self.model_fn(y=y, sampler=sampler),
            process=self.process,
            image_shape=self.image_shape,
            data_range=self.data_range,
            default_sampler=self.config.get("default_sampler"),
            sampler_defaults=defaults,
            num_classes=self.num_classes,
            null_label=self.null_label,
            draw_cache=self._draw_cache,
            precision=self.precision,
        )


def read_config(path):
    """Reads an export's ``config.json``, checking that ``path`` is a kdiff export whose process builds.

    Args:
        path: the export's directory.

    Returns:
        The config, a dict (``kdiff.export_config.read_config``'s, its process checked).

    Raises:
        ValueError: naming the path when it is missing or not a kdiff export.
    """
    config = export_config.read_config(path)
    from_model_config(config, f"{CONFIG_NAME} in path={os.fspath(path)!r}")  # raises naming the path
    return config


def load(path):
    """Loads a directory written by ``export`` (TensorFlow only; no network classes needed).

    Args:
        path: the export's directory.

    Returns:
        An ``ExportedModel``.

    Raises:
        ValueError: naming the path when it is missing, not a kdiff export, or its
            SavedModel cannot be read.
    """
    config = read_config(path)
    try:
        loaded = tf.saved_model.load(os.fspath(path))
    except (OSError, tf.errors.OpError, ValueError) as error:  # a truncated or garbage saved_model.pb
        raise ValueError(
            f"Expected a readable SavedModel in path={os.fspath(path)!r} (saved_model.pb and variables/). "
            f"Received: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else error!r}. "
            "Export the model again (kdiff.export.export, or the pipeline's train stage)."
        ) from error
    missing = [name for name in ("denoise", "generate") if name not in loaded.signatures]
    if missing:
        raise ValueError(f"Expected the signatures denoise and generate in path={os.fspath(path)!r}. Missing: {missing}")
    return ExportedModel(os.fspath(path), config, loaded)
