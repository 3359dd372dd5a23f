"""Beam patterns that every runner runs in full: one last step on which every branch ends,
and a global combine keyed by an int.

Beam's DaskRunner (``apache_beam.runners.dask.dask_runner``) computes only the Dask graph of
a pipeline's last transform and reports the run DONE: a branch that the last transform does
not depend on (a second sink, a statistics file) is silently never run. A pipeline that ends
in ``JoinBranches`` — one step depending on every branch — runs the same on every runner.

Dask's bag ``groupby`` (the DaskRunner's GroupByKey) sends each element to a partition by
the ``hash`` of its key, computed in whichever worker process holds it: the keys must hash
alike in every process. An int does; a string's hash varies with ``PYTHONHASHSEED`` (which
``dask worker``'s nanny fixes for its workers) and ``None``'s with its address (Python
3.11), so ``beam.CombineGlobally``, which keys every element by ``None``, gives one partial
result per worker on the DaskRunner. ``CombineAll`` is the same combine keyed by an int.
"""

from __future__ import annotations

import apache_beam as beam

_KEY = 0  # the one group: an int hashes alike in every process


def _tag(value, index):
    return _KEY, (index, value)


def _collect(element, names):
    """``(key, [(branch index, value), …])`` → ``{branch name: [values]}`` (every name, in order)."""
    _, tagged = element
    joined = {name: [] for name in names}
    for index, value in tagged:
        joined[names[index]].append(value)
    return joined


class JoinBranches(beam.PTransform):
    """``{name: PCollection}`` → one element ``{name: [that PCollection's elements]}``, made only
    once every branch is complete.

    Each branch should end in a small PCollection (what a sink wrote: file names, counts):
    all their elements meet in one worker. At least one branch must hold an element, or
    nothing is emitted.
    """

    def expand(self, branches):
        names = list(branches)
        tagged = [
            branches[name] | f"Tag{index}" >> beam.Map(_tag, index) for index, name in enumerate(names)
        ]
        return (
            tagged
            | "Flatten" >> beam.Flatten()
            | "Group" >> beam.GroupByKey()
            | "Collect" >> beam.Map(_collect, names)
        )


def _keyed(value):
    return _KEY, value


def _value(element):
    return element[1]


class CombineAll(beam.PTransform):
    """``beam.CombineGlobally(fn).without_defaults()`` keyed by an int, whose group every
    runner keeps whole (see the module docstring): one element, the combined value, or none
    for an empty input.

    Args:
        fn: a ``beam.CombineFn``.
    """

    def __init__(self, fn, label=None):
        super().__init__(label)
        self._fn = fn

    def expand(self, pcoll):
        return (
            pcoll
            | "Key" >> beam.Map(_keyed)
            | "CombinePerKey" >> beam.CombinePerKey(self._fn)
            | "Value" >> beam.Map(_value)
        )
