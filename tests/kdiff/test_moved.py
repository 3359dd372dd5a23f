"""The modules and names that moved: the old names still import for one release, warn
naming the new home, and give the very object at it; kdiff's own code uses none of them."""

import importlib
import subprocess
import sys

import pytest

import kdiff
from kdiff import _moved


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_an_old_module_name_warns_and_is_the_new_module(old):
    new = importlib.import_module(_moved.MOVED[old])
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=rf"{old} is now {_moved.MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is new and new.__spec__.name == _moved.MOVED[old]  # the new module keeps its own spec
    attribute = old.rpartition(".")[2]
    kdiff.__dict__.pop(attribute, None)  # the import set it; before any import the attribute warns
    with pytest.warns(DeprecationWarning, match=rf"{old} is now"):
        assert getattr(kdiff, attribute) is new


def test_an_unknown_attribute_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_module'"):
        kdiff.no_such_module  # noqa: B018


@pytest.mark.slow
def test_kdiff_and_the_pipeline_import_no_old_name():
    """Importing every module of kdiff and the pipeline raises no DeprecationWarning of kdiff's."""
    code = (
        "import pkgutil, importlib, kdiff, pipeline\n"
        "for package in (kdiff, pipeline):\n"
        "    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
    )
    result = subprocess.run(
        # every moved-name warning starts "kdiff.": those are errors, other libraries' are not
        [sys.executable, "-W", "error:kdiff.:DeprecationWarning", "-c", code], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
