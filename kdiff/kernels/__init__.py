"""CPU kernels where TensorFlow's own are slower, built on first use.

* ``group_norm`` (``group_norm.cc``): GroupNorm, with the SiLU that follows it in every
  U-Net block, as one C++ kernel forward and one backward, for float32 and bfloat16
  tensors. TensorFlow normalizes a group with a dozen elementwise and reduction ops
  forward and more backward; PyTorch does it in one kernel each way.
* ``conv2d_3x3`` (``winograd.cc``): the U-Nets' 3×3 stride-1 convolutions of float32
  images by Winograd's F(2×2, 3×3), 16 multiplications for each 2×2 block of outputs
  instead of 36; its input gradient is the same kernel again, its filter gradient
  TensorFlow's.

A kernel is compiled the first time it is needed, with the machine's C++ compiler against
the installed TensorFlow (10–15 s each), and cached (``kdiff.kernels._build``);
``python -m kdiff.kernels`` builds them ahead of time and says where they are. Where one
cannot be used, the same layer computes with TensorFlow's own ops, to float32 round-off of
the same result:

* ``KDIFF_FUSED_KERNELS=0`` in the environment, or inside ``without_fused_kernels()``;
* no C++ compiler, or a failed build (one warning says why);
* a GPU or TPU is visible, or the graph is compiled by XLA (the kernels are CPU-only and
  XLA cannot compile them);
* a dtype the kernel does not take (GroupNorm: float32 and bfloat16; the convolution:
  float32).

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

KERNELS = ("group_norm", "winograd")  # the sources' names, without ``.cc``

__all__ = [
    "conv2d_3x3", "cpu_library", "group_norm", "library", "status", "switched_off",
    "without_fused_kernels", "ENABLE_VARIABLE", "KERNELS",
]


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


def library(name):
    """The op library built from ``<name>.cc`` (built on the first call), or None where it
    cannot be built (after one warning saying why).

    Args:
        name: the kernel's source file name, without ``.cc`` (one of ``KERNELS``).

    Returns:
        ``tf.load_op_library``'s module, or None.
    """
    if name not in KERNELS:
        raise ValueError(f"Expected `name` one of {KERNELS}. Received: name={name!r}")
    return _load(name)[0]


def cpu_library(name, x, dtypes):
    """Kernel ``name``'s library when it may compute ``x`` here, else None.

    Args:
        name: one of ``KERNELS``.
        x: the tensor the kernel would take.
        dtypes: the dtypes the kernel takes.

    Returns:
        The library, or None: a dtype not in ``dtypes``, kernels switched off, a GPU or TPU
        visible (a CPU-only op would copy every activation off the accelerator), an XLA
        graph (XLA cannot compile a custom op), or a library that cannot be built.
    """
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    if x.dtype not in dtypes or switched_off():
        return None
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return None
    if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return None
    return library(name)


def status(name=None):
    """Whether kernel ``name`` (None: each of ``KERNELS``) is used here, and why not when
    it is not: one line a kernel."""
    if name is None:
        return "\n".join(status(each) for each in KERNELS)
    if switched_off():
        return f"{name}: switched off (${ENABLE_VARIABLE}=0 or without_fused_kernels())"
    from kdiff.kernels import _build

    loaded, reason = _load(name)
    if loaded is None:  # a compiler's quoted lines, joined: one line a kernel
        return f"{name}: unavailable: " + "; ".join(line.strip() for line in reason.splitlines() if line.strip())
    return f"{name}: built, {_build.library_path(os.path.join(_SOURCES, f'{name}.cc'))}"


def __getattr__(attribute):  # the kernels' Python side imports TensorFlow: only when asked for
    if attribute == "group_norm":
        from kdiff.kernels.normalization import group_norm

        return group_norm
    if attribute == "conv2d_3x3":
        from kdiff.kernels.convolution import conv2d_3x3

        return conv2d_3x3
    raise AttributeError(f"module 'kdiff.kernels' has no attribute {attribute!r}")
