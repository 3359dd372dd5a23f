"""Beam's DaskRunner with two of its faults fixed: bundles that share outputs, and a client
left open.

``apache_beam.runners.dask.dask_runner.DaskRunner`` (Beam 2.78) runs each Dask partition of a
ParDo as one bundle, collecting the outputs in a receiver object built once per transform
and never emptied: two partitions of a ParDo that meet in one worker process (its task
graph is unpickled once) share it, so the second returns the first's outputs too — records
duplicated whenever a PCollection has more than one partition (more than 128 elements, or
``--dask_npartitions``); likewise they share one DoFn instance. Its ParDo translation here
gives each bundle its own receivers and its own copy of the DoFn. It also opens a
``distributed.Client`` for each pipeline and never closes it (each Beam stage would leave one
behind, reconnecting and logging tracebacks once the scheduler is gone): the results here
close it when the pipeline ends.

``--runner=DaskRunner`` names this runner (``pipeline.dask_flags``). Importing this module
needs ``dask.distributed`` (the ``dask`` extra); the scheduler and the workers import it too
(the ParDo bundles are this module's functions).
"""

from __future__ import annotations

import contextlib

import apache_beam as beam
import cloudpickle
from apache_beam.runners.common import DoFnContext, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import transform_evaluator
from apache_beam.runners.runner import PipelineState

DaskOptions = beam_dask.DaskOptions  # importing Beam's module registers the --dask_* options


def _apply_dofn_to_bundle(items, fn_payload, window_fn, invoker_kwargs):
    """Runs one bundle (a Dask partition) through a fresh copy of the DoFn, collecting its
    outputs in receivers of its own: Beam's ``apply_dofn_to_bundle`` with per-bundle state.

    Args:
        items: the partition's windowed elements.
        fn_payload: the DoFn, cloudpickled (unpickled here: one instance per bundle).
        window_fn: the main input's WindowFn.
        invoker_kwargs: the rest of ``DoFnInvoker.create_invoker``'s arguments.

    Returns:
        The bundle's outputs (every output tag's, as Beam's DaskRunner gives them).
    """
    receivers = transform_evaluator.OneReceiver()
    handler = _OutputHandler(
        window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
        per_element_output_counter=None, output_batch_converter=None, process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    invoker_args = [DoFnSignature(cloudpickle.loads(fn_payload)), handler]
    return transform_evaluator.apply_dofn_to_bundle(items, invoker_args, invoker_kwargs, receivers)


class _ParDo(transform_evaluator.ParDo):
    """Beam's ParDo translation, each bundle with its own DoFn and receivers."""

    def apply(self, input_bag, side_inputs=None):
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        invoker_kwargs = dict(
            context=DoFnContext(transform.label, state=None), side_inputs=side_inputs, input_args=list(args),
            input_kwargs=kwargs, user_state_context=None, bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
        )
        return input_bag.map(transform_evaluator.get_windowed_value, window_fn).map_partitions(
            _apply_dofn_to_bundle, cloudpickle.dumps(transform.fn), window_fn, invoker_kwargs
        )


@contextlib.contextmanager
def _pardo_translation():
    """Beam's DaskRunner looks its translations up in a module-level table while it builds a
    pipeline's graph: ours stands in for ParDo's for that time only."""
    table = transform_evaluator.TRANSLATIONS
    saved = table[beam.ParDo]
    table[beam.ParDo] = _ParDo
    try:
        yield
    finally:
        table[beam.ParDo] = saved


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
    """Beam's DaskRunner with per-bundle ParDo state, whose results close their client."""

    def run_pipeline(self, pipeline, options):
        with _pardo_translation():
            result = super().run_pipeline(pipeline, options)
        return _ClosingResult(result.client, result.futures)
