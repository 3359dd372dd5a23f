"""One batch of samples from a model: the code ``kdiff.sample`` and an export's ``generate`` share.

A ``SamplingSpec`` says what a model is to a sampler (its network as a function, its
process, image shape, data range, classes). ``SamplingSpec.request`` checks a request
(``kdiff.samplers.request``), ``draw_batch`` draws the start noise from the process and
runs the sampler, and ``to_uint8`` maps the result to pixels. Every piece works eagerly and inside a ``tf.function`` (where the number
of samples and of steps may be tensors), so the exported ``generate`` signature holds no
sampling code of its own.
"""

from __future__ import annotations

import collections
import dataclasses
import numbers
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from kdiff import _random
from kdiff.samplers import guidance, request
from kdiff.samplers._loop import quiet_retracing_warning, resolve_jit_compile  # the loop's policy, for kdiff.sample
from kdiff.process import Process

__all__ = [
    "SAMPLING_PRECISIONS", "DrawCache", "SamplingSpec", "class_batches", "draw_batch", "quiet_retracing_warning",
    "resolve_jit_compile", "to_uint8", "to_uint8_tensor",
]

# What a network can compute in at sampling time (float32 sampler state either way).
SAMPLING_PRECISIONS = ("float32", "bfloat16")


class DrawCache:
    """The traced batch functions of one model, reused from one ``kdiff.sample`` call to the next.

    Tracing a sampler's loop around a network takes seconds (longer than sampling a small
    batch); a kdiff model and a loaded export each own one ``DrawCache``, so that a second
    call with the same sampler, options and trajectory / XLA setting runs the graph the
    first call traced. Options that cannot be compared by value (tensors, arrays,
    callables) are not cached: those calls trace as before.

    Args:
        max_entries: how many traced functions to keep (least recently used dropped first).
    """

    def __init__(self, max_entries=8):
        self.max_entries = int(max_entries)
        self._functions = collections.OrderedDict()

    def __len__(self):
        return len(self._functions)

    def function(self, key, build):
        """The function cached under ``key``, built (and kept) on a miss.

        Args:
            key: a hashable key (``DrawCache.key(...)``), or None: build without caching.
            build: ``build() -> function``.

        Returns:
            The function.
        """
        if key is None:
            return build()
        if key in self._functions:
            self._functions.move_to_end(key)
            return self._functions[key]
        function = self._functions[key] = build()
        while len(self._functions) > self.max_entries:
            self._functions.popitem(last=False)
        return function

    def clear(self):
        """Drops every traced function (say, after replacing a model's network)."""
        self._functions.clear()

    @staticmethod
    def key(*parts):
        """A hashable key from plain values (numbers, strings, None, and lists, tuples and
        dicts of them), or None when a part is anything else."""
        try:
            return tuple(_frozen(part) for part in parts)
        except TypeError:
            return None


def _frozen(value):
    if value is None or isinstance(value, (str, bool, numbers.Number)):
        return (type(value).__name__, value.item() if isinstance(value, np.generic) else value)
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_frozen(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _frozen(v)) for k, v in value.items())))
    raise TypeError(f"not a plain value: {type(value).__name__}")


@dataclasses.dataclass
class SamplingSpec:
    """Everything sampling needs to know about a model.

    Attributes:
        make_model_fn: ``make_model_fn(y=None, sampler=None) -> fn(x, level)``.
        process: the model's ``kdiff.process.Process`` (a Schedule, Sigmas or SDE).
        image_shape: (height, width, channels).
        data_range: (low, high) of the data (default: the process's).
        default_sampler: the sampler used when none is named (default: the process's).
        sampler_defaults: per-sampler keyword defaults (e.g. a learned variance).
        num_classes: classes of a class-conditional model, else None.
        null_label: the null class of a model trained for classifier-free guidance (its
            network has ``num_classes + 1`` classes), else None.
        guidance_scale: the classifier-free guidance scale s the samples are drawn with
            (None: the conditional model as it is; see ``kdiff.samplers.guidance``).
        draw_cache: the model's ``DrawCache`` (None: ``kdiff.sample`` traces every call).
        precision: what the network computes in: "float32", or "bfloat16" (the sampler's
            state and arithmetic stay float32 either way).
        at_precision: ``at_precision(precision) -> make_model_fn`` for a model that can run
            its network in another precision (a kdiff model); None where it is fixed (an
            export, a callable).
    """

    make_model_fn: Callable
    process: Process
    image_shape: tuple
    data_range: Optional[tuple] = None
    default_sampler: Optional[str] = None
    sampler_defaults: dict = dataclasses.field(default_factory=dict)
    num_classes: Optional[int] = None
    null_label: Optional[int] = None
    guidance_scale: Optional[float] = None
    draw_cache: Optional[DrawCache] = None
    precision: str = "float32"
    at_precision: Optional[Callable] = None

    def __post_init__(self):
        Process.check(self.process, "process")
        self.image_shape = tuple(int(d) for d in self.image_shape)
        low, high = self.process.default_data_range if self.data_range is None else self.data_range
        self.data_range = (float(low), float(high))
        self.default_sampler = self.default_sampler or self.process.default_sampler

    def with_precision(self, precision=None):
        """This spec with the network computing in ``precision`` (None: as it is).

        Args:
            precision: None, "float32" or "bfloat16".

        Returns:
            A ``SamplingSpec`` (``self`` when nothing changes).

        Raises:
            ValueError: an unknown precision, or one the model cannot change to (an export
                computes in the precision it was exported with).
        """
        if precision is None or precision == self.precision:
            return self
        if precision not in SAMPLING_PRECISIONS:
            raise ValueError(f"Expected `precision` in {list(SAMPLING_PRECISIONS)} or None. Received: precision={precision!r}")
        if self.at_precision is None:
            raise ValueError(
                f"Expected `precision` None or {self.precision!r} for this model: its network computes in "
                f"{self.precision} (an export keeps the precision it was written with — "
                f"kdiff.export.export(..., precision={precision!r}) writes another; a Python callable "
                f"computes as it is written). Received: precision={precision!r}"
            )
        return dataclasses.replace(self, make_model_fn=self.at_precision(precision), precision=precision)

    def with_guidance(self, guidance_scale=None):
        """This spec sampling with classifier-free guidance at ``guidance_scale``.

        Args:
            guidance_scale: None (no guidance), a float >= 0, or a float32 scalar tensor.

        Returns:
            A ``SamplingSpec`` (``self`` when ``guidance_scale`` is None).

        Raises:
            ValueError: a scale for an unconditional model, one without a null class, or
                a negative scale.
        """
        scale = guidance.check_scale(guidance_scale, self.num_classes, self.null_label)
        return self if scale is None else dataclasses.replace(self, guidance_scale=scale)

    def model_fn(self, y=None, sampler=None):
        """The model function the sampler runs: ``make_model_fn``'s, guided when a
        ``guidance_scale`` is set.

        Args:
            y: int32 class labels [batch] for a class-conditional model.
            sampler: the sampler's name.

        Returns:
            ``fn(x, level)``.
        """
        if self.guidance_scale is None:
            return self.make_model_fn(y=y, sampler=sampler)
        return guidance.guided(
            self.make_model_fn, y, self.null_label, self.guidance_scale, self.image_shape[2], sampler=sampler
        )

    def request(self, sampler=None, steps=None, options=None, recipe=None, name="sampler options"):
        """A sampling request for this model, checked (``kdiff.samplers.request.resolve``).

        Returns:
            ``(entry, kwargs)``: the registry entry and its function's keyword arguments.
        """
        return request.resolve(
            self.process, sampler, steps, options, recipe, default_sampler=self.default_sampler,
            sampler_defaults=self.sampler_defaults, data_range=self.data_range, name=name,
        )


