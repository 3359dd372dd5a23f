"""The step loop every fixed-step sampler shares.

A sampler describes one step, ``step_fn(i, x, noises) -> x_next``, and how many Gaussian
draws each step adds; this module runs the steps

* as one ``tf.while_loop`` inside a ``tf.function`` (optionally XLA-compiled) when
  called eagerly — the fast path;
* inline, when the sampler is itself traced inside a caller's ``tf.function``;
* as a Python loop of eager steps when ``noise_fn`` is given (tests inject noise) or
  ``compiled=False`` (debugging).

Noise is stateless and derived from the seed and the step, so the compiled and the
eager paths give the same numbers for the same seed.

A ``StepEdit`` (inpainting, img2img: ``kdiff.samplers.editing``) changes the walk through hooks of
this one loop, given the level of the state that the sampler reports (``levels``): no
sampler is copied to be edited.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import tensorflow as tf

from kdiff import _random
from kdiff.samplers.errors import NonFiniteSampleError


def resolve_jit_compile(jit_compile):
    """``"auto"`` compiles with XLA only where a GPU or TPU is visible.

    On CPU oneDNN's kernels beat XLA's (docs/benchmarks.md), so eager-graph
    ``tf.function`` is the CPU default.
    """
    if jit_compile == "auto":
        return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    return bool(jit_compile)


class _DropRetracingWarning(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def quiet_retracing_warning():
    """Each sampler call builds its own loop graph on purpose (its coefficients are
    constants of that graph), so TF's "frequent retracing" advice does not apply."""
    logger = tf.get_logger()
    quiet = _DropRetracingWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class StepEdit:
    """Changes to a sampler's walk made through the shared loop's hooks (``kdiff.samplers.editing``).

    A sampler that can be edited reports the level of its state: ``levels = (alpha, std)``,
    two tables of ``num_steps + 1`` values such that for data x₀ its state before step 0
    (entry 0) and after step i (entry i + 1) is distributed as alpha·x₀ + std·z, in the
    sampler's own parametrization of the state. With an edit the loop

    * runs the steps ``visits(num_steps)`` in that order (by default 0 … num_steps − 1);
    * sets the state to ``start(x, alpha, std)`` before the first visit, at the level of
      that step's input;
    * where a visit goes back (a step index ≤ the previous one: RePaint's resampling),
      first calls ``renoise(p, x, alpha_from, std_from, alpha_to, std_to)`` to take the
      state from the level after the previous step up to the input level of this one;
    * after the step of visit p, sets the state to ``project(p, x, alpha, std)``, at the
      level the step left it at.

    ``p`` is the visit's position (a scalar int tensor in a graph loop). The base class
    changes nothing.
    """

    def visits(self, num_steps):
        """The step indices to run, in order (an int array; default: every step once)."""
        return np.arange(num_steps)

    def start(self, x, alpha, std):
        """The state to begin with, given the sampler's start ``x`` at level (alpha, std)."""
        return x

    def renoise(self, p, x, alpha_from, std_from, alpha_to, std_to):
        """The state taken from level (alpha_from, std_from) up to (alpha_to, std_to)."""
        return x

    def project(self, p, x, alpha, std):
        """The state after visit ``p``, at level (alpha, std)."""
        return x


class _FirstRow(StepEdit):
    """An edit of a state stacked on a new first axis (x, then a multistep sampler's
    history): every hook applies to x, row 0."""

    def __init__(self, edit):
        self.edit = edit

    def visits(self, num_steps):
        return self.edit.visits(num_steps)

    @staticmethod
    def _on_x(state, fn):
        return tf.concat([fn(state[0])[None], state[1:]], 0)

    def start(self, x, alpha, std):
        return self._on_x(x, lambda row: self.edit.start(row, alpha, std))

    def renoise(self, p, x, alpha_from, std_from, alpha_to, std_to):
        return self._on_x(x, lambda row: self.edit.renoise(p, row, alpha_from, std_from, alpha_to, std_to))

    def project(self, p, x, alpha, std):
        return self._on_x(x, lambda row: self.edit.project(p, row, alpha, std))


def on_first_row(edit):
    """``edit`` (or None) for a state whose row 0 is x (a multistep sampler's stacked state)."""
    return None if edit is None else _FirstRow(edit)


def first_visit(edit, num_steps):
    """The first step an edit runs (img2img starts part-way), 0 without an edit."""
    if edit is None:
        return 0
    visits = np.asarray(edit.visits(num_steps))
    return int(visits[0]) if visits.size else int(num_steps)


def _level(levels, j, dtype):
    """(alpha, std) of the state at level index ``j``, as scalars of ``dtype``."""
    return tuple(tf.cast(tf.gather(table, j), dtype) for table in levels)


