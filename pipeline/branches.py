"""A Beam pipeline's branches joined into one last step, so that every runner runs them all.

Beam's DaskRunner (``apache_beam.runners.dask.dask_runner``) computes only the Dask graph of
a pipeline's last transform and reports the run DONE: a branch that the last transform does
not depend on (a second sink, a statistics file) is silently never run. A pipeline that ends
in ``JoinBranches`` — one step depending on every branch — runs the same on every runner.
The keys it groups on are ints, whose hash is the same in every worker process (Dask's bag
``groupby`` partitions by ``hash``; a string's varies with ``PYTHONHASHSEED``, ``None``'s
with its address).
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
