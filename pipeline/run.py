"""The kdiff pipeline: ``python -m pipeline.run --runner=DirectRunner``.

ingest → train → sample → evaluate → retrieve → report, each stage writing to
``<output_dir>/<stage>/`` with a fingerprint of its parameters and inputs: a rerun skips
completed stages whose fingerprint matches (TFX-style caching), ``--force`` reruns them.
Our own flags (every ``RunConfig`` field, ``--config``, ``--preset``, ``--output_dir``,
``--force``, ``--stages``, ``--verbose``; ``--help`` lists them by stage) are split from
Beam's pipeline flags (``--runner``, ``--direct_num_workers``, ``--direct_running_mode``,
Dataflow / Flink / Spark options), which are passed to the Beam stages untouched. A flag
that is neither fails, naming the closest known flag. TensorFlow's and Beam's logs are
hidden unless ``--verbose``; the root logger is left alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import glob
import importlib
import json
import os
import shutil
import sys
import time

from kdiff_console import quiet_logs
from pipeline import config as config_lib
from pipeline import errors
from pipeline.stages import STAGE_ORDER

# pipeline.stages (and with it kdiff and TensorFlow) is imported inside the functions that
# run stages, after quiet_logs: --help and flag errors never load TensorFlow, and its
# start-up lines stay hidden.


# Where each artifact lives under output_dir.
ARTIFACT_PATHS = {
    "examples": ("ingest", "examples"),
    "model": ("train", "model"),
    "samples": ("sample", "samples"),
    "metrics": ("evaluate", "metrics"),
    "retrieval": ("retrieve", "retrieval"),
    "report": ("report", "report"),
}


GROUP_TITLES = {
    "ingest": "data / ingest",
    "train": "model / train",
    "sample": "sample",
    "evaluate": "evaluate / retrieve",
    "run": "run",
}

EPILOG = """\
Apache Beam's own flags pass through to the Beam stages, e.g.
  --runner=DirectRunner (the default here) | DataflowRunner | FlinkRunner | SparkRunner
  --direct_num_workers=2 --direct_running_mode=multi_processing   (DirectRunner)
  --project=… --region=… --temp_location=gs://…                   (DataflowRunner)
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


def run_experiment(name, scale, output_dir, beam_args, *, overrides=None, paths=None, force=False, allow_cpu=False,
                   stages=STAGE_ORDER, log=print):
    """Runs an experiment's runs through the pipeline's stages and writes its report
    (``pipeline.experiments`` holds the experiments; this runs them).

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
        ValueError: an unknown experiment or scale, a bad override, or (seed scale) what
            is missing, all named before anything runs.
        StageError: a stage failed.
    """
    from pipeline import experiments

    experiment, configs = experiments.plan(name, scale, overrides, paths, allow_cpu)
    for config in configs.values():
        check_samplers(config)
    root = os.path.join(output_dir, scale)
    for run_name, config in configs.items():
        log(f"[{name}] run {run_name} → {os.path.join(root, 'runs', run_name)}")
        run_stages(config, os.path.join(root, "runs", run_name), beam_args, force=force, stages=stages)
    if "report" not in stages:
        log(f"[{name}] report not written: --stages stops before it; run again without --stages to finish "
            "(the stages that ran are cached)")
        return None
    path = experiments.write_report(experiment, scale, root, experiments.hardware())
    log(f"[{name}] report: {os.path.abspath(path)}")
    return path