def _edited_visits(edit, levels, num_steps, static, name, return_trajectory):
    """The checked visit order of an edited walk and its level tables as float64 tensors."""
    if not static:
        raise ValueError(f"{name}: an edit (inpainting, img2img) needs a Python int number of steps")
    if return_trajectory:
        raise ValueError(f"Expected return_trajectory=False with an edit. Received: return_trajectory=True ({name})")
    if levels is None:
        raise ValueError(f"{name} reports no levels of its state, so it cannot be edited (inpainting, img2img)")
    visits = np.asarray(edit.visits(num_steps), dtype=np.int32).reshape(-1)
    if visits.size and (visits.min() < 0 or visits.max() >= num_steps):
        raise ValueError(
            f"Expected visits among the {num_steps} steps of {name}. Received: min={visits.min()}, max={visits.max()}"
        )
    tables = tuple(tf.constant(np.asarray(table, np.float64)) for table in levels)
    return visits, tables


def _enter(edit, levels, visits, p, x):
    """Before visit p: re-noising up to the step's input level where the walk goes back."""
    i, previous = visits[p], visits[tf.maximum(p - 1, 0)]

    def back():
        return edit.renoise(p, x, *_level(levels, previous + 1, x.dtype), *_level(levels, i, x.dtype))

    return tf.cond(tf.logical_and(p > 0, i <= previous), back, lambda: x)


def _step_noise(seed, i, k, num_draws, like):
    return tf.random.stateless_normal(
        tf.shape(like), seed=_random.fold_in(seed, i * num_draws + k), dtype=like.dtype
    )


def run_steps(
    step_fn,
    x,
    noise_counts,
    *,
    name,
    num_draws=None,
    seed=None,
    noise_fn=None,
    return_trajectory=False,
    compiled=True,
    jit_compile="auto",
    step_labels=None,
    callback=None,
    levels=None,
    edit=None,
):
    """Runs ``len(noise_counts)`` steps of a sampler.

    Args:
        step_fn: ``step_fn(i, x, noises) -> x_next``; ``i`` is a scalar int32 tensor and
            ``noises`` a list of ``max(1, max(noise_counts))`` tensors shaped like x, of
            which the first ``noise_counts[i]`` are standard normal and the rest zero.
        x: the starting tensor, batch first.
        noise_counts: int array, how many Gaussian draws step i adds: a numpy array, or
            an int tensor whose length is only known when the graph runs (a number of
            steps given as a tensor).
        name: the sampler's name, for error messages.
        num_draws: the most draws any step adds (static; default: read from a numpy
            ``noise_counts``).
        seed: int, shape-[2] int tensor, or None (random).
        noise_fn: optional ``noise_fn(shape) -> noise``; called once per draw, in step
            order, only for draws that are used. Forces the eager Python loop.
        return_trajectory: also return the list [x_start, x_after_step_0, …] (one
            stacked tensor when the number of steps is a graph tensor).
        compiled: run the step loop as one graph (True) or as eager Python (False).
        jit_compile: True, False or "auto" (XLA where a GPU/TPU is visible).
        step_labels: optional per-step descriptions used in error messages (a list).
        callback: optional ``callback(i, num_steps)``, called with Python ints after
            step i; in a graph loop through ``tf.numpy_function`` (so it cannot be
            XLA-compiled or saved in a SavedModel).
        levels: ``(alpha, std)``, the level of the state before step 0 and after each
            step (two tables of ``len(noise_counts) + 1`` values; see ``StepEdit``); needed
            by ``edit``.
        edit: an optional ``StepEdit`` (inpainting, img2img); needs a Python int number
            of steps and no trajectory. Noise is then keyed on the visit's position, and
            ``callback`` counts visits.

    Returns:
        The final x, or ``(x, trajectory)`` with ``return_trajectory``.

    Raises:
        NonFiniteSampleError: when a step produces NaN or Inf (eager callers only;
            inside a caller's graph the check is the caller's).
    """
    static = not tf.is_tensor(noise_counts) or tf.executing_eagerly()
    if static:
        noise_counts = np.asarray(noise_counts, dtype=np.int32)
        num_steps = int(noise_counts.size)
        if num_draws is None:
            num_draws = int(noise_counts.max()) if num_steps else 0
        counts = tf.constant(noise_counts)
    else:
        if num_draws is None:
            raise ValueError(f"{name}: `num_draws` is needed when the number of steps is a graph tensor")
        counts = tf.cast(noise_counts, tf.int32)
        num_steps = tf.shape(counts)[0]
    seed = _random.seed_pair(seed)
    visits = None
    if edit is not None:
        visits, levels = _edited_visits(edit, levels, num_steps, static, name, return_trajectory)
        first = int(visits[0]) if visits.size else num_steps
        x = tf.ensure_shape(edit.start(x, *_level(levels, first, x.dtype)), x.shape)
        num_steps = int(visits.size)

    def label(i):
        return None if step_labels is None else step_labels[i]

    if noise_fn is not None or (not compiled and tf.executing_eagerly()):
        if not static:
            raise ValueError(f"{name}: `noise_fn` and compiled=False need a Python int number of steps")
        return _python_loop(
            step_fn, x, noise_counts, num_draws, seed, noise_fn, return_trajectory, name, label, callback,
            (edit, levels, visits),
        )

    def graph_loop(x, seed):
        def body(p, x, finite, trajectory):
            i = p if visits is None else tf.gather(visits, p)
            if edit is not None:
                x = _enter(edit, levels, tf.constant(visits), p, x)
            noises = [
                _step_noise(seed, p, k, num_draws, x) * tf.cast(k < counts[i], x.dtype)
                for k in range(num_draws)
            ] or [tf.zeros_like(x)]
            x_next = tf.ensure_shape(step_fn(i, x, noises), x.shape)
            if edit is not None:
                x_next = tf.ensure_shape(edit.project(p, x_next, *_level(levels, i + 1, x.dtype)), x.shape)
            if callback is not None:
                with tf.control_dependencies([_notify(callback, p, num_steps, x_next)]):
                    x_next = tf.identity(x_next)
            finite = tf.reduce_all(tf.math.is_finite(x_next))
            if return_trajectory:
                trajectory = trajectory.write(p + 1, x_next)
            return p + 1, x_next, finite, trajectory

        trajectory = tf.TensorArray(x.dtype, size=num_steps + 1 if return_trajectory else 0, element_shape=x.shape)
        if return_trajectory:
            trajectory = trajectory.write(0, x)
        i, x, finite, trajectory = tf.while_loop(
            lambda i, x, finite, trajectory: tf.logical_and(i < num_steps, finite),
            body,
            (tf.constant(0), x, tf.constant(True), trajectory),
        )
        stacked = trajectory.stack() if return_trajectory else tf.zeros([0])
        return x, i, finite, stacked

    if tf.executing_eagerly():
        compiled_loop = tf.function(graph_loop, jit_compile=resolve_jit_compile(jit_compile))
        with quiet_retracing_warning():
            x, i, finite, stacked = compiled_loop(x, seed)
        if not bool(finite):
            step = int(i) - 1
            step = step if visits is None else int(visits[step])
            raise NonFiniteSampleError(name, step, num_steps, label(step))
    else:
        x, i, finite, stacked = graph_loop(x, seed)
    if return_trajectory:
        return x, (tf.unstack(stacked, num=num_steps + 1) if static else stacked)
    return x