def class_batches(class_labels, num_samples, num_classes):
    """The class label of each sample, checked against the model's classes.

    Args:
        class_labels: an int or [num_samples] ints; None: every class in turn.
        num_samples: how many samples.
        num_classes: the model's classes (None: an unconditional model, which takes none).

    Returns:
        int labels [num_samples], or None for an unconditional model.
    """
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


def draw_batch(
    spec, entry, options, count, seed, labels=None, *, return_trajectory=False, compiled=True, callback=None,
    x_T=None,
):
    """Draws one batch: the process's start noise (or ``x_T``), then the sampler.

    Seeds: the start noise uses ``fold_in(seed, 0)``, the sampler's steps ``fold_in(seed, 1)``
    (with ``x_T`` too: the seed still drives an ancestral sampler's noise).

    Args:
        spec: the model's ``SamplingSpec``.
        entry: the sampler's registry entry.
        options: the entry's keyword arguments (``SamplingSpec.request``).
        count: the batch size (an int, or an int tensor inside a graph).
        seed: the batch's shape-[2] seed.
        labels: int32 class labels [count] for a class-conditional model.
        return_trajectory: also return the intermediate states.
        compiled: passed to the sampler.
        callback: ``callback(i, num_steps)`` after each step, passed to a sampler that
            takes one (``entry.takes_callback()``; others run without).
        x_T: the start [count, H, W, C] (float32, checked by the caller) instead of a draw
            of the process's prior; None: the draw.

    Returns:
        The float samples [count, H, W, C] (and the trajectory when asked).
    """
    if tf.is_tensor(count):
        shape = tf.concat([tf.reshape(tf.cast(count, tf.int32), [1]), tf.constant(spec.image_shape, tf.int32)], 0)
    else:
        shape = [int(count), *spec.image_shape]
    if x_T is None:
        x = spec.process.prior_sample(shape, _random.fold_in(seed, 0), spec.data_range)
    else:
        x = tf.convert_to_tensor(x_T, tf.float32)
    model_fn = spec.model_fn(y=labels, sampler=entry.name)
    function = tf.autograph.experimental.do_not_convert(entry.resolve)()  # an import, not graph code
    if callback is not None and entry.takes_callback():
        options = {**options, "callback": callback}
    return function(
        model_fn, x, spec.process, seed=_random.fold_in(seed, 1),
        return_trajectory=return_trajectory, compiled=compiled, **options,
    )


def to_uint8_tensor(x, data_range=(-1.0, 1.0)):
    """Maps samples in ``data_range`` to uint8 pixels in the graph: float64 math, round half to
    even, clip.

    Args:
        x: a float tensor.
        data_range: (low, high) of the model's data.

    Returns:
        A uint8 tensor shaped like ``x``.
    """
    low, high = (float(v) for v in data_range)
    x = tf.cast(x, tf.float64)
    return tf.cast(tf.clip_by_value(tf.round((x - low) / (high - low) * 255.0), 0.0, 255.0), tf.uint8)


def to_uint8(x, data_range=(-1.0, 1.0)):
    """Maps samples in ``data_range`` to uint8 pixels (clipped, rounded).

    Args:
        x: float array or tensor.
        data_range: (low, high) of the model's data.

    Returns:
        A uint8 numpy array shaped like ``x``.

    Raises:
        FloatingPointError: on NaN or Inf values.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise FloatingPointError("Expected finite samples. Received: NaN or Inf values")
    return to_uint8_tensor(x, data_range).numpy()
