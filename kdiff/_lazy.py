"""Packages whose names are imported on first use (PEP 562), so that importing one imports
nothing heavy: ``import kdiff`` and the commands' ``--help`` start without TensorFlow."""

from __future__ import annotations

import importlib
import importlib.util
import sys


def module_getattr(package, attributes, fallback=None):
    """A package's ``__getattr__``: its public names and its submodules, imported on first use.

    Args:
        package: the package's ``__name__``.
        attributes: name → the module defining it (``{"DDPM": "kdiff.diffusion"}``); the
            value is then kept in the package, so later lookups do not come back here.
        fallback: ``fallback(name)`` → a value, or None to go on (``kdiff``'s moved modules).

    Returns:
        ``__getattr__(name)``: the attribute, or else the submodule ``package.name`` when one
        exists (as an eager ``__init__`` would have bound it); AttributeError otherwise.
    """

    def __getattr__(name):
        if name in attributes:
            value = getattr(importlib.import_module(attributes[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        if fallback is not None:
            value = fallback(name)
            if value is not None:
                return value
        if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")  # the import binds it in the package
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def module_dir(package, public):
    """A package's ``__dir__``: what it holds so far and its public names."""

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(public))

    return __dir__