def _notify(callback, i, num_steps, after):
    """A graph op that calls ``callback(i, num_steps)`` once ``after`` is computed."""

    def call(i, num_steps, _):
        callback(int(i), int(num_steps))
        return np.int32(0)

    return tf.numpy_function(call, [i, num_steps, tf.reshape(after, [-1])[0]], tf.int32)


def _python_loop(step_fn, x, noise_counts, num_draws, seed, noise_fn, return_trajectory, name, label, callback,
                 edited=(None, None, None)):
    edit, levels, visits = edited
    trajectory = [x]
    shape = tuple(x.shape)
    order = range(len(noise_counts)) if visits is None else visits
    for p, i in enumerate(order):
        i, count = int(i), noise_counts[i]
        if edit is not None:
            x = _enter(edit, levels, tf.constant(visits), tf.constant(p, tf.int32), x)
        noises = []
        for k in range(num_draws):
            if k >= count:
                noises.append(tf.zeros_like(x))
            elif noise_fn is None:
                noises.append(_step_noise(seed, tf.constant(p), k, num_draws, x))
            else:
                z = tf.cast(noise_fn(shape), x.dtype)
                if tuple(z.shape) != shape:
                    raise ValueError(
                        f"Expected `noise_fn` to return noise of shape {list(shape)}. "
                        f"Received: shape={list(z.shape)}"
                    )
                noises.append(z)
        x = step_fn(tf.constant(i, tf.int32), x, noises or [tf.zeros_like(x)])
        if edit is not None:
            x = edit.project(tf.constant(p, tf.int32), x, *_level(levels, i + 1, x.dtype))
        if not bool(tf.reduce_all(tf.math.is_finite(x))):
            raise NonFiniteSampleError(name, i, len(noise_counts), label(i))
        if callback is not None:
            callback(p, len(order))
        if return_trajectory:
            trajectory.append(x)
    if return_trajectory:
        return x, trajectory
    return x
