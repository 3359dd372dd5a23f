"""Runs one of the survey's experiments: each of its runs through the stages, then its report.

``pipeline.experiments`` says what an experiment is (its runs, their configs, its report);
this module runs them with ``pipeline.orchestrator.run_stages``. ``python -m pipeline.run
--experiment=NAME`` calls :func:`run_experiment`.
"""

from __future__ import annotations

from pipeline import io, orchestrator
from pipeline.stages import STAGE_ORDER


def run_experiment(name, scale, output_dir, beam_args, *, overrides=None, paths=None, force=False, allow_cpu=False,
                   stages=STAGE_ORDER, log=print):
    """Runs an experiment's runs through the pipeline's stages and writes its report.

    Args:
        name: the experiment (a key of ``pipeline.experiments.experiments()``).
        scale: "small", "medium" or "seed" (``pipeline.experiments.SCALES``).
        output_dir: the root; runs go to ``<output_dir>/<scale>/runs/<run>``, the report to
            ``<output_dir>/<scale>/<name>/``.
        beam_args: Beam pipeline flags.
        overrides: ``RunConfig`` fields applied over every run's (the command line's).
        paths: ``{"celeba_hq": …, "ncsn_checkpoint": …}`` for the seed scale.
        force: rerun cached stages.
        allow_cpu: let table1 train without a GPU at the seed scale.
        stages: the stages each run runs (``--stages``: e.g. ``("ingest", "train")`` trains
            every model now and samples later); the report is written once they reach it.
        log: where progress lines go.

    Returns:
        The report's path, or None when ``stages`` stop before the report.

    Raises:
        ValueError: an unknown experiment or scale, a bad override, (seed scale) what is
            missing, or an ``output_dir`` that cannot be written, all named before anything runs.
        StageError: a stage failed.
    """
    from pipeline import experiments

    experiment, configs = experiments.plan(name, scale, overrides, paths, allow_cpu)
    for config in configs.values():
        orchestrator.check_samplers(config)
    orchestrator.check_output_dir(output_dir)  # an unreachable store or a missing bucket: before any run
    root = io.join(output_dir, scale)
    for run_name, config in configs.items():
        log(f"[{name}] run {run_name} → {io.join(root, 'runs', run_name)}")
        orchestrator.run_stages(config, io.join(root, "runs", run_name), beam_args, force=force, stages=stages)
    if "report" not in stages:
        log(f"[{name}] report not written: --stages stops before it; run again without --stages to finish "
            "(the stages that ran are cached)")
        return None
    path = experiments.write_report(experiment, scale, root, experiments.hardware())
    log(f"[{name}] report: {io.abspath(path)}")
    return path
