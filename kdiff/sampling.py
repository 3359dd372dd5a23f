"""``kdiff.sample``: one call from a model to uint8 images.

The model may be a SavedModel directory written by ``kdiff.export``, a trained kdiff
diffusion model, or a plain Python function with its process; the sampler is any entry
of ``kdiff.samplers.registry``. The batch itself is drawn by ``kdiff.samplers.draw.draw_batch``, the code an
export's ``generate`` signature runs too.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow as tf

from kdiff import checks, _random, export, kernels
from kdiff.process import as_process
from kdiff.samplers import registry
from kdiff.samplers.draw import (
    DrawCache,
    SamplingSpec,
    class_batches,
    draw_batch,
    quiet_retracing_warning,
    resolve_jit_compile,
    to_uint8,
)

__all__ = ["sample", "SamplingSpec", "spec_for", "to_uint8"]


class _StepRelay:
    """The per-step callback a traced sampling loop calls: forwards to ``target``, the
    current ``kdiff.sample`` call's progress (a cached loop outlives the call that traced it)."""

    def __init__(self):
        self.target = None

    def __call__(self, i, num_steps):
        if self.target is not None:
            self.target(i, num_steps)


def _verbosity():
    """The progress bar's Keras verbosity: a live bar on a terminal, one final line in a log."""
    from kdiff import _terminal

    return _terminal.keras_verbosity("auto")


class _Progress:
    """``kdiff.sample``'s progress bar: the sampler's steps over all batches, where the
    sampler reports them (fixed-step samplers); images otherwise (an adaptive ODE solver,
    an XLA-compiled loop). Where stdout is no terminal, one line when it is done."""

    def __init__(self, num_samples, num_batches):
        self.num_samples, self.num_batches = num_samples, num_batches
        self.batches_done, self.bar, self.counts_steps = 0, None, False

    def step(self, i, num_steps):
        if self.bar is None:
            import keras

            self.bar = keras.utils.Progbar(self.num_batches * num_steps, unit_name="step", verbose=_verbosity())
        self.counts_steps = True
        self.bar.update(self.batches_done * num_steps + i + 1)

    def batch_done(self, count):
        self.batches_done += 1
        if self.counts_steps:
            return
        if self.bar is None:
            import keras

            self.bar = keras.utils.Progbar(self.num_samples, unit_name="image", verbose=_verbosity())
        self.bar.add(count)


def _spec_for_callable(model, schedule, sde, sigmas, image_shape, data_range):
    if image_shape is None or len(tuple(image_shape)) < 1:
        raise ValueError(
            "Expected `image_shape` like (height, width, channels) for a callable model. "
            f"Received: image_shape={image_shape!r}"
        )
    given = {k: v for k, v in (("schedule", schedule), ("sde", sde), ("sigmas", sigmas)) if v is not None}
    if len(given) != 1:
        raise ValueError(
            "Expected the process of a callable model: exactly one of `schedule` (eps_fn), `sigmas` or "
            f"`sde` (score_fn). Received: {sorted(given) or 'none'}"
        )
    (name, value), = given.items()
    process = as_process(value, name)
    if process.kind != name:
        raise ValueError(
            f"Expected `{name}` to be a {name} process. Received: {name}={value!r} (a {process.kind})"
        )
    return SamplingSpec(
        make_model_fn=lambda y=None, sampler=None: model,
        process=process,
        image_shape=tuple(image_shape),
        data_range=data_range,
    )


def _check_start(x_T, num_samples, image_shape):
    """``kdiff.sample``'s ``x_T``, checked: a finite float32 array [num_samples, H, W, C].

    Args:
        x_T: None, a numpy array or a tensor.
        num_samples: N.
        image_shape: (H, W, C) of the model.

    Returns:
        A float32 numpy array, or None.

    Raises:
        ValueError: naming ``x_T``, what was expected and what was received.
    """
    if x_T is None:
        return None
    expected = [num_samples, *image_shape]
    array = x_T.numpy() if tf.is_tensor(x_T) else np.asarray(x_T)
    if list(array.shape) != expected:
        raise ValueError(f"Expected `x_T` of shape [N, H, W, C] = {expected}. Received: shape={list(array.shape)}")
    if array.dtype != np.float32:
        raise ValueError(
            f"Expected `x_T` of dtype float32 (the starting noise). Received: dtype={array.dtype} "
            "(convert it first, e.g. x_T.astype(np.float32))"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"Expected a finite `x_T`. Received: {int(np.sum(~np.isfinite(array)))} NaN or Inf values")
    return array


