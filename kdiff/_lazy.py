"""Packages whose names are imported on first use (PEP 562), so that importing one imports
nothing heavy: ``import kdiff`` and the commands' ``--help`` start without TensorFlow.

A package lists its public names in its ``__init__.pyi`` (Scientific Python's SPEC 1, as
``lazy_loader.attach_stub`` reads it): ``from kdiff.diffusion import DDPM as DDPM`` for a
name, ``from kdiff import metrics as metrics`` for a submodule, and ``__all__``.
:func:`attach_stub` builds the package's ``__getattr__``, ``__dir__`` and ``__all__`` from
it; type checkers, editors and the API docs read the same stub.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
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


def read_stub(package, init_file):
    """The public names of a package, from its ``__init__.pyi``.

    Args:
        package: the package's ``__name__``.
        init_file: its ``__init__.py`` (``__file__``); the stub sits beside it.

    Returns:
        ``(attributes, public)``: name → its module for the names the stub imports from
        other modules (the package's own submodules are left out: they import as
        submodules), and the stub's ``__all__``.

    Raises:
        ValueError: an import that is not ``from <absolute module> import name as name``,
            or an ``__all__`` that differs from the names the stub imports or annotates.
    """
    path = os.path.splitext(init_file)[0] + ".pyi"
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), path)
    attributes, declared, public = {}, [], None
    for node in tree.body:
        if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and (node.level or not node.module)):
            raise ValueError(f"Expected `from <absolute module> import name as name` in {path}. Received: line {node.lineno}")
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.asname != alias.name:
                    raise ValueError(f"Expected `{alias.name} as {alias.name}` in {path}. Received: line {node.lineno}")
                declared.append(alias.name)
                if node.module != package:
                    attributes[alias.name] = node.module
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):  # __version__: str
            declared.append(node.target.id)
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            public = list(ast.literal_eval(node.value))
    if public is None or set(public) != set(declared):
        raise ValueError(
            f"Expected __all__ in {path} to list the names it imports or annotates. Received: missing "
            f"{sorted(set(declared) - set(public or ()))}, unknown {sorted(set(public or ()) - set(declared))}"
        )
    return attributes, public


def attach_stub(package, init_file, fallback=None):
    """``__getattr__``, ``__dir__`` and ``__all__`` of a package, from its ``__init__.pyi``.

    Args:
        package: the package's ``__name__``.
        init_file: its ``__file__``.
        fallback: as in :func:`module_getattr`.

    Returns:
        ``(__getattr__, __dir__, __all__)`` to assign in the package.
    """
    attributes, public = read_stub(package, init_file)
    return module_getattr(package, attributes, fallback), module_dir(package, public), public
