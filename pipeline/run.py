"""The kdiff pipeline's command line: ``python -m pipeline.run --runner=DirectRunner``.

ingest → train → sample → evaluate → retrieve → report, each stage writing to
``<output_dir>/<stage>/`` with a fingerprint of its parameters and inputs: a rerun skips
completed stages whose fingerprint matches (TFX-style caching), ``--force`` reruns them.
Our own flags (every ``RunConfig`` field, ``--config``, ``--preset``, ``--output_dir``,
``--force``, ``--stages``, ``--verbose``; ``--help`` lists them by stage) are split from
Beam's pipeline flags (``--runner``, ``--direct_num_workers``, ``--direct_running_mode``,
Dataflow / Flink / Spark options), which are passed to the Beam stages untouched. A flag
that is neither fails, naming the closest known flag. TensorFlow's and Beam's logs are
hidden unless ``--verbose``; the root logger is left alone.

This module parses and checks the flags; ``pipeline.orchestrator`` runs the stages,
``pipeline.experiment_runner`` the survey's experiments (``--experiment``), and the report
stage (``pipeline.stages.report``) prints the headline numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys

from kdiff_console import quiet_logs
from pipeline import cluster
from pipeline import config as config_lib
from pipeline import orchestrator
from pipeline.io import s3
from pipeline.io.locks import LEASE_SECONDS
from pipeline.stages import STAGE_ORDER

# pipeline.stages' modules (and with them kdiff and TensorFlow) are imported inside the
# functions that run stages, after quiet_logs: --help and flag errors never load
# TensorFlow, and its start-up lines stay hidden.


GROUP_TITLES = {
    "ingest": "data / ingest",
    "train": "model / train",
    "sample": "sample",
    "evaluate": "evaluate / retrieve",
    "run": "run",
}

EPILOG = """\
Apache Beam's own flags pass through to the Beam stages, e.g.
  --runner=DirectRunner (the default here) | PortableRunner | DataflowRunner | FlinkRunner | SparkRunner
  --direct_num_workers=2 --direct_running_mode=multi_processing   (DirectRunner)
  --job_endpoint=HOST:PORT [--environment_type=EXTERNAL --environment_config=HOST:PORT]   (PortableRunner)
  --project=… --region=… --temp_location=gs://… --sdk_container_image=…   (DataflowRunner)
  --runner=DaskRunner --dask_client_address=HOST:PORT             (a dask.distributed cluster)
A flag that is neither ours nor a Beam option is an error. Beam's full list: --help_beam
(the options of apache_beam.options.pipeline_options' PipelineOptions classes).
(Beam's --network, the Dataflow workers' GCE network, is shadowed by ours: the network preset.)
Defaults shown are the default preset's; --preset=tiny changes some (pipeline/config.py PRESETS).
Logs: TensorFlow's C++ and Python logs and Beam's warnings are hidden unless --verbose.
"""


def _converter(kind, optional):
    """The argparse ``type`` of a field: text → int / float / str / dict (JSON) / bool (true, false), "none" → None."""
    expected = {int: "an integer", float: "a number", str: "a string", dict: "a JSON object", bool: "true or false"}[kind]
    expected += " or none" if optional else ""

    def convert(text):
        if optional and text.strip().lower() == "none":
            return None
        if kind is bool:
            word = text.strip().lower()
            if word not in ("true", "false", "1", "0", "yes", "no"):
                raise argparse.ArgumentTypeError(f"expected {expected}. Received: {text!r}")
            return word in ("true", "1", "yes")
        try:
            return json.loads(text) if kind is dict else kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}. Received: {text!r}") from None

    convert.__name__ = expected
    return convert


def _shown(value):
    return "none" if value is None else json.dumps(value) if isinstance(value, dict) else str(value)


def build_parser():
    """The argument parser of our own flags (Beam's are left for PipelineOptions).

    Every ``RunConfig`` field is a flag, listed with its default and one-line help in
    the group of the stage that reads it. A flag that is not given is absent from the
    parsed namespace (so an explicit ``--limit=none`` is told from no ``--limit``).

    Returns:
        An ``argparse.ArgumentParser``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.run",
        usage="%(prog)s [--preset=NAME] [--config=FILE] [RunConfig flags] [run flags] [Beam flags]",
        description="kdiff pipeline: ingest → train → sample → evaluate → retrieve → report on Apache Beam. "
        "The flags of the stage groups, and --seed, are the fields of RunConfig (pipeline/config.py).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # an abbreviation could swallow a Beam flag
    )
    groups = {stage: parser.add_argument_group(GROUP_TITLES[stage]) for stage in config_lib.STAGE_GROUPS}
    run_group = groups["run"]
    run_group.add_argument("--output_dir", default="runs/default", help="where each stage writes (default: runs/default)")
    run_group.add_argument(
        "--preset", default="default", choices=sorted(config_lib.PRESETS),
        help="a named config the other flags override (default: default)",
    )
    run_group.add_argument(
        "--config", default=None,
        help="a JSON file of RunConfig fields, applied over the preset; flags override it (default: none)",
    )
    run_group.add_argument("--force", action="store_true", help="rerun stages even when their outputs are cached")
    run_group.add_argument(
        "--resume", action="store_true",
        help="train: continue from the checkpoint a stopped run left in <output_dir>/train/checkpoints even "
        "with --force or a changed --learning_rate / --warmup_steps (without it, those train afresh)",
    )
    run_group.add_argument(
        "--lease_seconds", type=float, default=LEASE_SECONDS,
        help=f"an --output_dir on S3: how long the run's lock lease lasts unrenewed, so how long a killed run "
        f"keeps the folder locked (renewed every third of it; default: {LEASE_SECONDS:g})",
    )
    run_group.add_argument(
        "--stages", default=",".join(STAGE_ORDER),
        help=f"comma-separated stages to run, in order (default: {','.join(STAGE_ORDER)})",
    )
    run_group.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's C++ / Python logs and Beam's warnings"
    )
    run_group.add_argument("--help_beam", action=_BeamHelp, help="list Apache Beam's pipeline options and exit")
    _add_experiment_flags(parser)
    types = config_lib.field_types()
    for field in dataclasses.fields(config_lib.RunConfig):
        kind, optional = types[field.name]
        text = f"{field.metadata['help']} (default: {_shown(field.default)})".replace("%", "%%")
        groups[field.metadata["stage"]].add_argument(
            f"--{field.name}", type=_converter(kind, optional), default=argparse.SUPPRESS,
            metavar=field.name.upper(), help=text,
        )
    return parser


