"""``kdiff.sample``: one call from a model to uint8 images."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kdiff import _checks, _loop, _random, samplers
from kdiff.schedules import Schedule
from kdiff.sde import SDE

__all__ = ["sample", "SAMPLERS", "to_uint8"]

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


def _process_for(sampler, schedule, sde, sigmas):
    kind = SAMPLERS[sampler][1]
    given = {"schedule": schedule, "sde": sde, "sigmas": sigmas}
    if given[kind] is None:
        raise ValueError(
            f"Expected `{kind}` for sampler={sampler!r} with a Python callable model "
            f"(pass {kind}=...). Received: {kind}=None"
        )
    if kind == "schedule" and not isinstance(schedule, Schedule):
        raise ValueError(f"Expected `schedule` to be a kdiff.schedules.Schedule. Received: {schedule!r}")
    if kind == "sde" and not isinstance(sde, SDE):
        raise ValueError(f"Expected `sde` to be a kdiff.sde.SDE. Received: {sde!r}")
    if kind == "sigmas":
        return _checks.descending_sigmas(sigmas)
    return given[kind]


def _sampler_options(sampler, steps, eta, sampler_kwargs):
    options = dict(sampler_kwargs)
    if eta != 0.0 and sampler != "ddim":
        raise ValueError(
            f"Expected `eta` only with sampler='ddim'. Received: eta={eta!r}, sampler={sampler!r}"
        )
    if sampler == "ddim":
        options.update(steps=steps, eta=eta)
    elif sampler == "annealed_langevin":
        options.update(n_steps_each=steps)
    elif sampler in ("ddpm", "euler_maruyama", "predictor_corrector"):
        options.update(steps=steps)
    elif options.get("method", "RK45") in ("euler", "heun", "rk4"):
        options.update(steps=steps)
    return options


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
    sampler="ddim",
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
    jit_compile="auto",
    progress=False,
    **sampler_kwargs,
):
    """Generates ``num_samples`` uint8 images from a model in one call.

    Args:
        model: a Python callable — ``eps_fn(x, t)`` for "ddpm" / "ddim", ``score_fn(x, s)``
            for the score-based samplers.
        num_samples: how many images.
        sampler: one of ``kdiff.sampling.SAMPLERS``: "ddpm", "ddim", "annealed_langevin",
            "euler_maruyama", "predictor_corrector", "probability_flow".
        steps: sampling steps (for "annealed_langevin": steps per noise level; for
            "probability_flow": steps of a fixed-step ``method``, unused by RK45).
        eta: DDIM's η.
        seed: same seed, same batch size → same images.
        batch_size: images per batch (default: min(num_samples, 64)).
        return_trajectory: also return the intermediate images.
        schedule: the ``Schedule`` of an ε-model (for "ddpm" / "ddim").
        sde: the ``SDE`` of a score model (for the SDE samplers).
        sigmas: the descending noise levels of an NCSN (for "annealed_langevin").
        image_shape: (height, width, channels) of one image.
        data_range: (low, high) the model's data lives in: (−1, 1) for DDPM-style
            models, (0, 1) for NCSN's.
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
    _checks.one_of(sampler, "sampler", tuple(SAMPLERS))
    num_samples = _checks.positive_int(num_samples, "num_samples")
    batch_size = min(num_samples, 64) if batch_size is None else _checks.positive_int(batch_size, "batch_size")
    if not callable(model):
        raise ValueError(
            "Expected `model` to be a callable eps_fn(x, t) or score_fn(x, s). "
            f"Received: model={model!r}"
        )
    if image_shape is None or len(tuple(image_shape)) < 1:
        raise ValueError(
            "Expected `image_shape` like (height, width, channels) for a callable model. "
            f"Received: image_shape={image_shape!r}"
        )
    image_shape = tuple(int(d) for d in image_shape)
    function, kind = SAMPLERS[sampler]
    process = _process_for(sampler, schedule, sde, sigmas)
    options = _sampler_options(sampler, steps, eta, sampler_kwargs)
    base = _random.seed_pair(seed)

    def run(x, step_seed, compiled=True):
        return function(
            model, x, process, seed=step_seed, return_trajectory=return_trajectory,
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
        shape = (min(batch_size, num_samples - start),) + image_shape
        x = _start_noise(kind, process, shape, _random.fold_in(batch_seed, 0), data_range)
        step_seed = _random.fold_in(batch_seed, 1)
        out = graph(x, step_seed)
        final = out[0] if return_trajectory else out
        if not bool(tf.reduce_all(tf.math.is_finite(final))):
            run(x, step_seed)  # called eagerly, the sampler raises naming the failing step
            raise FloatingPointError(f"{sampler}: batch {index} of the samples is NaN or Inf.")
        images.append(to_uint8(final, data_range))
        if return_trajectory:
            trajectories.append(np.stack([to_uint8(s, data_range) for s in out[1]]))
        if bar is not None:
            bar.add(shape[0])
    result = np.concatenate(images)
    if return_trajectory:
        return result, np.concatenate(trajectories, axis=1)
    return result
