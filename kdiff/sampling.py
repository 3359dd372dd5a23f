"""``kdiff.sample``: one call from a model to uint8 images."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from kdiff import _checks, _loop, _random, samplers
from kdiff.schedules import Schedule
from kdiff.sde import SDE

__all__ = ["sample", "SAMPLERS", "SamplingSpec", "to_uint8"]

# sampler name → (the function, the process it needs: "schedule" | "sigmas" | "sde")
SAMPLERS = {
    "ddpm": (samplers.ddpm, "schedule"),
    "ddim": (samplers.ddim, "schedule"),
    "annealed_langevin": (samplers.annealed_langevin, "sigmas"),
    "euler_maruyama": (samplers.euler_maruyama, "sde"),
    "predictor_corrector": (samplers.predictor_corrector, "sde"),
    "probability_flow": (samplers.probability_flow, "sde"),
}


def to_uint8(x, data_range=(-1.0, 1.0)):
    """Maps samples in ``data_range`` to uint8 pixels (clipped, rounded).

    Args:
        x: float array or tensor.
        data_range: (low, high) of the model's data.

    Returns:
        A uint8 numpy array shaped like ``x``.
    """
    low, high = data_range
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise FloatingPointError("Expected finite samples. Received: NaN or Inf values")
    return np.clip(np.round((x - low) / (high - low) * 255.0), 0, 255).astype(np.uint8)


@dataclasses.dataclass
class SamplingSpec:
    """Everything ``sample`` needs to know about a model.

    Attributes:
        make_model_fn: ``make_model_fn(y=None, sampler=None) -> fn(x, level)``.
        process: ``{"schedule": Schedule}``, ``{"sigmas": array}`` or ``{"sde": SDE}``.
        image_shape: (height, width, channels).
        data_range: (low, high) of the data.
        default_sampler: the sampler used when none is named.
        sampler_defaults: per-sampler keyword defaults (e.g. a learned variance).
        num_classes: classes of a class-conditional model, else None.
    """

    make_model_fn: Callable
    process: dict
    image_shape: tuple
    data_range: tuple = (-1.0, 1.0)
    default_sampler: str = "ddim"
    sampler_defaults: dict = dataclasses.field(default_factory=dict)
    num_classes: Optional[int] = None


def _spec_for_callable(model, schedule, sde, sigmas, image_shape, data_range):
    if image_shape is None or len(tuple(image_shape)) < 1:
        raise ValueError(
            "Expected `image_shape` like (height, width, channels) for a callable model. "
            f"Received: image_shape={image_shape!r}"
        )
    process = {k: v for k, v in (("schedule", schedule), ("sde", sde), ("sigmas", sigmas)) if v is not None}
    return SamplingSpec(
        make_model_fn=lambda y=None, sampler=None: model,
        process=process,
        image_shape=tuple(int(d) for d in image_shape),
        data_range=tuple(data_range),
        default_sampler="ddim",
    )


def _resolve(model, schedule, sde, sigmas, image_shape, data_range):
    """A ``SamplingSpec`` for a SavedModel path, a kdiff model, or a Python callable."""
    if isinstance(model, (str, os.PathLike)):
        from kdiff import export

        return export.load(model).sampling_spec()
    if hasattr(model, "sampling_spec"):
        return model.sampling_spec()
    if callable(model):
        return _spec_for_callable(model, schedule, sde, sigmas, image_shape, data_range)
    raise ValueError(
        "Expected `model` to be a SavedModel directory, a kdiff diffusion model, or a callable "
        f"eps_fn(x, t) / score_fn(x, s). Received: model={model!r}"
    )


def _process_for(sampler, process):
    kind = SAMPLERS[sampler][1]
    value = process.get(kind)
    if value is None:
        raise ValueError(
            f"Expected `{kind}` for sampler={sampler!r} (pass {kind}=... with a callable model; "
            f"this model has {sorted(process) or 'none'}). Received: {kind}=None"
        )
    if kind == "schedule" and not isinstance(value, Schedule):
        raise ValueError(f"Expected `schedule` to be a kdiff.schedules.Schedule. Received: {value!r}")
    if kind == "sde" and not isinstance(value, SDE):
        raise ValueError(f"Expected `sde` to be a kdiff.sde.SDE. Received: {value!r}")
    if kind == "sigmas":
        return kind, _checks.descending_sigmas(value)
    return kind, value


def _sampler_options(sampler, steps, eta, defaults, sampler_kwargs):
    options = {**defaults.get(sampler, {}), **sampler_kwargs}
    if eta != 0.0 and sampler != "ddim":
        raise ValueError(
            f"Expected `eta` only with sampler='ddim'. Received: eta={eta!r}, sampler={sampler!r}"
        )
    if sampler == "ddim":
        options.update(steps=50 if steps is None else steps, eta=eta)
    elif sampler == "annealed_langevin":
        options.update(n_steps_each=100 if steps is None else steps)
    elif sampler == "ddpm":
        options.update(steps=steps)
    elif sampler in ("euler_maruyama", "predictor_corrector"):
        options["steps"] = steps
    elif options.get("method", "RK45") in ("euler", "heun", "rk4"):
        options.update(steps=steps)
    return options


def _class_batches(class_labels, num_samples, num_classes):
    if num_classes is None:
        if class_labels is not None:
            raise ValueError(f"Expected no `class_labels` for an unconditional model. Received: {class_labels!r}")
        return None
    if class_labels is None:
        return np.arange(num_samples) % num_classes  # every class in turn
    labels = np.broadcast_to(np.asarray(class_labels, dtype=np.int64), (num_samples,))
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"Expected `class_labels` in [0, {num_classes - 1}]. "
            f"Received: min={labels.min()}, max={labels.max()}"
        )
    return labels


def _start_noise(kind, process, shape, seed, data_range):
    if kind == "sde":
        return process.prior_sampling(shape, seed=seed)
    if kind == "sigmas":  # NCSN starts from uniform noise over the data range
        low, high = data_range
        return tf.random.stateless_uniform(shape, _random.seed_pair(seed), low, high)
    return tf.random.stateless_normal(shape, _random.seed_pair(seed))


def sample(
    model,
    num_samples,
    *,
    sampler=None,
    steps=50,
    eta=0.0,
    seed=0,
    batch_size=None,
    return_trajectory=False,
    schedule=None,
    sde=None,
    sigmas=None,
    image_shape=None,
    data_range=(-1.0, 1.0),
    class_labels=None,
    jit_compile="auto",
    progress=False,
    **sampler_kwargs,
):
    """Generates ``num_samples`` uint8 images from a model in one call.

    Args:
        model: a SavedModel directory written by ``kdiff.export`` (only TensorFlow is
            needed to load it), a trained ``kdiff.DDPM`` / ``NCSN`` / ``ScoreSDE``
            (sampled with its EMA weights), or a Python callable — ``eps_fn(x, t)`` for
            "ddpm" / "ddim", ``score_fn(x, s)`` for the score-based samplers.
        num_samples: how many images.
        sampler: one of ``kdiff.sampling.SAMPLERS``: "ddpm", "ddim", "annealed_langevin",
            "euler_maruyama", "predictor_corrector", "probability_flow"; None for the
            model's default ("ddim" for a callable).
        steps: sampling steps (for "annealed_langevin": steps per noise level; for
            "probability_flow": steps of a fixed-step ``method``, unused by RK45).
            None: the sampler's own default (all T for "ddpm", N for the SDE samplers).
        eta: DDIM's η.
        seed: same seed, same batch size → same images.
        batch_size: images per batch (default: min(num_samples, 64)).
        return_trajectory: also return the intermediate images.
        schedule, sde, sigmas: the process of a callable model (one of them).
        image_shape: (height, width, channels) of one image, for a callable model.
        data_range: (low, high) a callable model's data lives in: (−1, 1) for DDPM-style
            models, (0, 1) for NCSN's.
        class_labels: for a class-conditional model, an int or [num_samples] ints
            (default: the classes in turn).
        jit_compile: XLA for the sampling loop: True, False or "auto" (GPU/TPU only).
        progress: show a progress bar over batches.
        **sampler_kwargs: passed to the sampler (e.g. ``variance``, ``clip_x0``,
            ``predictor``, ``corrector``, ``snr``, ``denoise``, ``method``).

    Returns:
        uint8 images [N, H, W, C]; with ``return_trajectory``, also a uint8 array
        [num_states, N, H, W, C] of the intermediate states (start included).

    Raises:
        ValueError: on unknown sampler names or arguments that do not fit the sampler.
        kdiff.samplers.NonFiniteSampleError: when sampling produces NaN or Inf.
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    batch_size = min(num_samples, 64) if batch_size is None else _checks.positive_int(batch_size, "batch_size")
    spec = _resolve(model, schedule, sde, sigmas, image_shape, data_range)
    sampler = spec.default_sampler if sampler is None else sampler
    _checks.one_of(sampler, "sampler", tuple(SAMPLERS))
    function, _ = SAMPLERS[sampler]
    kind, process = _process_for(sampler, spec.process)
    options = _sampler_options(sampler, steps, eta, spec.sampler_defaults, sampler_kwargs)
    if options.get("steps", 0) is None and sampler in ("euler_maruyama", "predictor_corrector"):
        options["steps"] = process.N
    labels = _class_batches(class_labels, num_samples, spec.num_classes)
    base = _random.seed_pair(seed)

    def run(x, step_seed, y=None, compiled=True):
        model_fn = spec.make_model_fn(y=y, sampler=sampler)
        return function(
            model_fn, x, process, seed=step_seed, return_trajectory=return_trajectory,
            compiled=compiled, **options,
        )

    adaptive = sampler == "probability_flow" and options.get("method", "RK45") not in ("euler", "heun", "rk4")
    graph = run if adaptive else tf.function(run, jit_compile=_loop.resolve_jit_compile(jit_compile))
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(num_samples, unit_name="image")
    images, trajectories = [], []
    for index, start in enumerate(range(0, num_samples, batch_size)):
        batch_seed = _random.fold_in(base, index)
        count = min(batch_size, num_samples - start)
        shape = (count,) + tuple(spec.image_shape)
        x = _start_noise(kind, process, shape, _random.fold_in(batch_seed, 0), spec.data_range)
        step_seed = _random.fold_in(batch_seed, 1)
        y = None if labels is None else tf.constant(labels[start : start + count], tf.int32)
        with _loop.quiet_retracing_warning():
            out = graph(x, step_seed) if y is None else graph(x, step_seed, y)
        final = out[0] if return_trajectory else out
        if not bool(tf.reduce_all(tf.math.is_finite(final))):
            run(x, step_seed, y)  # called eagerly, the sampler raises naming the failing step
            raise FloatingPointError(f"{sampler}: batch {index} of the samples is NaN or Inf.")
        images.append(to_uint8(final, spec.data_range))
        if return_trajectory:
            trajectories.append(np.stack([to_uint8(s, spec.data_range) for s in out[1]]))
        if bar is not None:
            bar.add(count)
    result = np.concatenate(images)
    if return_trajectory:
        return result, np.concatenate(trajectories, axis=1)
    return result