def spec_for(model, *, schedule=None, sde=None, sigmas=None, image_shape=None, data_range=None):
    """The ``SamplingSpec`` of a SavedModel path, a kdiff model, or a Python callable.

    Args:
        model: an export directory, an object with ``sampling_spec()``, or a callable.
        schedule, sde, sigmas: the process of a callable model (exactly one).
        image_shape: (height, width, channels) of a callable model's images.
        data_range: (low, high) of a callable model's data (default: the process's).

    Returns:
        A ``SamplingSpec``.
    """
    if isinstance(model, (str, os.PathLike)):
        return export.load(model).sampling_spec()
    if hasattr(model, "sampling_spec"):
        return model.sampling_spec()
    if callable(model):
        return _spec_for_callable(model, schedule, sde, sigmas, image_shape, data_range)
    raise ValueError(
        "Expected `model` to be a SavedModel directory, a kdiff diffusion model, or a callable "
        f"eps_fn(x, t) / score_fn(x, s). Received: model={model!r}"
    )


def sample(
    model,
    num_samples,
    *,
    sampler=None,
    steps=None,
    seed=0,
    batch_size=None,
    return_trajectory=False,
    schedule=None,
    sde=None,
    sigmas=None,
    image_shape=None,
    data_range=None,
    class_labels=None,
    guidance_scale=None,
    jit_compile="auto",
    precision=None,
    progress=False,
    recipe=None,
    x_T=None,
    **sampler_kwargs,
):
    """Generates ``num_samples`` uint8 images from a model in one call.

    Args:
        model: a SavedModel directory written by ``kdiff.export`` (only TensorFlow is
            needed to load it; a path is loaded on every call — for several calls,
            ``kdiff.load(path)`` once and pass what it returns, which keeps the loaded
            model and its compiled sampling loops), an ``ExportedModel``, a trained
            ``kdiff.DDPM`` / ``NCSN`` / ``ScoreSDE``
            (sampled with its EMA weights), or a Python callable — ``eps_fn(x, t)`` for
            "ddpm" / "ddim", ``score_fn(x, s)`` for the score-based samplers.
        num_samples: how many images.
        sampler: a name in ``kdiff.samplers.registry.names()`` ("ddpm", "ddim",
            "annealed_langevin", "euler_maruyama", "predictor_corrector",
            "probability_flow", and any registered since); None for the model's default
            (the process's: "ddim" for a schedule).
        steps: sampling steps (for "annealed_langevin": steps per noise level; for
            "probability_flow": steps of a fixed-step ``method``). None: the registry's
            default (DDIM 50, annealed Langevin 100, all T for DDPM, N for the SDE
            samplers).
        seed: same seed, same batch size → same images.
        batch_size: images per batch (default: min(num_samples, 64)).
        return_trajectory: also return the intermediate images.
        schedule, sde, sigmas: the process of a callable model (exactly one of them).
        image_shape: (height, width, channels) of one image, for a callable model.
        data_range: (low, high) a callable model's data lives in; default the process's:
            (−1, 1) for a schedule or an SDE, (0, 1) for NCSN's σ's.
        class_labels: for a class-conditional model, an int or [num_samples] ints
            (default: the classes in turn).
        guidance_scale: classifier-free guidance's s (``kdiff.samplers.guidance``), for a
            class-conditional model trained with a null class: ε_u + s·(ε_c − ε_u), one
            network call on a doubled batch per step. None or 1: the conditional model
            alone; 0: the unconditional one; above 1 (diffusers' usual 3–8 for images):
            samples more typical of their class, less varied.
        jit_compile: XLA for the sampling loop: True, False or "auto" (GPU/TPU only).
        precision: what the network computes in: None (the model's own: float32, or
            an export's), "float32", or "bfloat16" — a kdiff model's network then runs
            under the ``mixed_bfloat16`` policy with the same weights, while the
            sampler's state and updates stay float32 (faster on CPUs with AVX512-BF16
            or AMX, and on GPUs / TPUs; ε differs from float32's by about 2 %, so
            check your model's samples).
        progress: show a progress bar of the sampler's steps, over all batches (of the
            images for samplers that do not count steps: an adaptive ODE solver, an
            XLA-compiled loop); where stdout is no terminal (a log), one line at the end.
        recipe: a name in ``kdiff.samplers.recipes.names()`` ("ddpm_1000", "ddim_50",
            "score_sde_ve_pc", "ncsn_annealed_langevin", …): the sampler, steps and
            options of a reference run; ``steps`` and sampler options given here
            override the recipe's, and ``sampler`` may only name the recipe's own.
        x_T: the starting noise, a float32 array [num_samples, H, W, C] (numpy, or a
            tensor), instead of the draw from the model's prior — to compare a run with
            another implementation's on the same noise (diffusers' ``latents``). Batches
            take their slices of it; ``seed`` still drives the noise an ancestral sampler
            adds on the way.
        **sampler_kwargs: the sampler's options (``kdiff.samplers.registry.get(name).options()``:
            e.g. DDIM's ``eta``, ``variance``, ``clip_x0``, ``predictor``, ``snr``, ``grid``,
            ``denoise``, ``method``). DDPM and DDIM clip the predicted x₀ to the model's
            data range by default (as diffusers does); ``clip_x0=None`` turns it off.

    Returns:
        uint8 images [N, H, W, C]; with ``return_trajectory``, also a uint8 array
        [num_states, N, H, W, C] of the intermediate states (start included).

    Raises:
        ValueError: on unknown sampler names or options, arguments that do not fit the
            sampler, or an ``x_T`` of another shape or dtype or with NaN / Inf, naming them.
        kdiff.samplers.NonFiniteSampleError: when sampling produces NaN or Inf.
    """
    num_samples = checks.positive_int(num_samples, "num_samples")
    batch_size = min(num_samples, 64) if batch_size is None else checks.positive_int(batch_size, "batch_size")
    if sampler is not None:
        registry.get(sampler)  # an unknown name fails first, naming the registered ones
    spec = spec_for(model, schedule=schedule, sde=sde, sigmas=sigmas, image_shape=image_shape, data_range=data_range)
    spec = spec.with_precision(precision).with_guidance(guidance_scale)
    entry, options = spec.request(sampler, steps, sampler_kwargs, recipe)
    labels = class_batches(class_labels, num_samples, spec.num_classes)
    start = _check_start(x_T, num_samples, spec.image_shape)
    base = _random.seed_pair(seed)

    num_batches = -(-num_samples // batch_size)
    progress = _Progress(num_samples, num_batches) if progress else None

    def run(batch_seed, count, y=None, x=None, compiled=True, relay=None):
        return draw_batch(
            spec, entry, options, count, batch_seed, y, return_trajectory=return_trajectory, compiled=compiled,
            callback=relay, x_T=x,
        )

    graph, dynamic_count, relay = run, False, None
    if entry.runs_in_graph(options):
        jit = resolve_jit_compile(jit_compile)
        steps_reported = progress is not None and not jit  # an XLA loop cannot call Python: images are counted
        key = DrawCache.key(
            entry.name, options, spec.data_range, bool(return_trajectory), jit, spec.precision, steps_reported,
            spec.guidance_scale, kernels.switched_off(),
        )

        def build():
            step_relay = _StepRelay() if steps_reported else None
            return tf.function(functools.partial(run, relay=step_relay), jit_compile=jit), step_relay

        graph, relay = build() if spec.draw_cache is None else spec.draw_cache.function(key, build)
        dynamic_count = not jit  # a tensor count: one trace for every batch size (XLA needs static shapes)
    elif progress is not None:
        relay = _StepRelay()
        graph = functools.partial(run, relay=relay)
    if relay is not None:
        relay.target = progress.step
    images, trajectories = [], []
    try:
        for index, first in enumerate(range(0, num_samples, batch_size)):
            batch_seed = _random.fold_in(base, index)
            count = min(batch_size, num_samples - first)
            y = None if labels is None else tf.constant(labels[first : first + count], tf.int32)
            x = None if start is None else tf.constant(start[first : first + count])
            with quiet_retracing_warning():
                out = graph(batch_seed, tf.constant(count, tf.int32) if dynamic_count else count, y, x)
            final = out[0] if return_trajectory else out
            if not bool(tf.reduce_all(tf.math.is_finite(final))):
                run(batch_seed, count, y, x)  # called eagerly, the sampler raises naming the failing step
                raise FloatingPointError(f"{entry.name}: batch {index} of the samples is NaN or Inf.")
            images.append(to_uint8(final, spec.data_range))
            if return_trajectory:
                trajectories.append(np.stack([to_uint8(s, spec.data_range) for s in out[1]]))
            if progress is not None:
                progress.batch_done(count)
    finally:
        if relay is not None:
            relay.target = None  # a cached loop keeps its relay, not this call's bar
    result = np.concatenate(images)
    if return_trajectory:
        return result, np.concatenate(trajectories, axis=1)
    return result
