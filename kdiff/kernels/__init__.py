"""Fused CPU kernels where TensorFlow has none, built on first use.

TensorFlow normalizes a group with a dozen elementwise and reduction ops forward and
more backward; PyTorch does it in one kernel each way. ``group_norm`` is GroupNorm, with
the SiLU that follows it in every U-Net block, as one C++ kernel forward and one backward
(``group_norm.cc``), for float32 and bfloat16 tensors on the CPU.

The kernel is compiled the first time it is needed, with the machine's C++ compiler
against the installed TensorFlow (about 10 s), and cached (``kdiff.kernels._build``);
``python -m kdiff.kernels`` builds it ahead of time and says where it is. Where it cannot
be used, the same layer computes with TensorFlow's own ops, to float32 round-off of the
same result:

* ``KDIFF_FUSED_KERNELS=0`` in the environment, or inside ``without_fused_kernels()``;
* no C++ compiler, or a failed build (one warning says why);
* a GPU or TPU is visible, or the graph is compiled by XLA (the kernel is CPU-only and
  XLA cannot compile it);
* a dtype other than float32 and bfloat16.

``kdiff.export`` traces inside ``without_fused_kernels()``: a SavedModel holds only
TensorFlow's ops, so TF Serving loads it without this library.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import warnings

ENABLE_VARIABLE = "KDIFF_FUSED_KERNELS"
_SOURCES = os.path.dirname(os.path.abspath(__file__))
_DISABLED = contextvars.ContextVar("kdiff_fused_kernels_disabled", default=False)

__all__ = ["group_norm", "library", "status", "switched_off", "without_fused_kernels", "ENABLE_VARIABLE"]


@contextlib.contextmanager
def without_fused_kernels():
    """Within this context, layers use TensorFlow's ops only (what ``kdiff.export`` traces)."""
    token = _DISABLED.set(True)
    try:
        yield
    finally:
        _DISABLED.reset(token)


def switched_off():
    """Whether fused kernels are switched off here: by ``$KDIFF_FUSED_KERNELS`` (0, false,
    no or off) or inside ``without_fused_kernels()``."""
    return _DISABLED.get() or os.environ.get(ENABLE_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off")


@functools.cache
def _load(name):
    """The op library built from ``<name>.cc``, or the reason it is unavailable."""
    from kdiff.kernels import _build

    try:
        return _build.build(os.path.join(_SOURCES, f"{name}.cc")), None
    except _build.BuildError as error:
        warnings.warn(
            f"kdiff's fused {name} kernel is unavailable, so TensorFlow's slower ops are used: {error}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None, str(error)


def library(name="group_norm"):
    """The op library built from ``<name>.cc`` (built on the first call), or None where it
    cannot be built (after one warning saying why).

    Args:
        name: the kernel's source file name, without ``.cc``.

    Returns:
        ``tf.load_op_library``'s module, or None.
    """
    return _load(name)[0]


def status(name="group_norm"):
    """One line on whether kernel ``name`` is used here, and why not when it is not."""
    if switched_off():
        return f"{name}: switched off (${ENABLE_VARIABLE}=0 or without_fused_kernels())"
    from kdiff.kernels import _build

    loaded, reason = _load(name)
    if loaded is None:
        return f"{name}: unavailable: {reason}"
    return f"{name}: built, {_build.library_path(os.path.join(_SOURCES, f'{name}.cc'))}"


def __getattr__(attribute):  # group_norm imports TensorFlow: only when asked for
    if attribute == "group_norm":
        from kdiff.kernels.normalization import group_norm

        return group_norm
    raise AttributeError(f"module 'kdiff.kernels' has no attribute {attribute!r}")
