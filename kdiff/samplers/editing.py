"""Inpainting and img2img for every family, through the hooks of the samplers' shared loop.

* ``inpaint`` — the known pixels are replaced after every step by the input forward-noised
  to the level the step left the state at (score_sde's inpainting, Song et al. 2021, and
  RePaint's base method), and at the end by the input itself; ``resample`` > 1 adds
  RePaint's resampling (Lugmayr et al. 2022): after a jump of ``jump_length`` steps the
  state is re-noised back up by the forward process and those steps are run again.
* ``img2img`` — SDEdit (Meng et al. 2022): the input is noised to the level at fraction
  ``strength`` of the sampler's walk, and the remaining ``int(steps · strength)`` steps are
  run (diffusers' convention: strength 1 starts from noise, 0 returns the input).

No sampler is copied: every fixed-step sampler reports the level (α, std) of its state
before and after each step to ``kdiff.samplers._loop.run_steps`` (x ≈ α·x₀ + std·z in the
sampler's own parametrization: x_t for DDPM / DDIM / DPM-Solver++ and the SDE samplers,
x_σ = x_t/α for Karras et al.'s samplers, the perturbed x for Langevin dynamics), and
``_Edit`` below is a ``kdiff.samplers._loop.StepEdit`` whose hooks use those levels. Which samplers
take an edit, and which RePaint's resampling, is written in their registry entries
(``kdiff.samplers.registry.Sampler.edits`` / ``resamples``).

Masks: by default 1 marks a KNOWN pixel (kept), 0 one to fill — RePaint's and score_sde's
convention; ``mask_convention="repaint"`` reads 1 as a pixel to repaint (diffusers'
inpainting pipelines: white = repaint).
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

from kdiff import checks, _random
from kdiff.samplers import _loop, registry
from kdiff.samplers.draw import class_batches, draw_batch, to_uint8
from kdiff.sampling import spec_for

__all__ = ["MASK_CONVENTIONS", "inpaint", "img2img", "repaint_visits", "editable_samplers"]

MASK_CONVENTIONS = ("known", "repaint")  # what a mask's 1 marks


class _Edit(_loop.StepEdit):
    """The loop hooks of one batch: known pixels put back at each level, or a start part-way.

    Args:
        x0: the batch's input images in the model's data range, float32 [n, H, W, C].
        known: float32 mask like ``x0``, 1 where a pixel is kept (None: img2img, no mask).
        seed: the shape-[2] seed of the edit's own noise (stateless: keyed on the visit).
        strength: img2img's strength in (0, 1) (None: inpainting).
        resample: RePaint's number of passes over each jump (1: none).
        jump_length: RePaint's jump length, in steps.
    """

    def __init__(self, x0, known, seed, strength=None, resample=1, jump_length=1):
        self.x0 = tf.constant(x0, tf.float32)
        self.known = None if known is None else tf.constant(known, tf.float32)
        self.seed = seed
        self.strength, self.resample, self.jump_length = strength, resample, jump_length

    def _noise(self, p, k, like):
        """Standard normal noise like ``like`` for visit p (k: 0 projection, 1 re-noising)."""
        data = 2 * tf.cast(p, tf.int64) + k
        return tf.random.stateless_normal(tf.shape(like), _random.fold_in(self.seed, data), dtype=like.dtype)

    def _noised(self, p, alpha, std, like):
        """The input forward-noised to level (alpha, std): alpha·x₀ + std·z."""
        return alpha * tf.cast(self.x0, like.dtype) + std * self._noise(p, 0, like)

    def visits(self, num_steps):
        if self.strength is not None:  # SDEdit: the last int(n · strength) steps
            return np.arange(num_steps - min(int(num_steps * self.strength), num_steps), num_steps)
        if self.resample > 1:
            return repaint_visits(num_steps, self.jump_length, self.resample)
        return np.arange(num_steps)

    def start(self, x, alpha, std):
        if self.strength is not None:
            return self._noised(-1, alpha, std, x)
        return self.project(-1, x, alpha, std)

    def renoise(self, p, x, alpha_from, std_from, alpha_to, std_to):
        # the forward process between two levels: x_to = r·x_from + √(std_to² − r² std_from²)·z
        ratio = alpha_to / alpha_from
        spread = tf.sqrt(tf.maximum(std_to**2 - (ratio * std_from) ** 2, 0.0))
        return ratio * x + spread * self._noise(p, 1, x)

    def project(self, p, x, alpha, std):
        if self.known is None:
            return x
        known = tf.cast(self.known, x.dtype)
        return x + known * (self._noised(p, alpha, std, x) - x)


def repaint_visits(num_steps, jump_length=10, resample=10):
    """RePaint's order of steps (Lugmayr et al. 2022; its ``get_schedule_jump``), as step indices.

    Walking down, after every ``jump_length`` steps the state goes back up ``jump_length``
    levels and those steps are run again, ``resample − 1`` times; a step index no larger
    than the one before marks such a jump (the loop re-noises there).

    Args:
        num_steps: the sampler's number of steps n.
        jump_length: j ≥ 1, < n when ``resample`` > 1.
        resample: r ≥ 1, the passes over each jump (RePaint's ``jump_n_sample``).

    Returns:
        An int array of step indices in [0, n).
    """
    jump_length = checks.positive_int(jump_length, "jump_length")
    resample = checks.positive_int(resample, "resample")
    if resample > 1 and jump_length >= num_steps:
        raise ValueError(
            f"Expected `jump_length` < the sampler's {num_steps} steps with resample={resample}. "
            f"Received: jump_length={jump_length}"
        )
    jumps = {t: resample - 1 for t in range(0, num_steps - jump_length, jump_length)}
    t, visits = num_steps, []
    while t >= 1:  # RePaint's times t: the step from t to t − 1 is step index n − 1 − t
        t -= 1
        visits.append(num_steps - 1 - t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            t += jump_length
    return np.asarray(visits, dtype=np.int32)


def editable_samplers(kind, resampling=False):
    """The registered samplers of a process kind that take an edit (and RePaint's resampling).

    A sampler whose capability depends on its options (``probability_flow``: a fixed-step
    ``method``) is listed.

    Args:
        kind: "schedule", "sigmas" or "sde".
        resampling: only those that take RePaint's resampling too.

    Returns:
        A list of names.
    """
    flags = ("edits", "resamples") if resampling else ("edits",)
    return [e.name for e in registry.entries(kind) if all(getattr(e, flag) for flag in flags)]


def _check_sampler(entry, options, kind, what, resampling):
    """Raises unless ``entry`` with ``options`` takes an edit (and resampling)."""
    if entry.can_edit(options, resampling):
        return
    needed = f"{what} with RePaint's resampling (resample > 1)" if resampling else what
    extra = f" with method={options['method']!r} (a fixed-step method works)" if "method" in options else ""
    raise ValueError(
        f"Expected a sampler that supports {needed} for a {kind} process: one of "
        f"{editable_samplers(kind, resampling)}. Received: sampler={entry.name!r}{extra}"
    )


def _images(images, spec):
    """The input images as floats in the model's data range, and as uint8 pixels where given so.

    Returns:
        ``(x0, pixels)``: float32 [N, H, W, C], and the uint8 input (None for float input).
    """
    array = np.asarray(images)
    shape = tuple(spec.image_shape)
    if array.ndim != 4 or array.shape[0] < 1 or tuple(array.shape[1:]) != shape:
        raise ValueError(
            f"Expected `images` of shape [N, {', '.join(map(str, shape))}] (N >= 1) for this model. "
            f"Received: images.shape={list(array.shape)}"
        )
    low, high = spec.data_range
    if array.dtype == np.uint8:
        return (low + array.astype(np.float64) / 255.0 * (high - low)).astype(np.float32), array
    if array.dtype.kind != "f":
        raise ValueError(
            f"Expected uint8 `images` or floats in the data range {spec.data_range}. Received: dtype={array.dtype}"
        )
    slack = 1e-6 * (high - low)
    if not np.all(np.isfinite(array)) or array.min() < low - slack or array.max() > high + slack:
        raise ValueError(
            f"Expected float `images` in the model's data range {spec.data_range}. "
            f"Received: min={np.nanmin(array)!r}, max={np.nanmax(array)!r}"
            + ("" if np.all(np.isfinite(array)) else " and NaN or Inf values")
        )
    return np.clip(array, low, high).astype(np.float32), None


def _known(mask, shape, mask_convention):
    """The mask as float32 [N, H, W, C], 1 where a pixel is kept.

    Accepted shapes: [H, W], [H, W, 1 | C], [N, H, W], [N, H, W, 1 | C] (and batch 1 for N).
    """
    checks.one_of(mask_convention, "mask_convention", MASK_CONVENTIONS)
    array = np.asarray(mask)
    n, h, w, c = shape
    if array.ndim == 2:
        array = array[None, ..., None]
    elif array.ndim == 3:
        array = array[None] if array.shape[:2] == (h, w) and array.shape[2] in (1, c) else array[..., None]
    fits = array.ndim == 4 and array.shape[0] in (1, n) and array.shape[1:3] == (h, w) and array.shape[3] in (1, c)
    if not fits:
        raise ValueError(
            f"Expected `mask` of shape [H, W], [H, W, 1|C], [N, H, W] or [N, H, W, 1|C] for images of shape "
            f"{list(shape)}. Received: mask.shape={list(np.shape(mask))}"
        )
    if array.dtype != bool and (array.dtype.kind not in "biuf" or not np.all(np.isin(array, (0, 1)))):
        values = np.unique(array)[:5] if array.dtype.kind in "biuf" else array.dtype
        raise ValueError(
            f"Expected a hard `mask` of 0s and 1s (1 = {'known' if mask_convention == 'known' else 'repaint'}, "
            f"mask_convention={mask_convention!r}). Received: values such as {values}"
        )
    known = np.broadcast_to(array.astype(np.float32), shape)
    return known if mask_convention == "known" else 1.0 - known


def _check_strength(strength):
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"Expected `strength` in [0, 1]. Received: strength={strength!r}")
    return float(strength)


def _edited(
    model,
    images,
    what,
    finish,
    *,
    resampling=False,
    sampler=None,
    steps=None,
    seed=0,
    batch_size=None,
    class_labels=None,
    guidance_scale=None,
    schedule=None,
    sde=None,
    sigmas=None,
    image_shape=None,
    data_range=None,
    compiled=True,
    jit_compile="auto",
    **sampler_kwargs,
):
    """The body ``inpaint`` and ``img2img`` share: the checks, then ``finish``.

    Args:
        model, images: as ``inpaint``.
        what: "inpainting" or "img2img", for messages.
        finish: ``finish(x0, pixels, data_range, run) -> uint8 images``, given the input as
            floats in the data range and as uint8 (None for float input), and
            ``run(make_edit)``, which samples every batch b with the edit
            ``make_edit(begin, end, seed)`` (None: plain sampling) and returns the float
            results [N, H, W, C]. Seeds as ``kdiff.sample``'s: batch b draws with
            ``fold_in(seed, b)`` (its start noise ``fold_in(·, 0)``, the sampler
            ``fold_in(·, 1)``), and its edit's noise with ``fold_in(·, 2)``.
        resampling: RePaint's resampling is asked for.
        sampler, steps, seed, batch_size, class_labels, guidance_scale, schedule, sde,
        sigmas, image_shape, data_range, compiled, jit_compile, **sampler_kwargs: as
            ``inpaint``.

    Returns:
        ``finish``'s images.
    """
    if sampler is not None:
        registry.get(sampler)  # an unknown name fails first, naming the registered ones
    shape = np.shape(images)[1:] if image_shape is None else image_shape
    spec = spec_for(model, schedule=schedule, sde=sde, sigmas=sigmas, image_shape=shape, data_range=data_range)
    spec = spec.with_guidance(guidance_scale)
    entry, options = spec.request(sampler, steps, sampler_kwargs)
    _check_sampler(entry, options, spec.process.kind, what, resampling)
    x0, pixels = _images(images, spec)
    count = len(x0)
    batch_size = min(count, 64) if batch_size is None else checks.positive_int(batch_size, "batch_size")
    labels = class_batches(class_labels, count, spec.num_classes)

    def run(make_edit):
        base, results = _random.seed_pair(seed), []
        for index, begin in enumerate(range(0, count, batch_size)):
            end = min(begin + batch_size, count)
            batch_seed = _random.fold_in(base, index)
            edit = make_edit(begin, end, _random.fold_in(batch_seed, 2))
            y = None if labels is None else tf.constant(labels[begin:end], tf.int32)
            batch_options = {**options, "jit_compile": jit_compile, **({} if edit is None else {"edit": edit})}
            with _loop.quiet_retracing_warning():
                out = draw_batch(spec, entry, batch_options, end - begin, batch_seed, y, compiled=compiled)
            results.append(np.asarray(out, np.float32))
        return np.concatenate(results)

    return finish(x0, pixels, spec.data_range, run)


def inpaint(model, images, mask, *, mask_convention="known", resample=1, jump_length=10, **options):
    """Fills the unknown pixels of images with a model's samples that agree with the known ones.

    After every step the known pixels are replaced by the input forward-noised to the level
    the step left the state at (score_sde's and RePaint's method); at the end they are the
    input's exactly. ``resample`` > 1 adds RePaint's resampling.

    Args:
        model: as ``kdiff.sample``: an export directory, an ``ExportedModel``, a kdiff
            diffusion model, or a callable with its process (``schedule``, ``sde`` or
            ``sigmas``).
        images: uint8 [N, H, W, C], or floats in the model's data range.
        mask: 1 = known (kept), 0 = to fill (``mask_convention="known"``, the default), or
            1 = to repaint (``"repaint"``, diffusers' convention); 0s and 1s (or bools) of
            shape [H, W], [H, W, 1|C], [N, H, W] or [N, H, W, 1|C].
        mask_convention: "known" or "repaint" (what a 1 in ``mask`` marks).
        resample: RePaint's passes over each jump (``jump_n_sample``; 1: no resampling);
            > 1 only with samplers whose steps carry no history (``editable_samplers(kind,
            resampling=True)``: not ``dpm_solver`` or ``annealed_langevin``).
        jump_length: RePaint's jump, in steps (< steps when resampling).
        **options: keyword options shared with ``img2img``:
            sampler: a registered sampler that takes an edit (``editable_samplers(kind)``);
                None: the model's default.
            steps: the sampler's steps (None: the registry's default).
            seed: same seed, same batch size → same images (default 0).
            batch_size: images per batch (default: min(N, 64)).
            class_labels: for a class-conditional model, as ``kdiff.sample``.
            guidance_scale: classifier-free guidance's s, as ``kdiff.sample`` (a model
                trained with a null class).
            schedule, sde, sigmas: the process of a callable model.
            image_shape: a callable model's image shape (default: the images').
            data_range: a callable model's data range (default: its process's).
            compiled: False runs the sampler's steps as eager Python (debugging).
            jit_compile: True, False or "auto" (XLA where a GPU/TPU is visible).
            and the sampler's own options (``eta``, ``clip_x0``, …).

    Returns:
        uint8 images [N, H, W, C] whose known pixels are the input's.

    Raises:
        ValueError: images of the wrong shape or range, a mask that does not fit them or
            is not 0s and 1s, or a sampler that cannot be edited, naming the argument.
    """
    resample = checks.positive_int(resample, "resample")
    jump_length = checks.positive_int(jump_length, "jump_length")

    def finish(x0, pixels, data_range, run):
        known = _known(mask, x0.shape, mask_convention)
        out = run(lambda begin, end, seed: _Edit(x0[begin:end], known[begin:end], seed, resample=resample,
                                                 jump_length=jump_length))
        result = to_uint8(out + known * (x0 - out), data_range)
        # the known pixels exactly as given, past any round-off
        return result if pixels is None else np.where(known > 0, pixels, result)

    return _edited(model, images, "inpainting", finish, resampling=resample > 1, **options)


def img2img(model, images, strength, **options):
    """SDEdit: images noised part-way and denoised again by a model's sampler.

    Of the sampler's n steps (its loop's: for ``annealed_langevin`` levels × steps per
    level, plus the denoising step), the last ``int(n · strength)`` are run, from the input
    forward-noised to the level of the first of them — diffusers' img2img convention.
    ``strength`` 0 returns the input; 1 is ``kdiff.sample`` with the same seed and batch
    size (the input is not used; diffusers noises it to its first level, which at ᾱ ≈ 4e-5
    is the same in distribution).

    Args:
        model: as ``kdiff.sample`` (see ``inpaint``).
        images: uint8 [N, H, W, C], or floats in the model's data range.
        strength: in [0, 1]: how much of the walk to run (how far from the input to go).
        **options: as ``inpaint``'s (sampler, steps, seed, batch_size, class_labels,
            guidance_scale, schedule, sde, sigmas, image_shape, data_range, compiled,
            jit_compile, and the sampler's own options).

    Returns:
        uint8 images [N, H, W, C].

    Raises:
        ValueError: a strength outside [0, 1], images of the wrong shape or range, or a
            sampler that cannot be edited, naming the argument.
    """
    strength = _check_strength(strength)

    def finish(x0, pixels, data_range, run):
        if strength == 0.0:
            return pixels.copy() if pixels is not None else to_uint8(x0, data_range)
        if strength == 1.0:  # the whole walk: kdiff.sample's start
            return to_uint8(run(lambda begin, end, seed: None), data_range)
        return to_uint8(run(lambda begin, end, seed: _Edit(x0[begin:end], None, seed, strength=strength)), data_range)

    return _edited(model, images, "img2img", finish, **options)
