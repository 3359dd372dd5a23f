"""Beam's DaskRunner, closing its connection to the cluster when a pipeline ends.

``apache_beam.runners.dask.dask_runner.DaskRunner`` opens a ``distributed.Client`` for each
pipeline and never closes it: each Beam stage would leave one behind, reconnecting (and
logging tracebacks) once the scheduler is gone. ``--runner=DaskRunner`` names this subclass
(``pipeline.dask_flags``); it runs pipelines as Beam's does. Importing this module needs
``dask.distributed`` (the ``dask`` extra).
"""

from __future__ import annotations

from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.runner import PipelineState

DaskOptions = beam_dask.DaskOptions  # importing Beam's module registers the --dask_* options


class _ClosingResult(beam_dask.DaskRunnerResult):
    """Beam's result of a Dask pipeline, closing its client once the pipeline has ended."""

    def wait_until_finish(self, duration=None):
        try:
            return super().wait_until_finish(duration)
        finally:
            if PipelineState.is_terminal(self.state):
                self.client.close()

    def cancel(self):
        try:
            return super().cancel()
        finally:
            self.client.close()


class DaskRunner(beam_dask.DaskRunner):
    """Beam's DaskRunner whose pipeline results close their client when the pipeline ends."""

    def run_pipeline(self, pipeline, options):
        result = super().run_pipeline(pipeline, options)
        return _ClosingResult(result.client, result.futures)
