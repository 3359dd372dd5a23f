"""Compiling a kernel's C++ source against the installed TensorFlow, once per machine.

The shared library is built with the system's C++ compiler (``$CXX``, else ``c++``) and
TensorFlow's own compile and link flags, optimized for this CPU (``-march=native``), into
a cache folder, and loaded with ``tf.load_op_library``. Its file name holds a digest of
everything the binary depends on — the source, TensorFlow's version and flags, the
compiler and the CPU's instruction sets — so a changed source, an upgraded TensorFlow or
a cache folder shared with another machine gets a build of its own.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import tempfile

import tensorflow as tf

from kdiff import _cpu

CACHE_VARIABLE = "KDIFF_KERNEL_CACHE"
COMPILER_VARIABLE = "CXX"
BUILD_TIMEOUT_SECONDS = 600
OPTIMIZATION_FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-w")


class BuildError(RuntimeError):
    """A kernel could not be compiled or loaded; the message says why."""


def cache_directory():
    """Where built kernels are kept: ``$KDIFF_KERNEL_CACHE``, else ``kdiff/kernels`` under
    ``$XDG_CACHE_HOME`` (default ``~/.cache``)."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kdiff", "kernels")


def _cpu_identity():
    """The CPU's instruction sets (Linux), or the processor's name elsewhere: what a
    ``-march=native`` build depends on."""
    return " ".join(_cpu.cpu_flags()) or platform.processor() or platform.machine()


def _compiler():
    return os.environ.get(COMPILER_VARIABLE) or "c++"


def _command(source, target):
    return [
        _compiler(), source, "-o", target, *OPTIMIZATION_FLAGS,
        *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags(),
    ]


def library_path(source):
    """The cached build of ``source`` for this machine and TensorFlow (it may not exist yet).

    Args:
        source: path of the kernel's ``.cc`` file.

    Returns:
        ``<cache>/<name>-<digest>.so``.
    """
    digest = hashlib.sha256()
    with open(source, "rb") as file:
        digest.update(file.read())
    for part in (tf.__version__, " ".join(_command("", "")), _compiler_version(), _cpu_identity()):
        digest.update(part.encode())
    name = os.path.splitext(os.path.basename(source))[0]
    return os.path.join(cache_directory(), f"{name}-{digest.hexdigest()[:16]}.so")


def _compiler_version():
    try:
        result = subprocess.run([_compiler(), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BuildError(f"no C++ compiler: running {_compiler()!r} failed ({error}); set ${COMPILER_VARIABLE}") from None
    return result.stdout


def build(source):
    """Compiles ``source`` unless its build is cached, and loads it.

    Concurrent builds (several processes on one machine) each compile to a temporary
    file and rename it into place, so a reader never sees half a library.

    Args:
        source: path of the kernel's ``.cc`` file.

    Returns:
        The loaded op library (``tf.load_op_library``'s module).

    Raises:
        BuildError: no compiler, a failed compilation (its last lines quoted), an
            unwritable cache folder, or a library TensorFlow cannot load.
    """
    target = library_path(source)
    if not os.path.exists(target):
        folder = os.path.dirname(target)
        try:
            os.makedirs(folder, exist_ok=True)
            handle, partial = tempfile.mkstemp(prefix=".building-", suffix=".so", dir=folder)
            os.close(handle)
        except OSError as error:
            raise BuildError(f"cannot write the kernel cache {folder} ({error}); set ${CACHE_VARIABLE}") from None
        try:
            result = subprocess.run(
                _command(source, partial), capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS
            )
            if result.returncode != 0:
                tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
                raise BuildError(f"compiling {os.path.basename(source)} failed:\n{tail}")
            os.replace(partial, target)
        except subprocess.TimeoutExpired:
            raise BuildError(f"compiling {os.path.basename(source)} took over {BUILD_TIMEOUT_SECONDS} s") from None
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    try:
        return tf.load_op_library(target)
    except (tf.errors.NotFoundError, OSError) as error:
        raise BuildError(f"TensorFlow could not load {target}: {error}") from None