def _add_experiment_flags(parser):
    """The flags of ``--experiment`` (pipeline/experiments.py): the survey's experiments."""
    from pipeline import experiments

    group = parser.add_argument_group("the survey's experiments (pipeline/experiments.py)")
    group.add_argument(
        "--experiment", default=None, choices=list(experiments.experiments()),
        help="run one of the survey's experiments and write its report beside the survey's figures, under "
        "<output_dir>/<scale>/<experiment>/ (its runs under <output_dir>/<scale>/runs/); the RunConfig flags "
        "given override every run's settings (default: none, a single run)",
    )
    group.add_argument(
        "--scale", default="small", choices=list(experiments.SCALES),
        help="small: every model trained on the 8×8 digits, minutes on a CPU; medium: trained on Fashion-MNIST "
        "at 32×32, hours on a CPU; seed: the survey's data and checkpoints (default: small)",
    )
    group.add_argument("--celeba_hq", default=None, help="--scale=seed: the CelebA-HQ 256×256 image folder")
    group.add_argument("--ncsn_checkpoint", default=None, help="--scale=seed: NCSN's CelebA checkpoint.pth (or .npz)")
    group.add_argument("--allow_cpu", action="store_true", help="--scale=seed: let table1 train without a GPU")


def _experiment(known, stages, beam_args, parser):
    """Runs ``--experiment``: its runs and its report (exit code 0, or 1 on a stage error)."""
    from pipeline import experiment_runner
    from pipeline.lock import RunLockedError
    from pipeline.stages.base import StageError

    overrides = config_lib.read_file(known.config) if known.config else {}
    given = vars(known)
    overrides = config_lib.layered(overrides, {name: given[name] for name in config_lib.FIELD_NAMES if name in given})
    paths = {"celeba_hq": known.celeba_hq, "ncsn_checkpoint": known.ncsn_checkpoint}
    try:
        experiment_runner.run_experiment(
            known.experiment, known.scale, known.output_dir, beam_args, overrides=overrides, paths=paths,
            force=known.force, allow_cpu=known.allow_cpu, stages=stages,
        )
    except ValueError as error:
        parser.error(str(error))
    except (StageError, RunLockedError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


def _beam_parser():
    """An argparse parser of every Beam pipeline option, built as PipelineOptions builds its own.

    ``PipelineOptions.get_all_options`` parses with the options of its direct subclasses
    (``_add_argparse_args``) and only logs what it cannot parse; this parser is what lets
    an unknown flag fail instead. ``_BeamArgumentParser`` and ``_add_argparse_args`` are
    Beam internals (Beam 2.77), the only way to list its options.
    """
    from apache_beam.options import pipeline_options

    parser = pipeline_options._BeamArgumentParser(allow_abbrev=False, add_help=False)
    for cls in pipeline_options.PipelineOptions.__subclasses__():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


class _BeamHelp(argparse.Action):
    """``--help_beam``: prints Beam's pipeline options (``_beam_parser``) and exits."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        beam = _beam_parser()
        beam.usage = f"{parser.prog} [our flags] [Beam flags]"
        beam.print_help()
        parser.exit()


def _option_strings(parser):
    return [option for action in parser._actions for option in action.option_strings if option.startswith("--")]


def check_beam_args(parser, beam_args):
    """Fails (``parser.error``, exit code 2) on an argument that is neither ours nor Beam's.

    Args:
        parser: our parser (``build_parser``), for the message and the suggestions.
        beam_args: what our parser left: Beam's flags, or unknown ones.

    Returns:
        ``beam_args``, unchanged.
    """
    beam = _beam_parser()
    _, unknown = beam.parse_known_args(list(beam_args))
    if not unknown:
        return beam_args
    flags = [arg for arg in unknown if arg.startswith("-")]
    if not flags:
        parser.error(f"unrecognized argument(s) {unknown}: flags are --name=value (see --help)")
    name = flags[0].split("=", 1)[0]
    close = difflib.get_close_matches(name, _option_strings(parser) + _option_strings(beam), n=1)
    hint = f"; did you mean {close[0]}?" if close else " (see --help)"
    parser.error(f"unrecognized argument {name}: neither a kdiff pipeline flag nor an Apache Beam option{hint}")
    return beam_args  # not reached: parser.error exits


def check_runner(parser, beam_args, output_dir):
    """Fails (``parser.error``, exit code 2) before any stage runs when the Beam stages
    cannot start on the runner the flags name (``pipeline.runners.check``: an unknown
    runner, PortableRunner without --job_endpoint, DataflowRunner without its flags).

    Args:
        parser: our parser, for the message.
        beam_args: Beam's flags (``check_beam_args``'s).
        output_dir: the run's ``--output_dir``.
    """
    from pipeline import runners

    try:
        runners.check(beam_args, output_dir)
    except ValueError as error:
        parser.error(str(error))


def _dask_args(parser, beam_args, output_dir):
    """Beam's flags with ``--runner=DaskRunner`` resolved (``pipeline.dask_flags.resolve``: its
    full name, its ``--dask_*`` options known), or ``parser.error`` (exit code 2) saying why
    the DaskRunner cannot run this pipeline, before any stage starts."""
    from pipeline import dask_flags

    try:
        return dask_flags.resolve(beam_args, output_dir)
    except ValueError as error:
        parser.error(str(error))
    return beam_args  # not reached: parser.error exits


def make_config(known):
    """The effective RunConfig: the preset, then the --config file, then the flags given.

    Args:
        known: our parsed flags (``build_parser``): only the fields given are set.

    Returns:
        A ``RunConfig`` (every field checked by ``RunConfig`` itself).

    Raises:
        ValueError: a bad field value, or an unknown key in the --config file (named).
        OSError: the --config file cannot be read.
    """
    values = config_lib.read_file(known.config) if known.config else {}
    given = vars(known)
    # flags over the file: a --train_steps flag replaces the file's epochs, and the reverse
    values = config_lib.layered(values, {name: given[name] for name in config_lib.FIELD_NAMES if name in given})
    return config_lib.preset(known.preset, **values)


def run(argv=None, save_main_session=True):
    """Parses flags, runs the stages, prints where the report is and the headline numbers.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when None).
        save_main_session: passed to Beam's options (pickles the main session for workers).

    Returns:
        The process exit code: 0 on success, 1 on a stage error. Bad flags exit with
        code 2 (argparse's ``SystemExit``), naming the flag.
    """
    parser = build_parser()
    known, beam_args = parser.parse_known_args(argv)
    stages = tuple(s.strip() for s in known.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGE_ORDER]
    if unknown:
        parser.error(f"argument --stages: unknown stage(s) {unknown}; expected names from {list(STAGE_ORDER)}")
    with quiet_logs(known.verbose):
        beam_args = check_beam_args(parser, _dask_args(parser, beam_args, known.output_dir))
        check_runner(parser, beam_args, known.output_dir)
        os.environ.update(s3.environment_from_beam_flags(beam_args))  # our S3 store reads Beam's flags too
        if known.experiment is not None:
            if not any(arg.startswith("--runner") for arg in beam_args):
                beam_args = ["--runner=DirectRunner"] + list(beam_args)
            return _experiment(known, stages, beam_args, parser)
        try:
            config = make_config(known)
            follower = cluster.is_follower(config)  # (TF_CONFIG read and checked)
            orchestrator.check_output_dir(known.output_dir)  # before any stage, in seconds
            if "sample" in stages:
                orchestrator.check_samplers(config)
        except (ValueError, OSError) as error:
            parser.error(str(error))
        if not any(arg.startswith("--runner") for arg in beam_args):
            beam_args = ["--runner=DirectRunner"] + list(beam_args)
        if save_main_session:
            beam_args = list(beam_args) + ["--save_main_session"]
        from pipeline.lock import RunLockedError
        from pipeline.stages.base import StageError

        try:
            if follower:  # a non-chief worker of --strategy=multi_worker
                if "train" in stages:
                    cluster.follow(config, known.output_dir, force=known.force, resume=known.resume)
                return 0
            orchestrator.run_stages(
                config, known.output_dir, beam_args, force=known.force, resume=known.resume, stages=stages,
                lease_seconds=known.lease_seconds,
            )
        except (StageError, RunLockedError) as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
        from pipeline.stages import report  # (TensorFlow with it: inside quiet_logs)
    report.print_headline(orchestrator.artifact_dir(known.output_dir, "report"))
    return 0


if __name__ == "__main__":
    sys.exit(run())
