"""The modules that moved (into ``kdiff.samplers``; ``kdiff.processes`` into ``kdiff.process``), and the names that were renamed, still
importable by their old names for one release, with a ``DeprecationWarning`` that names the
new home."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old name → new home
MOVED = {
    "kdiff.solvers": "kdiff.samplers",
    "kdiff.registry": "kdiff.samplers.registry",
    "kdiff.recipes": "kdiff.samplers.recipes",
    "kdiff.guidance": "kdiff.samplers.guidance",
    "kdiff.editing": "kdiff.samplers.editing",
    "kdiff.draw": "kdiff.samplers.draw",
    "kdiff.processes": "kdiff.process",
}


def resolve(old):
    """The module now at ``MOVED[old]``, after a warning that names it.

    Args:
        old: a key of ``MOVED``.

    Returns:
        The module.
    """
    new = MOVED[old]
    warnings.warn(f"{old} is now {new}; the old name goes in the next release.", DeprecationWarning, stacklevel=3)
    return importlib.import_module(new)


def renamed(module, renames, why=""):
    """A module's ``__getattr__`` that serves renamed attributes by their old names, warning.

    Args:
        module: the module's name (``__name__``), for the messages.
        renames: old name → the new one's full dotted path (``"kdiff.models.RefineNet"``).
        why: added to the warning after the new name (e.g. what the old name now means).

    Returns:
        ``__getattr__(name)``: the renamed object after a ``DeprecationWarning``; an
        ``AttributeError`` for any other name.
    """

    def __getattr__(name):
        if name not in renames:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        home, _, new = renames[name].rpartition(".")
        warnings.warn(
            f"{module}.{name} is now {renames[name]}{why}; the old name goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), new)

    return __getattr__


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import kdiff.solvers`` (and the others) load the module at its new home."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = resolve(spec.name)
        spec.loader_state = module.__spec__  # the import system sets module.__spec__ = spec next
        return module

    def exec_module(self, module):
        # the module at its new home is already executed; it keeps its own spec
        module.__spec__ = module.__spec__.loader_state


def install():
    """Puts the alias finder on ``sys.meta_path`` once (``import kdiff`` calls it)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
