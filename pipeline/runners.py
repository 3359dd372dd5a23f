"""The Beam runner of a run's Beam stages (ingest, sample, evaluate), checked before any
stage runs: a runner Beam does not know, or one without what it needs to start, fails in
seconds with a message naming the flag, not after the train stage.

What each runner needs besides ``--runner``:

* ``PortableRunner``: ``--job_endpoint=HOST:PORT``, a Beam job service (Beam's own:
  ``python -m apache_beam.runners.portability.local_job_service_main --port=PORT``), or
  ``embed`` for one started in this process. With ``--environment_type=EXTERNAL`` (SDK
  workers in a worker pool: ``python -m apache_beam.runners.worker.worker_pool_main
  --service_port=PORT``), ``--environment_config=HOST:PORT``, the pool's address.
* ``DataflowRunner``: ``--project``, ``--region``, ``--temp_location=gs://…``, the Dataflow
  client (``pip install 'kdiff[dataflow]'``), and an ``--output_dir`` in an object store,
  since its workers cannot reach this machine's disk (docs/pipeline.md, "Running on
  Dataflow").

The checks read the flags only: nothing here contacts a service.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util

from pipeline import io

__all__ = ["DEFAULT_RUNNER", "check", "resolve", "runner_name"]

DEFAULT_RUNNER = "DirectRunner"
PORTABLE_RUNNER = "apache_beam.runners.portability.portable_runner.PortableRunner"
DATAFLOW_RUNNER = "apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"
# what Beam's DataflowRunner imports to build its job (apache-beam[gcp] has it)
DATAFLOW_CLIENT = "google.cloud.dataflow"


def runner_name(beam_args):
    """The ``--runner`` value of Beam's flags, as given (None when not given)."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    return PipelineOptions(list(beam_args)).view_as(StandardOptions).runner


def _known_runners():
    """Beam's runners: lower-case class name → module path (as Beam's ``create_runner`` reads them)."""
    from apache_beam.options.pipeline_options import StandardOptions

    return {path.rsplit(".", 1)[-1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS}


def resolve(name):
    """The module path of the runner ``--runner=name`` names, as Beam resolves it.

    Args:
        name: a runner's class name in any case, with or without its ``Runner`` suffix
            ("DirectRunner", "dataflow"), or the module path of a ``PipelineRunner``
            subclass.

    Returns:
        ``"module.ClassName"``.

    Raises:
        ValueError: Beam knows no such runner (the message lists Beam's and suggests the
            closest), or the module path names no ``PipelineRunner`` subclass.
    """
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.runner import PipelineRunner

    known = _known_runners()
    path = known.get(name.lower()) or known.get(name.lower() + "runner")
    if path is not None:
        return path
    if "." not in name:
        close = difflib.get_close_matches(name, StandardOptions.KNOWN_RUNNER_NAMES, n=1, cutoff=0.5)
        hint = f"; did you mean --runner={close[0]}?" if close else ""
        raise ValueError(
            f"argument --runner: Beam knows no runner {name!r}; expected one of "
            f"{', '.join(StandardOptions.KNOWN_RUNNER_NAMES)}, or the module path of a PipelineRunner subclass{hint}"
        )
    module, _, attribute = name.rpartition(".")
    try:
        runner = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"argument --runner: cannot import {name}: {type(error).__name__}: {error}") from None
    if not (isinstance(runner, type) and issubclass(runner, PipelineRunner)):
        raise ValueError(f"argument --runner: {name} is not a Beam PipelineRunner subclass")
    return name


def check(beam_args, output_dir):
    """Fails when the Beam stages cannot start on the runner the flags name.

    Args:
        beam_args: Beam's flags (already checked to be Beam options).
        output_dir: the run's ``--output_dir``.

    Raises:
        ValueError: the message names the flag, what was expected and what was received:
            an unknown runner, ``PortableRunner`` without ``--job_endpoint``,
            ``--environment_type=EXTERNAL`` without ``--environment_config``,
            ``DataflowRunner`` without its client, project, region, a ``gs://``
            ``--temp_location`` or an object-store ``--output_dir``; an ``--output_dir``
            URL of a store kdiff does not support.
    """
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, PortableOptions

    try:
        remote = io.is_remote(output_dir)
    except ValueError as error:
        raise ValueError(f"argument --output_dir: {error}") from None
    options = PipelineOptions(list(beam_args))
    name = runner_name(beam_args) or DEFAULT_RUNNER
    path = resolve(name)
    portable = options.view_as(PortableOptions)
    if path == PORTABLE_RUNNER and not portable.job_endpoint:
        raise ValueError(
            f"--runner={name} needs --job_endpoint=HOST:PORT, the address of a Beam job service (Beam's own: "
            "python -m apache_beam.runners.portability.local_job_service_main --port=PORT), or --job_endpoint=embed "
            "to start one in this process. Received: no --job_endpoint"
        )
    if (portable.environment_type or "").upper() == "EXTERNAL" and not portable.environment_config:
        raise ValueError(
            "--environment_type=EXTERNAL needs --environment_config=HOST:PORT, the address of a running SDK worker "
            "pool (python -m apache_beam.runners.worker.worker_pool_main --service_port=PORT). "
            "Received: no --environment_config"
        )
    if path == DATAFLOW_RUNNER:
        _check_dataflow(name, options.view_as(GoogleCloudOptions), output_dir, remote)


def _importable(module):
    """Whether ``module`` can be imported (found, not imported: it may be slow to load)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _check_dataflow(name, cloud, output_dir, remote):
    """What Dataflow needs before a job can be built: its client, the job's place in Google
    Cloud, and a run folder its workers can reach."""
    if not _importable(DATAFLOW_CLIENT):
        raise ValueError(
            f"--runner={name} needs Beam's Dataflow client ({DATAFLOW_CLIENT}, part of apache-beam[gcp]); "
            "install it with: pip install 'kdiff[dataflow]'"
        )
    missing = [flag for flag, value in (("--project", cloud.project), ("--region", cloud.region)) if not value]
    if not (cloud.temp_location or "").startswith("gs://"):
        missing.append("--temp_location=gs://BUCKET/PATH")
    if missing:
        raise ValueError(
            f"--runner={name} needs {', '.join(missing)} (where the job runs and stages its files). "
            f"Received: --project={cloud.project}, --region={cloud.region}, --temp_location={cloud.temp_location}"
        )
    if not remote:
        raise ValueError(
            f"--runner={name}: Dataflow's workers cannot reach this machine's disk; pass an --output_dir in a "
            f"bucket (gs://bucket/run, s3://bucket/run). Received: --output_dir={output_dir}"
        )