def _experiment(known, stages, beam_args, parser):
    """Runs ``--experiment``: its runs and its report (exit code 0, or 1 on a stage error)."""
    from pipeline.lock import RunLockedError
    from pipeline.stages.base import StageError

    overrides = config_lib.read_file(known.config) if known.config else {}
    given = vars(known)
    overrides = config_lib.layered(overrides, {name: given[name] for name in config_lib.FIELD_NAMES if name in given})
    paths = {"celeba_hq": known.celeba_hq, "ncsn_checkpoint": known.ncsn_checkpoint}
    try:
        run_experiment(
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


def check_samplers(config):
    """The config's samplers checked against the registry and the family's process, before
    any stage runs (a bad sampler name or option fails in seconds, not after training).

    Args:
        config: the ``RunConfig``.

    Raises:
        ValueError: naming the sampler config and what is wrong with it.
    """
    from kdiff import processes

    from pipeline import builders
    from pipeline.stages import sample
    from pipeline.stages.base import StageError

    try:
        process = processes.as_process(builders.build_process(config.to_dict()))  # NCSN's: a σ array
        sample.check_samplers(config.samplers, process)
    except StageError as error:
        raise ValueError(str(error).removeprefix("sample: ")) from None


def check_feature_labels(config, examples_dir):
    """Fails before training when the evaluate stage will need labels the data lacks.

    Args:
        config: the ``RunConfig`` (its ``fid_features``).
        examples_dir: the ingested Examples (their ``stats.json``).

    Raises:
        StageError: ``--fid_features=classifier`` on an unlabelled dataset.
    """
    from pipeline.stages.base import StageError, read_json

    stats_path = os.path.join(examples_dir, "stats.json")
    if config.fid_features != "classifier" or not os.path.exists(stats_path):
        return
    if read_json(stats_path).get("num_classes") is None:
        raise StageError(
            f"evaluate: --fid_features=classifier trains a classifier on the labels, and the dataset "
            f"{config.dataset} has none ({stats_path}: num_classes is null); pass --fid_features=inception "
            "(or inception_graph), or a dataset with labels (class subfolders for folder:PATH)."
        )


def check_dataset(config):
    """Fails before the ingest stage runs when its source is plainly not there: an unknown
    form, a missing folder, an IDX folder without an images file, Fashion-MNIST found
    nowhere (``pipeline.data.check_source``; Fashion-MNIST is downloaded with TFDS here
    only when no copy is present).

    Args:
        config: the ``RunConfig`` (its ``dataset``).

    Raises:
        StageError: naming the dataset, what is missing and how to get it.
    """
    from pipeline import data

    data.check_source(config.dataset)


def _stage_module(name):
    return importlib.import_module(f"pipeline.stages.{name}")


def _artifact_dir(output_dir, artifact):
    stage, name = ARTIFACT_PATHS[artifact]
    return os.path.join(output_dir, stage, name)


def run_stages(config, output_dir, beam_args, *, force=False, resume=False, stages=STAGE_ORDER):
    """Runs the stages in order, skipping cached ones.

    Args:
        config: the ``RunConfig``.
        output_dir: the run's directory.
        beam_args: Beam pipeline flags for the Beam stages.
        force: rerun cached stages (and train afresh, unless ``resume``).
        resume: let the train stage continue from a checkpoint that ``force`` or a
            changed recipe would discard.
        stages: the stages to run (upstream artifacts must exist for the others).

    Returns:
        A dict stage → {"cached": bool, "seconds": float, "fingerprint": str}.

    Raises:
        pipeline.lock.RunLockedError: another run holds ``output_dir``.
        StageError: a stage failed on bad input, or a stage not selected in ``stages``
            has no output that matches this config for the stages after it to read.
    """
    from pipeline.lock import RunLock

    with RunLock(output_dir):
        return _run_locked(config, output_dir, beam_args, force, resume, stages)


def _run_locked(config, output_dir, beam_args, force, resume, stages):
    from pipeline.stages.base import DONE_FILE, StageError, changed_file, fingerprint, manifest, read_done, write_json

    write_json(os.path.join(output_dir, "config.json"), config.to_dict())
    fingerprints, summary = {}, {}
    for name in STAGE_ORDER:
        module = _stage_module(name)
        spec = module.SPEC
        params = config.section(spec.parameters)
        inputs = {artifact: _artifact_dir(output_dir, artifact) for artifact in spec.inputs}
        outputs = {artifact: _artifact_dir(output_dir, artifact) for artifact in spec.outputs}
        upstream = {artifact: fingerprints.get(ARTIFACT_PATHS[artifact][0]) for artifact in spec.inputs}
        for artifact, value in list(upstream.items()):
            if value is None:
                done = read_done(os.path.dirname(inputs[artifact]))
                upstream[artifact] = done and done.get("fingerprint")
        if name == "train" and "evaluate" in stages:
            check_feature_labels(config, inputs["examples"])
        stamp = fingerprint(spec, params, upstream)
        stage_dir = os.path.join(output_dir, name)
        done = read_done(stage_dir)
        problem = None
        if done is None:
            problem = "it has no completed output (no _DONE.json)"
        elif done.get("fingerprint") != stamp:
            problem = "its output was written with other settings or inputs"
        elif not all(os.path.isdir(path) for path in outputs.values()):
            problem = "its output folder is missing"
        else:
            changed = changed_file(done.get("files"), outputs)
            if changed is not None:
                problem = f"its output no longer matches what it wrote: {changed}"
                print(f"[{name}] {problem}", flush=True)
        cached = problem is None
        if name not in stages or (cached and not force):
            if not cached:
                if any(n in stages for n in STAGE_ORDER[STAGE_ORDER.index(name) + 1 :]):
                    raise StageError(
                        f"{name}: not selected in --stages, and {problem} ({stage_dir}); the stages "
                        f"after it would read it. Add {name} to --stages to rerun it."
                    )
            else:
                print(f"[{name}] cached ({stamp}); --force reruns it", flush=True)
            fingerprints[name] = stamp if cached else (done or {}).get("fingerprint")
            summary[name] = {"cached": True, "seconds": 0.0, "fingerprint": fingerprints[name]}
            continue
        if name == "ingest":  # the first stage: a missing source fails before anything runs
            check_dataset(config)
        for artifact, path in inputs.items():
            if not os.path.isdir(path):
                raise StageError(f"{name}: its input {artifact} is missing at {path}; run the stages before it.")
        for path in outputs.values():  # what a killed earlier attempt left behind
            for leftover in glob.glob(os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-*")):
                shutil.rmtree(leftover, ignore_errors=True)
        print(f"[{name}] running", flush=True)
        start = time.perf_counter()
        done_path = os.path.join(stage_dir, DONE_FILE)
        if os.path.exists(done_path):
            os.remove(done_path)  # the old outputs no longer match what is being written
        params = dict(
            params, beam_args=list(beam_args), data_range=list(config.data_range), force=force, resume=resume
        )
        try:
            module.Executor().Do(inputs, outputs, params)
        except StageError:
            raise
        except Exception as error:  # an I/O failure becomes a message naming the path
            failure = errors.io_error(error)
            if failure is None:
                raise
            raise StageError(errors.io_error_message(name, failure, where=stage_dir)) from error
        seconds = time.perf_counter() - start
        write_json(done_path, {"fingerprint": stamp, "seconds": seconds, "outputs": outputs, "files": manifest(outputs)})
        fingerprints[name] = stamp
        summary[name] = {"cached": False, "seconds": seconds, "fingerprint": stamp}
        print(f"[{name}] done in {seconds:.1f} s", flush=True)
    return summary


def _headline(output_dir):
    path = os.path.join(_artifact_dir(output_dir, "report"), "metrics.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    report = os.path.join(_artifact_dir(output_dir, "report"), "report.html")
    print(f"\nReport: {os.path.abspath(report)}")
    print(f"Feature space: {summary.get('feature_space')}")

    def rounded(value, digits=3):
        return None if value is None else round(value, digits)

    scale = summary.get("kid_scale") or 1
    label = summary.get("kid_label") or "KID"

    def line(title, row, seconds=""):
        kid = row.get("kid_mean")
        error = row.get("kid_standard_error")
        print(
            f"  {title:>20s}: FID {rounded(row.get('fid'))}  "
            f"{label} {rounded(None if kid is None else kid * scale)}"
            f" ± {'n/a' if error is None else round(error * scale, 3)}{seconds}  "
            f"classifier confidence {rounded(row.get('classifier_confidence'))}  "
            f"class entropy {rounded(row.get('class_entropy'))}"
            + "".join(f"\n  {'':>20s}  ⚠ {flag['code']}: {flag['detail']}" for flag in row.get("flags", []))
        )

    for name, row in summary.get("samplers", {}).items():
        seconds = row.get("seconds")
        line(name, row, f"  time {seconds if seconds is None else round(seconds, 1)} s")
    line("held-out real", summary.get("real_heldout", {}))
    line("Gaussian baseline", summary.get("baseline_gaussian", {}))


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
        beam_args = check_beam_args(parser, beam_args)
        if known.experiment is not None:
            if not any(arg.startswith("--runner") for arg in beam_args):
                beam_args = ["--runner=DirectRunner"] + list(beam_args)
            return _experiment(known, stages, beam_args, parser)
        try:
            config = make_config(known)
            if "sample" in stages:
                check_samplers(config)
        except (ValueError, OSError) as error:
            parser.error(str(error))
        if not any(arg.startswith("--runner") for arg in beam_args):
            beam_args = ["--runner=DirectRunner"] + list(beam_args)
        if save_main_session:
            beam_args = list(beam_args) + ["--save_main_session"]
        from pipeline.lock import RunLockedError
        from pipeline.stages.base import StageError

        try:
            run_stages(
                config, known.output_dir, beam_args, force=known.force, resume=known.resume, stages=stages
            )
        except (StageError, RunLockedError) as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
    _headline(known.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(run())
