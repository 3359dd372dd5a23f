"""``--runner=DaskRunner``: the Beam stages on a ``dask.distributed`` cluster.

Beam knows its DaskRunner (``apache_beam.runners.dask.dask_runner``) only by its full name,
and its ``--dask_*`` options exist only once its module is imported: ``resolve`` names our
subclass of it (``pipeline.dask_runner.DaskRunner``, with two of its faults fixed), imports it, and refuses what it cannot run correctly before
any stage starts. This module imports neither dask nor Beam until it is asked to.

What Beam's DaskRunner lacks, and how the stages live with it, is in docs/pipeline.md
("Running on Dask"). Its workers are processes started on their own, which see none of this
process's settings: the Beam ``--s3_*`` flags and the environment the run's S3 store reads
reach only this process, so an ``--output_dir`` on S3 is refused.
"""

from __future__ import annotations

RUNNER = "pipeline.dask_runner.DaskRunner"
# the names that choose it: Beam's runner's short and full names, and ours
NAMES = ("DaskRunner", "apache_beam.runners.dask.dask_runner.DaskRunner", RUNNER)
# The stages that run Beam pipelines, each made to run in full on the DaskRunner (docs/pipeline.md).
STAGES = ("ingest", "sample", "evaluate")


def _without_runner(beam_args):
    """Beam's flags without their ``--runner`` (``--runner=X`` or ``--runner X``)."""
    kept, skip = [], False
    for arg in beam_args:
        if skip:
            skip = False
        elif arg == "--runner":
            skip = True
        elif not arg.startswith("--runner="):
            kept.append(arg)
    return kept


def uses_dask(beam_args):
    """Whether Beam's flags choose the DaskRunner (by its short or its full name)."""
    from pipeline.runners import runner_name

    return runner_name(beam_args) in NAMES


def resolve(beam_args, output_dir):
    """Beam's flags ready for a run: ``--runner=DaskRunner`` (or Beam's full name of it) becomes
    ``pipeline.dask_runner.DaskRunner``, whose ``--dask_*`` options then parse; any other
    runner's flags are returned unchanged.

    Args:
        beam_args: Beam's command-line flags.
        output_dir: the run's ``--output_dir``.

    Returns:
        The flags to give the Beam stages.

    Raises:
        ValueError: the DaskRunner chosen without dask.distributed installed, without a
            scheduler to connect to, or for an ``--output_dir`` on an object store — the
            message says why and what to do.
    """
    if not uses_dask(beam_args):
        return list(beam_args)
    try:
        from pipeline.dask_runner import DaskOptions
    except ImportError as error:
        raise ValueError(
            f"--runner=DaskRunner needs dask.distributed ({error}); install it with "
            "pip install -e '.[dask]' (or pip install 'dask[distributed]')."
        ) from None
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(list(beam_args)).view_as(DaskOptions)
    if not options.address and not options.scheduler_file:
        raise ValueError(
            "--runner=DaskRunner needs a running cluster: pass --dask_client_address=HOST:PORT (a `dask scheduler`'s "
            "address) or --dask_scheduler_file=PATH. Without one, Beam's DaskRunner would start a new local "
            "cluster for every Beam stage and never stop it."
        )
    from pipeline import io

    if io.is_remote(output_dir):
        raise ValueError(
            f"--runner=DaskRunner cannot write --output_dir={output_dir}: the stages {', '.join(STAGES)} have their "
            "Dask workers read and write the run's object store themselves, and the store's settings (Beam's --s3_* "
            "flags, the AWS_* environment of this process) do not reach workers started on their own, which would use "
            "whatever store their own environment names. Use a local --output_dir that the workers share, or another "
            "runner."
        )
    return _without_runner(beam_args) + [f"--runner={RUNNER}"]
